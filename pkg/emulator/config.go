package emulator

import (
	"cmp"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// Clock is the emulator's time source. Batch timestamps and the whole
// lifecycle are computed from it, so a test can drive the emulator by
// advancing a simulated clock instead of sleeping.
type Clock interface {
	Now() time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Operation names used by [Faults.Ops], the call log and [Stats.CallsByOp].
const (
	OpUpload     = "upload"      // POST /v1/files
	OpFileGet    = "file_get"    // GET /v1/files/{id}
	OpFileList   = "file_list"   // GET /v1/files
	OpContent    = "content"     // GET /v1/files/{id}/content
	OpFileDelete = "file_delete" // DELETE /v1/files/{id}
	OpCreate     = "create"      // POST /v1/batches
	OpGet        = "get"         // GET /v1/batches/{id}
	OpList       = "list"        // GET /v1/batches
	OpCancel     = "cancel"      // POST /v1/batches/{id}/cancel
	OpOther      = "other"       // any other /v1 path (answered 404)

	OpAnthropicCreate  = "anthropic_create"  // POST /v1/messages/batches
	OpAnthropicGet     = "anthropic_get"     // GET /v1/messages/batches/{id}
	OpAnthropicList    = "anthropic_list"    // GET /v1/messages/batches
	OpAnthropicCancel  = "anthropic_cancel"  // POST /v1/messages/batches/{id}/cancel
	OpAnthropicDelete  = "anthropic_delete"  // DELETE /v1/messages/batches/{id}
	OpAnthropicResults = "anthropic_results" // GET /v1/messages/batches/{id}/results
)

var knownOps = []string{
	OpUpload, OpFileGet, OpFileList, OpContent, OpFileDelete, OpCreate, OpGet, OpList, OpCancel,
	OpAnthropicCreate, OpAnthropicGet, OpAnthropicList, OpAnthropicCancel, OpAnthropicDelete, OpAnthropicResults,
}

// Config configures an [Emulator]. The zero value is valid: [Config.WithDefaults]
// fills every zero field with a fast development default. Durations are real
// time as read from Clock; a zero duration means "use the default", so use
// 1ns for "immediately".
type Config struct {
	// APIKey, when set, is the only accepted key (EMULATOR_API_KEY): the
	// OpenAI API takes it as a bearer token, the Anthropic API as x-api-key
	// or a bearer token. Empty accepts any key; a request without one is
	// always rejected with 401.
	APIKey string

	// Clock is the time source. Defaults to the wall clock.
	Clock Clock
	// Logger receives the emulator's own logs. The zero value discards them.
	Logger zerolog.Logger

	// ValidatingFor is how long a batch stays "validating"
	// (EMULATOR_VALIDATING_FOR). Defaults to 200ms.
	ValidatingFor time.Duration
	// InProgressFor is how long a valid batch stays "in_progress"; its
	// requests complete evenly spread over it (EMULATOR_IN_PROGRESS_FOR).
	// Defaults to 1s.
	InProgressFor time.Duration
	// FinalizingFor is how long a batch stays "finalizing"
	// (EMULATOR_FINALIZING_FOR). Defaults to 200ms.
	FinalizingFor time.Duration
	// CancelDelay is how long a cancelled batch stays "cancelling".
	// Defaults to 200ms.
	CancelDelay time.Duration
	// ExpireAfter is the emulated 24h completion window: a batch not yet
	// finalizing this long after creation expires (EMULATOR_EXPIRE_AFTER).
	// A batch's expires_at is created_at+ExpireAfter. Defaults to 24h.
	ExpireAfter time.Duration

	// EnqueuedTokenLimit is the per-model limit of estimated input tokens
	// across active batches; a batch that would exceed it fails validation
	// with token_limit_exceeded (EMULATOR_ENQUEUED_TOKEN_LIMIT). 0 disables it.
	EnqueuedTokenLimit int64

	// WebhookURL receives a signed batch.completed, batch.failed,
	// batch.expired or batch.cancelled event when a batch reaches that
	// status (EMULATOR_WEBHOOK_URL). Empty disables webhooks.
	WebhookURL string
	// WebhookSecret signs webhooks per Standard Webhooks; "whsec_<base64>"
	// is decoded, anything else is used as raw bytes (EMULATOR_WEBHOOK_SECRET).
	// Required when WebhookURL is set.
	WebhookSecret string
	// WebhookAttempts is how often a delivery is tried before it is dropped
	// (non-2xx or transport error counts as a failure). Defaults to 5.
	WebhookAttempts int
	// WebhookBackoff is the wait before the first retry, doubled each retry.
	// Defaults to 100ms.
	WebhookBackoff time.Duration
	// WebhookClient sends webhooks. Defaults to a client with a 10s timeout.
	WebhookClient *http.Client

	// Seed seeds the random source of fault injection, FailureRate and the
	// order of output lines (EMULATOR_SEED). 0 means seed 1. Object IDs are
	// always random so they never repeat across restarts.
	Seed int64
	// TickInterval bounds how long the scheduler sleeps between checks of
	// due batches, so webhooks and stats follow a simulated Clock within it.
	// Defaults to 100ms.
	TickInterval time.Duration
	// CallLogSize bounds the call log of the admin API (oldest entries are
	// dropped). Defaults to 100000.
	CallLogSize int
	// MaxFileBytes bounds uploads. Defaults to 200 MiB (OpenAI's limit).
	MaxFileBytes int64
	// MaxMessageBatchBytes bounds the body of POST /v1/messages/batches
	// (413 request_too_large beyond). Defaults to 256 MiB (Anthropic's limit).
	MaxMessageBatchBytes int64
	// ReplyBytes pads every generated reply text (chat completions
	// content, completions text, responses output text) to at least this
	// many bytes, deterministically, so a benchmark can produce output
	// files of realistic size: 1250 makes 50,000 chat requests a ~100 MB
	// output file (EMULATOR_REPLY_BYTES). 0 keeps the short reply.
	ReplyBytes int

	// Faults is the fault injection in force at start; change it at run
	// time with [Emulator.SetFaults] or PUT /_emulator/faults.
	Faults
}

// MarshalZerologObject logs c without its secrets (APIKey, WebhookSecret).
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	e.Bool("api_key_set", c.APIKey != "").
		Dur("validating_for", c.ValidatingFor).
		Dur("in_progress_for", c.InProgressFor).
		Dur("finalizing_for", c.FinalizingFor).
		Dur("cancel_delay", c.CancelDelay).
		Dur("expire_after", c.ExpireAfter).
		Int64("enqueued_token_limit", c.EnqueuedTokenLimit).
		Str("webhook_url", c.WebhookURL).
		Bool("webhook_secret_set", c.WebhookSecret != "").
		Int64("seed", c.Seed).
		Int("reply_bytes", c.ReplyBytes).
		Dur("latency", c.Latency).
		Float64("rate_limit_rate", c.RateLimitRate).
		Float64("server_error_rate", c.ServerErrorRate).
		Float64("overloaded_rate", c.OverloadedRate).
		Float64("drop_after_create_rate", c.DropAfterCreateRate).
		Float64("failure_rate", c.FailureRate)
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Clock == nil {
		c.Clock = realClock{}
	}
	c.ValidatingFor = cmp.Or(c.ValidatingFor, 200*time.Millisecond)
	c.InProgressFor = cmp.Or(c.InProgressFor, time.Second)
	c.FinalizingFor = cmp.Or(c.FinalizingFor, 200*time.Millisecond)
	c.CancelDelay = cmp.Or(c.CancelDelay, 200*time.Millisecond)
	c.ExpireAfter = cmp.Or(c.ExpireAfter, 24*time.Hour)
	c.WebhookAttempts = cmp.Or(c.WebhookAttempts, 5)
	c.WebhookBackoff = cmp.Or(c.WebhookBackoff, 100*time.Millisecond)
	if c.WebhookClient == nil {
		c.WebhookClient = &http.Client{Timeout: 10 * time.Second}
	}
	c.Seed = cmp.Or(c.Seed, 1)
	c.TickInterval = cmp.Or(c.TickInterval, 100*time.Millisecond)
	c.CallLogSize = cmp.Or(c.CallLogSize, 100_000)
	c.MaxFileBytes = cmp.Or(c.MaxFileBytes, 200<<20)
	c.MaxMessageBatchBytes = cmp.Or(c.MaxMessageBatchBytes, 256<<20)
	c.Faults = c.Faults.withDefaults()
	return c
}

// Validate reports the first invalid field, named by its environment
// variable where it has one.
func (c Config) Validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"EMULATOR_VALIDATING_FOR", c.ValidatingFor},
		{"EMULATOR_IN_PROGRESS_FOR", c.InProgressFor},
		{"EMULATOR_FINALIZING_FOR", c.FinalizingFor},
		{"CancelDelay", c.CancelDelay},
		{"EMULATOR_EXPIRE_AFTER", c.ExpireAfter},
		{"WebhookBackoff", c.WebhookBackoff},
		{"TickInterval", c.TickInterval},
	} {
		if d.v < 0 {
			return fmt.Errorf("%s must not be negative, got %s", d.name, d.v)
		}
	}
	if c.EnqueuedTokenLimit < 0 {
		return errors.New("EMULATOR_ENQUEUED_TOKEN_LIMIT must not be negative")
	}
	if c.ReplyBytes < 0 {
		return fmt.Errorf("EMULATOR_REPLY_BYTES must not be negative, got %d", c.ReplyBytes)
	}
	if c.WebhookURL != "" {
		if !strings.HasPrefix(c.WebhookURL, "http://") && !strings.HasPrefix(c.WebhookURL, "https://") {
			return fmt.Errorf("EMULATOR_WEBHOOK_URL must be an http(s) URL, got %q", c.WebhookURL)
		}
		if c.WebhookSecret == "" {
			return errors.New("EMULATOR_WEBHOOK_SECRET is required when EMULATOR_WEBHOOK_URL is set")
		}
	}
	if _, err := webhookKey(c.WebhookSecret); err != nil {
		return fmt.Errorf("EMULATOR_WEBHOOK_SECRET: %w", err)
	}
	if c.WebhookAttempts < 0 || c.CallLogSize < 0 || c.MaxFileBytes < 0 || c.MaxMessageBatchBytes < 0 {
		return errors.New("WebhookAttempts, CallLogSize, MaxFileBytes and MaxMessageBatchBytes must not be negative")
	}
	return c.Faults.Validate()
}

// webhookKey decodes a Standard Webhooks secret the way openai-go does.
func webhookKey(secret string) ([]byte, error) {
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("decode whsec_ secret: %w", err)
	}
	if len(key) < 24 {
		return nil, errors.New("decoded whsec_ secret must be at least 24 bytes")
	}
	return key, nil
}

// Faults is the fault injection of the /v1 API, OpenAI's and Anthropic's
// alike. Rates are probabilities in [0,1] drawn from the emulator's seeded
// random source.
type Faults struct {
	// Latency is added before every /v1 call is handled (EMULATOR_LATENCY);
	// a client that gives up earlier ends the wait.
	Latency time.Duration
	// RateLimitRate is the probability that a call is answered 429 with a
	// Retry-After header: rate_limit_exceeded from the OpenAI API,
	// rate_limit_error from the Anthropic API (EMULATOR_429_RATE).
	RateLimitRate float64
	// ServerErrorRate is the probability that a call is answered with a
	// server error and a Retry-After header: 500 or 503 server_error from
	// the OpenAI API, 500 api_error or 529 overloaded_error from the
	// Anthropic API (EMULATOR_5XX_RATE).
	ServerErrorRate float64
	// OverloadedRate is the probability that an Anthropic API call is
	// answered 529 overloaded_error with a Retry-After header
	// (EMULATOR_529_RATE). OpenAI API calls ignore it: OpenAI has no 529.
	OverloadedRate float64
	// Ops overrides RateLimitRate, ServerErrorRate and OverloadedRate per
	// operation (OpUpload, OpCreate, OpGet, OpList, OpCancel, OpContent,
	// OpAnthropicCreate, OpAnthropicGet, ...).
	Ops map[string]OpFaults
	// RetryAfter is the Retry-After of injected 429, 5xx and 529 answers,
	// sent in whole seconds (at least 1). Defaults to 1s.
	RetryAfter time.Duration
	// DropAfterCreateRate is the probability that POST /v1/batches or POST
	// /v1/messages/batches creates the batch and then closes the
	// connection without answering (EMULATOR_DROP_AFTER_CREATE_RATE).
	DropAfterCreateRate float64
	// FailureRate is the probability that a request inside a batch fails:
	// with HTTP 500 in an OpenAI error file, as an errored api_error result
	// of a Message Batch (EMULATOR_FAILURE_RATE).
	FailureRate float64
}

// OpFaults are the fault rates of one operation.
type OpFaults struct {
	RateLimitRate   float64 `json:"rate_limit_rate"`
	ServerErrorRate float64 `json:"server_error_rate"`
	// OverloadedRate applies to Anthropic operations only.
	OverloadedRate float64 `json:"overloaded_rate,omitempty"`
}

func (f Faults) withDefaults() Faults {
	f.RetryAfter = cmp.Or(f.RetryAfter, time.Second)
	f.Ops = maps.Clone(f.Ops)
	return f
}

// Validate reports the first invalid field.
func (f Faults) Validate() error {
	rates := map[string]float64{
		"EMULATOR_429_RATE":               f.RateLimitRate,
		"EMULATOR_5XX_RATE":               f.ServerErrorRate,
		"EMULATOR_529_RATE":               f.OverloadedRate,
		"EMULATOR_DROP_AFTER_CREATE_RATE": f.DropAfterCreateRate,
		"EMULATOR_FAILURE_RATE":           f.FailureRate,
	}
	for _, op := range slices.Sorted(maps.Keys(f.Ops)) {
		if !slices.Contains(knownOps, op) {
			return fmt.Errorf("faults: unknown operation %q (one of %s)", op, strings.Join(knownOps, ", "))
		}
		rates["ops."+op+".rate_limit_rate"] = f.Ops[op].RateLimitRate
		rates["ops."+op+".server_error_rate"] = f.Ops[op].ServerErrorRate
		rates["ops."+op+".overloaded_rate"] = f.Ops[op].OverloadedRate
	}
	for _, name := range slices.Sorted(maps.Keys(rates)) {
		if r := rates[name]; r < 0 || r > 1 {
			return fmt.Errorf("%s must be within [0,1], got %v", name, r)
		}
	}
	if f.Latency < 0 || f.RetryAfter < 0 {
		return errors.New("EMULATOR_LATENCY and RetryAfter must not be negative")
	}
	return nil
}

// rates returns the 429, 5xx and 529 probabilities of op.
func (f Faults) rates(op string) OpFaults {
	if o, ok := f.Ops[op]; ok {
		return o
	}
	return OpFaults{RateLimitRate: f.RateLimitRate, ServerErrorRate: f.ServerErrorRate, OverloadedRate: f.OverloadedRate}
}

// faultsJSON is the wire form of Faults (PUT /_emulator/faults).
type faultsJSON struct {
	LatencyMS           int64               `json:"latency_ms"`
	RateLimitRate       float64             `json:"rate_limit_rate"`
	ServerErrorRate     float64             `json:"server_error_rate"`
	OverloadedRate      float64             `json:"overloaded_rate"`
	Ops                 map[string]OpFaults `json:"ops,omitempty"`
	RetryAfterSeconds   float64             `json:"retry_after_seconds"`
	DropAfterCreateRate float64             `json:"drop_after_create_rate"`
	FailureRate         float64             `json:"failure_rate"`
}

// MarshalJSON encodes f as the body of PUT /_emulator/faults: durations as
// latency_ms and retry_after_seconds.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{
		LatencyMS:           f.Latency.Milliseconds(),
		RateLimitRate:       f.RateLimitRate,
		ServerErrorRate:     f.ServerErrorRate,
		OverloadedRate:      f.OverloadedRate,
		Ops:                 f.Ops,
		RetryAfterSeconds:   f.RetryAfter.Seconds(),
		DropAfterCreateRate: f.DropAfterCreateRate,
		FailureRate:         f.FailureRate,
	})
}

// UnmarshalJSON decodes the form written by MarshalJSON.
func (f *Faults) UnmarshalJSON(data []byte) error {
	var w faultsJSON
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("decode faults: %w", err)
	}
	*f = Faults{
		Latency:             time.Duration(w.LatencyMS) * time.Millisecond,
		RateLimitRate:       w.RateLimitRate,
		ServerErrorRate:     w.ServerErrorRate,
		OverloadedRate:      w.OverloadedRate,
		Ops:                 w.Ops,
		RetryAfter:          time.Duration(w.RetryAfterSeconds * float64(time.Second)),
		DropAfterCreateRate: w.DropAfterCreateRate,
		FailureRate:         w.FailureRate,
	}
	return nil
}
