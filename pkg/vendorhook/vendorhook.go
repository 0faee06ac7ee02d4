package vendorhook

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
)

// Path is where the receiver is mounted by [Receiver.Handler].
const Path = "/webhooks/openai"

// ErrUnknownBatch is what Trigger wraps for a batch the fleet does not know
// (created outside the fleet, or already forgotten): the delivery is
// acknowledged and ignored.
var ErrUnknownBatch = errors.New("vendorhook: unknown batch")

// KeyPrefix prefixes the Redis de-duplication key: KeyPrefix + webhook-id.
const KeyPrefix = "batchfleet:webhook:"

const (
	// doneValue marks a webhook-id as processed.
	doneValue = "1"
	// processingPrefix starts the value of a claim being processed.
	processingPrefix = "processing:"
	// claimMargin is added to TriggerTimeout for the processing claim's TTL.
	claimMargin = 5 * time.Second
	// redisTimeout bounds each Redis call.
	redisTimeout = 2 * time.Second
)

// Deps are the receiver's collaborators.
type Deps struct {
	// Redis holds the webhook-id de-duplication keys. Required.
	Redis redis.UniversalClient
	// Trigger polls batchID now (provided by the poller). It returns an
	// error wrapping ErrUnknownBatch for a batch the fleet does not know;
	// any other error makes the vendor redeliver. Required.
	Trigger func(ctx context.Context, batchID string) error
	// Logger receives the receiver's logs. The zero value discards them.
	Logger zerolog.Logger
	// Now is the clock the webhook timestamp is checked against.
	// Defaults to time.Now.
	Now func() time.Time
}

// Config configures a [Receiver].
type Config struct {
	// Secret verifies signatures (OPENAI_WEBHOOK_SECRET, "whsec_<base64>").
	// Required.
	Secret string `json:"-"`
	// Tolerance is how far webhook-timestamp may lie from now, either way.
	// Defaults to 5m.
	Tolerance time.Duration
	// DedupTTL is how long a processed webhook-id is remembered; longer
	// than the vendor's redelivery window. Defaults to 24h.
	DedupTTL time.Duration
	// MaxBody bounds a request body in bytes; larger ones get 413.
	// Defaults to 1 MiB.
	MaxBody int64
	// TriggerTimeout bounds one Trigger call; the "processing" claim lasts
	// this plus 5s. Defaults to 10s.
	TriggerTimeout time.Duration
	// ShutdownTimeout bounds the graceful shutdown of Serve; requests still
	// running then are cancelled. Defaults to 5s.
	ShutdownTimeout time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	c.Tolerance = cmp.Or(c.Tolerance, 5*time.Minute)
	c.DedupTTL = cmp.Or(c.DedupTTL, 24*time.Hour)
	c.MaxBody = cmp.Or(c.MaxBody, 1<<20)
	c.TriggerTimeout = cmp.Or(c.TriggerTimeout, 10*time.Second)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, 5*time.Second)
	return c
}

// Validate reports the first invalid field. It never reveals the secret.
func (c Config) Validate() error {
	if err := batchapi.ValidateWebhookSecret(c.Secret); err != nil {
		return fmt.Errorf("OPENAI_WEBHOOK_SECRET: %w", err)
	}
	if c.Tolerance < time.Second {
		return fmt.Errorf("Config.Tolerance must be at least 1s, got %s", c.Tolerance)
	}
	if c.DedupTTL < time.Second {
		return fmt.Errorf("Config.DedupTTL must be at least 1s, got %s", c.DedupTTL)
	}
	if c.MaxBody <= 0 {
		return fmt.Errorf("Config.MaxBody must be positive, got %d", c.MaxBody)
	}
	if c.TriggerTimeout <= 0 || c.ShutdownTimeout <= 0 {
		return errors.New("Config.TriggerTimeout and Config.ShutdownTimeout must be positive")
	}
	return nil
}

// Receiver is the http.Handler of POST /webhooks/openai.
type Receiver struct {
	rdb     redis.UniversalClient
	trigger func(ctx context.Context, batchID string) error
	now     func() time.Time
	log     zerolog.Logger
	cfg     Config
}

// New returns a receiver. cfg's zero fields take their defaults; a missing
// or malformed secret or a nil Redis or Trigger is an error.
func New(d Deps, cfg Config) (*Receiver, error) {
	if d.Redis == nil {
		return nil, errors.New("vendorhook: Deps.Redis is required")
	}
	if d.Trigger == nil {
		return nil, errors.New("vendorhook: Deps.Trigger is required")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vendorhook: %w", err)
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Receiver{
		rdb:     d.Redis,
		trigger: d.Trigger,
		now:     d.Now,
		log:     d.Logger.With().Str("component", "vendorhook").Logger(),
		cfg:     cfg,
	}, nil
}

// Handler serves the receiver at Path and "ok" at GET /healthz.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle(Path, r)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// ServeHTTP handles one webhook delivery; see the package doc for the
// answers.
func (r *Receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, req.Body, r.cfg.MaxBody))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body exceeds %d bytes", r.cfg.MaxBody))
			return
		}
		writeError(w, http.StatusBadRequest, "cannot read body")
		return
	}
	whID := req.Header.Get("webhook-id")
	log := r.log.With().Str("webhook_id", whID).Logger()

	ev, err := batchapi.VerifyWebhook(r.cfg.Secret, body, req.Header, r.cfg.Tolerance, r.now())
	switch {
	case errors.Is(err, batchapi.ErrWebhookSignature):
		log.Warn().Err(err).Msg("webhook rejected")
		writeError(w, http.StatusBadRequest, "invalid webhook signature or timestamp")
		return
	case errors.Is(err, batchapi.ErrWebhookPayload):
		log.Warn().Err(err).Msg("webhook rejected")
		writeError(w, http.StatusBadRequest, "invalid webhook payload")
		return
	case err != nil: // cannot happen with a secret New accepted
		log.Error().Err(err).Msg("webhook not verified")
		writeError(w, http.StatusInternalServerError, "webhook verification unavailable")
		return
	}
	log = log.With().Str("type", ev.Type).Logger()
	if ev.BatchID == "" {
		log.Debug().Msg("webhook ignored: not a batch event")
		writeStatus(w, "ignored")
		return
	}
	log = log.With().Str("batch_id", ev.BatchID).Logger()
	code, msg := r.process(req.Context(), log, KeyPrefix+whID, ev)
	if code != http.StatusOK {
		writeError(w, code, msg)
		return
	}
	writeStatus(w, msg)
}

// process de-duplicates a verified batch event by its key and triggers a
// poll of its batch. It returns the HTTP status and, for 200, the status
// word, else the error message for the vendor.
func (r *Receiver) process(ctx context.Context, log zerolog.Logger, key string, ev batchapi.WebhookEvent) (int, string) {
	token := processingPrefix + randomHex()
	state, err := r.claim(ctx, key, token)
	switch {
	case err != nil:
		// De-duplication is an optimisation: a second poll is harmless.
		log.Warn().Err(err).Msg("webhook de-duplication unavailable, processing anyway")
	case state == alreadyDone:
		log.Debug().Msg("webhook duplicate")
		return http.StatusOK, "duplicate"
	case state == inProgress:
		log.Debug().Msg("webhook already in progress")
		return http.StatusConflict, "delivery in progress, retry later"
	}
	claimed := err == nil

	tctx, cancel := context.WithTimeout(ctx, r.cfg.TriggerTimeout)
	err = r.trigger(tctx, ev.BatchID)
	cancel()
	unknown := errors.Is(err, ErrUnknownBatch)
	if err != nil && !unknown {
		if claimed {
			if rerr := r.release(context.WithoutCancel(ctx), key, token); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		log.Warn().Err(err).Msg("webhook trigger failed, vendor will redeliver")
		return http.StatusInternalServerError, "trigger failed, retry later"
	}
	if claimed { // after a Redis error, do not wait for Redis again
		if merr := r.markDone(context.WithoutCancel(ctx), key); merr != nil {
			log.Warn().Err(merr).Msg("webhook not marked processed")
		}
	}
	if unknown {
		log.Info().Err(err).Msg("webhook for unknown batch ignored")
		return http.StatusOK, "ignored"
	}
	e := log.Info()
	if !ev.CreatedAt.IsZero() {
		e = e.Dur("event_age", r.now().Sub(ev.CreatedAt))
	}
	e.Msg("webhook processed")
	return http.StatusOK, "processed"
}

type claimState int

const (
	claimed claimState = iota
	alreadyDone
	inProgress
)

// claim takes key for this delivery with a processing TTL, or reports that
// the webhook-id is done or being processed by another delivery.
func (r *Receiver) claim(ctx context.Context, key, token string) (claimState, error) {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	for range 2 { // the key can expire between SET NX and GET
		ok, err := r.rdb.SetNX(ctx, key, token, r.cfg.TriggerTimeout+claimMargin).Result()
		if err != nil {
			return claimed, fmt.Errorf("claim webhook %q: %w", key, err)
		}
		if ok {
			return claimed, nil
		}
		v, err := r.rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return claimed, fmt.Errorf("read webhook %q: %w", key, err)
		}
		if v == doneValue {
			return alreadyDone, nil
		}
		return inProgress, nil
	}
	return inProgress, nil
}

// markDone remembers key as processed for DedupTTL, whether or not this
// delivery's claim is still in Redis.
func (r *Receiver) markDone(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := r.rdb.Set(ctx, key, doneValue, r.cfg.DedupTTL).Err(); err != nil {
		return fmt.Errorf("mark webhook %q processed: %w", key, err)
	}
	return nil
}

// releaseScript deletes KEYS[1] only if it still holds this delivery's
// claim (ARGV[1]), so an expired claim taken over by a redelivery stays.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0`)

// release drops this delivery's claim so a redelivery can process it.
func (r *Receiver) release(ctx context.Context, key, token string) error {
	ctx, cancel := context.WithTimeout(ctx, redisTimeout)
	defer cancel()
	if err := releaseScript.Run(ctx, r.rdb, []string{key}, token).Err(); err != nil {
		return fmt.Errorf("release webhook %q: %w", key, err)
	}
	return nil
}

func randomHex() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

func writeStatus(w http.ResponseWriter, status string) {
	writeJSON(w, http.StatusOK, map[string]string{"status": status})
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
