// Package config turns environment variables into the workers'
// configuration: every variable has a working default, is validated with an
// error naming it, and secrets never reach the logs (Redacted).
package config

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Lookup is os.LookupEnv's signature, so tests pass a map.
type Lookup func(string) (string, bool)

// Config is the whole fleet's configuration; each worker reads its part.
type Config struct {
	NATSLink
	RedisLink
	// OpenAIAPIKey is OPENAI_API_KEY.
	OpenAIAPIKey string `json:"-"`
	// OpenAIBaseURL is OPENAI_BASE_URL (openai-go's default when empty).
	OpenAIBaseURL string
	// AnthropicAPIKey is ANTHROPIC_API_KEY: with it (or AnthropicBaseURL)
	// the workers run jobs of provider "anthropic"; without both such jobs
	// fail provider_unavailable.
	AnthropicAPIKey string `json:"-"`
	// AnthropicBaseURL is ANTHROPIC_BASE_URL (anthropic-sdk-go's default,
	// https://api.anthropic.com, when empty; no /v1 suffix).
	AnthropicBaseURL string
	// AnthropicRPM is ANTHROPIC_RPM: Anthropic API requests per minute,
	// shared by the whole fleet (default 50, Tier 1; 0 = no limit).
	AnthropicRPM int
	// LogLevel is LOG_LEVEL (debug, info, warn, error). Defaults to info.
	LogLevel string
	// MetricsAddr is METRICS_ADDR: where /metrics and /healthz are served ("" = off).
	MetricsAddr string
	// StopTimeout is STOP_TIMEOUT: how long a worker may take to stop on SIGTERM. Defaults to 8s.
	StopTimeout time.Duration
	// RescueInterval is RESCUE_INTERVAL: how often the rescuer (one leader
	// among the notifiers) scans the job records. Defaults to 1m.
	RescueInterval time.Duration
	// RescueAfter is RESCUE_AFTER: how long a step may stay undone after
	// the write that called for it before the rescuer re-drives it. Defaults to 5m.
	RescueAfter time.Duration
	// StreamReplicas is STREAM_REPLICAS for streams and buckets. Defaults to 1.
	StreamReplicas int
	// DedupWindow is DEDUP_WINDOW: the Nats-Msg-Id window of the streams. Defaults to 10m.
	DedupWindow time.Duration
	// EventsMaxAge is EVENTS_MAX_AGE: how long events stay replayable. Defaults to 168h.
	EventsMaxAge time.Duration
	// JobRetention is JOB_RETENTION: how long a key is remembered after its job's last change. Defaults to 720h.
	JobRetention time.Duration
	// MaxActiveBatches is MAX_ACTIVE_BATCHES: the fleet-wide cap of active vendor batches (0 = none).
	MaxActiveBatches int
	// EnqueuedTokenLimits is ENQUEUED_TOKEN_LIMITS: per-model budgets of
	// enqueued input tokens, "model=tokens,..." ("*" for any other model).
	EnqueuedTokenLimits map[string]int64
	// VendorCallTimeout is VENDOR_CALL_TIMEOUT: the bound of each vendor call but transfers. Defaults to 30s.
	VendorCallTimeout time.Duration
	// VendorTransferTimeout is VENDOR_TRANSFER_TIMEOUT: the bound of each
	// upload, download and object store stream (a 200 MB file). Defaults to 10m.
	VendorTransferTimeout time.Duration

	Submit Submit
	Poll   Poll
	Notify Notify
	Pack   Pack
}

// Pack configures the packing of single requests (contract v1.1, "Single
// requests"); packers run in the submitters.
type Pack struct {
	// MaxRequests is PACK_MAX_REQUESTS: the most items in one pack. Defaults to 50000 (the vendor's bound).
	MaxRequests int
	// MaxBytes is PACK_MAX_BYTES: the most bytes of a pack's input file. Defaults to the vendor's 200 MiB less 1 MiB.
	MaxBytes int64
	// MaxAge is PACK_MAX_AGE: a pack closes at the latest this long after its first item. Defaults to 10m; at least 1s.
	MaxAge time.Duration
	// Concurrency is PACK_CONCURRENCY: items each of a submitter's four stage loops fetches and checks at once. Defaults to 256.
	Concurrency int
	// LockTTL is PACK_LOCK_TTL: a group leader's Redis lease; a dead packer's groups are taken over within it. Defaults to 15s.
	LockTTL time.Duration
}

// Submit configures submitters.
type Submit struct {
	// Concurrency is SUBMIT_CONCURRENCY: submissions in flight per submitter. Defaults to 8.
	Concurrency int
	// LockTTL is SUBMIT_LOCK_TTL: the Redis lock lease, renewed while working. Defaults to 30s.
	LockTTL time.Duration
	// MaxTries is SUBMIT_MAX_TRIES: failed submission tries (429, 5xx) before a job ends failed. Defaults to 8.
	MaxTries int
	// CreateMargin is SUBMIT_CREATE_MARGIN: added to a create's deadline
	// before a create whose outcome is unknown is made again. Defaults to 2m.
	CreateMargin time.Duration
	// Rate is SUBMIT_RATE: the fleet-wide vendor batch create rate, e.g. "2000/h" (the default; "0" = none).
	Rate string
}

// Poll configures pollers.
type Poll struct {
	// InitialInterval is POLL_INITIAL_INTERVAL. Defaults to 5s.
	InitialInterval time.Duration
	// MaxInterval is POLL_MAX_INTERVAL. Defaults to 5m.
	MaxInterval time.Duration
	// Strategy is POLL_STRATEGY: adaptive (default) or fixed (the baseline).
	Strategy string
	// Lease is POLL_LEASE: the ack wait of a poll lease; a dead poller's jobs are taken over within it. Defaults to 15s.
	Lease time.Duration
	// Concurrency is POLL_CONCURRENCY: vendor GETs in flight per poller. Defaults to 32.
	Concurrency int
	// Rate is POLL_RATE: the fleet-wide vendor GET rate, e.g. "20/s" (the default; "0" = none).
	Rate string
	// ProgressEvery is PROGRESS_INTERVAL: the minimum time between batch.progress events of a batch. Defaults to 10s.
	ProgressEvery time.Duration
	// SoftTimeout is POLL_SOFT_TIMEOUT: age of a batch that triggers a warning event. Defaults to 12h.
	SoftTimeout time.Duration
	// HardTimeout is POLL_HARD_TIMEOUT: age that triggers TimeoutAction. Defaults to 23h.
	HardTimeout time.Duration
	// TimeoutAction is POLL_TIMEOUT_ACTION: cancel, alert or retry. Defaults to alert.
	TimeoutAction string
	// SweepInterval is POLL_SWEEP_INTERVAL: how often the fleet's one sweep leader lists the
	// vendor's batches (100 a page) to detect changes; per-batch polls then slow to
	// 4 x POLL_MAX_INTERVAL as a safety net. Defaults to 10s; 0 turns the sweep off.
	SweepInterval time.Duration
	// WebhookAddr is VENDOR_WEBHOOK_ADDR: listen address for vendor webhooks ("" = off).
	WebhookAddr string
	// WebhookSecret is OPENAI_WEBHOOK_SECRET.
	WebhookSecret string `json:"-"`
}

// Notify configures notifiers.
type Notify struct {
	// Concurrency is NOTIFY_CONCURRENCY: batches processed at once per notifier. Defaults to 16.
	Concurrency int
	// MaxRetryAttempts is MAX_RETRY_ATTEMPTS: retry batches per job. Defaults to 3.
	MaxRetryAttempts int
	// RetryBackoff is RETRY_BACKOFF: the delay before the first retry batch, doubled for each next one. Defaults to 10s.
	RetryBackoff time.Duration
	// TokenLimitDelay is TOKEN_LIMIT_REQUEUE_DELAY: the wait before a batch refused for the vendor's enqueued token limit is re-queued. Defaults to 1m.
	TokenLimitDelay time.Duration
	// WebhookURLs is WEBHOOK_URLS (comma-separated).
	WebhookURLs []string
	// WebhookSecret is WEBHOOK_SECRET ("whsec_<base64>" or raw).
	WebhookSecret string `json:"-"`
	// WebhookMaxAttempts is WEBHOOK_MAX_ATTEMPTS before dead-lettering. Defaults to 8.
	WebhookMaxAttempts int
	// WebhookRetryInitial is WEBHOOK_RETRY_INITIAL: the first retry delay, doubled each time. Defaults to 2s.
	WebhookRetryInitial time.Duration
	// WebhookTimeout is WEBHOOK_TIMEOUT. Defaults to 10s.
	WebhookTimeout time.Duration
	// PriceTable is PRICE_TABLE (JSON); empty uses the built-in estimate table.
	PriceTable string
	// DeleteInputFiles is DELETE_INPUT_FILES: delete uploaded vendor input files when a job ends. Defaults to true.
	DeleteInputFiles bool
}

// Load reads the configuration from env, applying defaults, and validates it.
func Load(env Lookup) (Config, error) {
	p := parser{env: env}
	c := Config{
		NATSLink:              p.natsLink(),
		RedisLink:             p.redisLink(),
		OpenAIAPIKey:          p.str("OPENAI_API_KEY", ""),
		OpenAIBaseURL:         p.str("OPENAI_BASE_URL", ""),
		AnthropicAPIKey:       p.str("ANTHROPIC_API_KEY", ""),
		AnthropicBaseURL:      p.str("ANTHROPIC_BASE_URL", ""),
		AnthropicRPM:          p.int("ANTHROPIC_RPM", 50),
		LogLevel:              p.str("LOG_LEVEL", "info"),
		MetricsAddr:           p.str("METRICS_ADDR", ""),
		StopTimeout:           p.dur("STOP_TIMEOUT", 8*time.Second),
		RescueInterval:        p.dur("RESCUE_INTERVAL", time.Minute),
		RescueAfter:           p.dur("RESCUE_AFTER", 5*time.Minute),
		StreamReplicas:        p.int("STREAM_REPLICAS", 1),
		DedupWindow:           p.dur("DEDUP_WINDOW", 10*time.Minute),
		EventsMaxAge:          p.dur("EVENTS_MAX_AGE", 7*24*time.Hour),
		JobRetention:          p.dur("JOB_RETENTION", 30*24*time.Hour),
		MaxActiveBatches:      p.int("MAX_ACTIVE_BATCHES", 0),
		EnqueuedTokenLimits:   p.tokenLimits("ENQUEUED_TOKEN_LIMITS"),
		VendorCallTimeout:     p.dur("VENDOR_CALL_TIMEOUT", 30*time.Second),
		VendorTransferTimeout: p.dur("VENDOR_TRANSFER_TIMEOUT", 10*time.Minute),
		Submit: Submit{
			Concurrency:  p.int("SUBMIT_CONCURRENCY", 8),
			LockTTL:      p.dur("SUBMIT_LOCK_TTL", 30*time.Second),
			MaxTries:     p.int("SUBMIT_MAX_TRIES", 8),
			CreateMargin: p.dur("SUBMIT_CREATE_MARGIN", 2*time.Minute),
			Rate:         p.str("SUBMIT_RATE", "2000/h"),
		},
		Poll: Poll{
			InitialInterval: p.dur("POLL_INITIAL_INTERVAL", 5*time.Second),
			MaxInterval:     p.dur("POLL_MAX_INTERVAL", 5*time.Minute),
			Lease:           p.dur("POLL_LEASE", 15*time.Second),
			Strategy:        p.str("POLL_STRATEGY", "adaptive"),
			Concurrency:     p.int("POLL_CONCURRENCY", 32),
			Rate:            p.str("POLL_RATE", "20/s"),
			ProgressEvery:   p.dur("PROGRESS_INTERVAL", 10*time.Second),
			SoftTimeout:     p.dur("POLL_SOFT_TIMEOUT", 12*time.Hour),
			HardTimeout:     p.dur("POLL_HARD_TIMEOUT", 23*time.Hour),
			TimeoutAction:   p.str("POLL_TIMEOUT_ACTION", "alert"),
			SweepInterval:   p.dur("POLL_SWEEP_INTERVAL", 10*time.Second),
			WebhookAddr:     p.str("VENDOR_WEBHOOK_ADDR", ""),
			WebhookSecret:   p.str("OPENAI_WEBHOOK_SECRET", ""),
		},
		Notify: Notify{
			Concurrency:         p.int("NOTIFY_CONCURRENCY", 16),
			MaxRetryAttempts:    p.int("MAX_RETRY_ATTEMPTS", 3),
			RetryBackoff:        p.dur("RETRY_BACKOFF", 10*time.Second),
			TokenLimitDelay:     p.dur("TOKEN_LIMIT_REQUEUE_DELAY", time.Minute),
			WebhookURLs:         p.list("WEBHOOK_URLS"),
			WebhookSecret:       p.str("WEBHOOK_SECRET", ""),
			WebhookMaxAttempts:  p.int("WEBHOOK_MAX_ATTEMPTS", 8),
			WebhookRetryInitial: p.dur("WEBHOOK_RETRY_INITIAL", 2*time.Second),
			WebhookTimeout:      p.dur("WEBHOOK_TIMEOUT", 10*time.Second),
			PriceTable:          p.str("PRICE_TABLE", ""),
			DeleteInputFiles:    p.bool("DELETE_INPUT_FILES", true),
		},
		Pack: Pack{
			MaxRequests: p.int("PACK_MAX_REQUESTS", 50000),
			MaxBytes:    int64(p.int("PACK_MAX_BYTES", 199<<20)),
			MaxAge:      p.dur("PACK_MAX_AGE", 10*time.Minute),
			Concurrency: p.int("PACK_CONCURRENCY", 256),
			LockTTL:     p.dur("PACK_LOCK_TTL", 15*time.Second),
		},
	}
	if err := errors.Join(p.errs...); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// AnthropicEnabled reports whether ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL is set.
func (c Config) AnthropicEnabled() bool { return c.AnthropicAPIKey != "" || c.AnthropicBaseURL != "" }

// Validate checks the configuration; the error names the variable.
func (c Config) Validate() error {
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	errs = append(errs, c.NATSLink.Validate(), c.RedisLink.Validate())
	check(c.OpenAIBaseURL == "" || validURL(c.OpenAIBaseURL, "http", "https"), "OPENAI_BASE_URL %q is not an http(s) URL", c.OpenAIBaseURL)
	check(c.AnthropicBaseURL == "" || validURL(c.AnthropicBaseURL, "http", "https"), "ANTHROPIC_BASE_URL %q is not an http(s) URL", c.AnthropicBaseURL)
	check(c.AnthropicRPM >= 0, "ANTHROPIC_RPM must not be negative")
	check(c.StopTimeout > 0, "STOP_TIMEOUT must be positive")
	check(c.RescueInterval > 0, "RESCUE_INTERVAL must be positive")
	check(c.RescueAfter > 0, "RESCUE_AFTER must be positive")
	check(c.StreamReplicas >= 1 && c.StreamReplicas <= 5, "STREAM_REPLICAS must be 1..5")
	check(c.DedupWindow >= time.Second, "DEDUP_WINDOW must be at least 1s")
	check(c.MaxActiveBatches >= 0, "MAX_ACTIVE_BATCHES must not be negative")
	check(c.VendorCallTimeout > 0, "VENDOR_CALL_TIMEOUT must be positive")
	check(c.VendorTransferTimeout > 0, "VENDOR_TRANSFER_TIMEOUT must be positive")
	check(c.Submit.Concurrency >= 1, "SUBMIT_CONCURRENCY must be at least 1")
	check(c.Submit.LockTTL >= time.Second, "SUBMIT_LOCK_TTL must be at least 1s")
	check(c.Submit.MaxTries >= 1, "SUBMIT_MAX_TRIES must be at least 1")
	check(c.Submit.CreateMargin > 0, "SUBMIT_CREATE_MARGIN must be positive")
	check(c.Poll.InitialInterval >= 10*time.Millisecond, "POLL_INITIAL_INTERVAL must be at least 10ms")
	check(c.Poll.InitialInterval <= c.Poll.MaxInterval, "POLL_INITIAL_INTERVAL must not exceed POLL_MAX_INTERVAL")
	check(c.Poll.Lease >= time.Second, "POLL_LEASE must be at least 1s")
	check(c.Poll.Strategy == "adaptive" || c.Poll.Strategy == "fixed", "POLL_STRATEGY %q must be adaptive or fixed", c.Poll.Strategy)
	check(c.Poll.Concurrency >= 1, "POLL_CONCURRENCY must be at least 1")
	check(c.Poll.SweepInterval == 0 || c.Poll.SweepInterval >= 100*time.Millisecond, "POLL_SWEEP_INTERVAL must be 0 (off) or at least 100ms")
	check(c.Poll.SoftTimeout <= c.Poll.HardTimeout, "POLL_SOFT_TIMEOUT must not exceed POLL_HARD_TIMEOUT")
	check(c.Poll.TimeoutAction == "cancel" || c.Poll.TimeoutAction == "alert" || c.Poll.TimeoutAction == "retry",
		"POLL_TIMEOUT_ACTION %q must be cancel, alert or retry", c.Poll.TimeoutAction)
	check(c.Poll.WebhookAddr == "" || c.Poll.WebhookSecret != "", "OPENAI_WEBHOOK_SECRET is required when VENDOR_WEBHOOK_ADDR is set")
	check(c.Notify.Concurrency >= 1, "NOTIFY_CONCURRENCY must be at least 1")
	check(c.Notify.MaxRetryAttempts >= 0, "MAX_RETRY_ATTEMPTS must not be negative")
	check(len(c.Notify.WebhookURLs) == 0 || c.Notify.WebhookSecret != "", "WEBHOOK_SECRET is required when WEBHOOK_URLS is set")
	for _, u := range c.Notify.WebhookURLs {
		check(validURL(u, "http", "https"), "WEBHOOK_URLS entry %q is not an http(s) URL", u)
	}
	check(c.Notify.WebhookMaxAttempts >= 1, "WEBHOOK_MAX_ATTEMPTS must be at least 1")
	check(c.Pack.MaxRequests >= 1, "PACK_MAX_REQUESTS must be at least 1")
	check(c.Pack.MaxBytes >= 1024, "PACK_MAX_BYTES must be at least 1024")
	check(c.Pack.MaxAge >= time.Second, "PACK_MAX_AGE must be at least 1s")
	check(c.Pack.Concurrency >= 1, "PACK_CONCURRENCY must be at least 1")
	check(c.Pack.LockTTL >= time.Second, "PACK_LOCK_TTL must be at least 1s")
	return errors.Join(errs...)
}

// Redacted returns the configuration with secrets masked, for the start-up log.
func (c Config) Redacted() Config {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "[redacted]"
	}
	c.OpenAIAPIKey = mask(c.OpenAIAPIKey)
	c.AnthropicAPIKey = mask(c.AnthropicAPIKey)
	c.Poll.WebhookSecret = mask(c.Poll.WebhookSecret)
	c.Notify.WebhookSecret = mask(c.Notify.WebhookSecret)
	c.RedisURL = RedactURL(c.RedisURL)
	c.NATSURL = RedactURL(c.NATSURL)
	return c
}

func validURL(s string, schemes ...string) bool {
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return false
		}
		ok := false
		for _, sc := range schemes {
			ok = ok || u.Scheme == sc
		}
		if !ok {
			return false
		}
	}
	return true
}

type parser struct {
	env  Lookup
	errs []error
}

func (p *parser) get(name string) (string, bool) {
	v, ok := p.env(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (p *parser) str(name, def string) string {
	if v, ok := p.get(name); ok {
		return v
	}
	return def
}

func (p *parser) dur(name string, def time.Duration) time.Duration {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not a Go duration (e.g. 500ms, 30s, 5m)", name, v))
		return def
	}
	return d
}

func (p *parser) int(name string, def int) int {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not an integer", name, v))
		return def
	}
	return n
}

func (p *parser) bool(name string, def bool) bool {
	v, ok := p.get(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not a boolean", name, v))
		return def
	}
	return b
}

func (p *parser) list(name string) []string {
	v, ok := p.get(name)
	if !ok {
		return nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (p *parser) tokenLimits(name string) map[string]int64 {
	items := p.list(name)
	if len(items) == 0 {
		return nil
	}
	out := map[string]int64{}
	for _, it := range items {
		model, n, ok := strings.Cut(it, "=")
		v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
		if !ok || strings.TrimSpace(model) == "" || err != nil || v <= 0 {
			p.errs = append(p.errs, fmt.Errorf("%s entry %q is not model=tokens (a positive integer)", name, it))
			continue
		}
		out[strings.TrimSpace(model)] = v
	}
	return out
}
