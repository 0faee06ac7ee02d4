package batchapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

var (
	// ErrWebhookSignature means a delivery is not authentic or not fresh: a
	// missing or wrong webhook-signature, a missing webhook-id or
	// webhook-timestamp, or a timestamp outside the tolerance. The receiver
	// answers 400 and must not act on the body.
	ErrWebhookSignature = errors.New("batchapi: invalid webhook signature")
	// ErrWebhookPayload means the signature is valid but the body is not a
	// webhook event the fleet can read (not JSON, or a batch event without
	// data.id). Redelivering the same body cannot help: answer 400.
	ErrWebhookPayload = errors.New("batchapi: invalid webhook payload")
)

// WebhookEvent is a verified vendor webhook event.
type WebhookEvent struct {
	// ID is the event's own id ("evt_..."); de-duplicate deliveries by the
	// webhook-id header instead, which stays the same across redeliveries.
	ID string
	// Type is the event type as sent, e.g. "batch.completed".
	Type string
	// BatchID is data.id for batch.completed, batch.failed, batch.expired
	// and batch.cancelled, and "" for every other type (which the fleet
	// ignores).
	BatchID   string
	CreatedAt time.Time
}

// batchEventTypes are the event types that carry a batch id in data.id.
var batchEventTypes = map[string]bool{
	"batch.completed": true,
	"batch.failed":    true,
	"batch.expired":   true,
	"batch.cancelled": true,
}

// DefaultWebhookTolerance is the accepted age (and clock skew) of a webhook
// timestamp when VerifyWebhook is given a tolerance <= 0; openai-go and
// Standard Webhooks use the same.
const DefaultWebhookTolerance = 5 * time.Minute

// webhookVerifier is the openai-go client that verifies one secret's
// webhooks, built once per secret.
type webhookVerifier struct {
	client openai.Client
	err    error // the secret is unusable
}

// webhookVerifiers maps secret -> *webhookVerifier. In practice it holds one
// entry (two while a secret is rotated).
var webhookVerifiers sync.Map

func verifierFor(secret string) *webhookVerifier {
	if v, ok := webhookVerifiers.Load(secret); ok {
		return v.(*webhookVerifier)
	}
	v := &webhookVerifier{err: ValidateWebhookSecret(secret)}
	if v.err == nil {
		v.client = openai.NewClient(option.WithWebhookSecret(secret))
	}
	actual, _ := webhookVerifiers.LoadOrStore(secret, v)
	return actual.(*webhookVerifier)
}

// ValidateWebhookSecret reports whether secret can verify webhooks, by the
// rules openai-go applies: "whsec_" followed by canonical standard base64
// of at least 24 bytes, or any other non-empty string used as raw bytes.
// Call it at start so a bad OPENAI_WEBHOOK_SECRET fails fast instead of
// failing every delivery. The error never contains the secret.
func ValidateWebhookSecret(secret string) error {
	if secret == "" {
		return errors.New("webhook secret is empty")
	}
	enc, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil
	}
	key, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil || base64.StdEncoding.EncodeToString(key) != enc {
		return errors.New(`webhook secret: the part after "whsec_" is not canonical standard base64`)
	}
	if len(key) < 24 {
		return fmt.Errorf("webhook secret: decoded key has %d bytes, want at least 24", len(key))
	}
	return nil
}

// VerifyWebhook checks a vendor webhook delivery with openai-go's own
// Standard Webhooks verification (webhook-id, webhook-timestamp and
// webhook-signature headers; HMAC-SHA256 over "id.timestamp.body") and
// decodes the event. body must be the exact bytes received.
//
// tolerance bounds how far the timestamp may lie from now, either way
// (DefaultWebhookTolerance when <= 0; openai-go compares whole seconds).
// The openai-go client for a secret is built on first use and reused.
//
// Errors: ErrWebhookSignature (wrapped) for an inauthentic or stale
// delivery, ErrWebhookPayload (wrapped) for a signed but unreadable body,
// and a plain error for an unusable secret (a configuration fault, see
// ValidateWebhookSecret). An event of a type other than the four batch
// events verifies and is returned with BatchID "".
func VerifyWebhook(secret string, body []byte, h http.Header, tolerance time.Duration, now time.Time) (WebhookEvent, error) {
	v := verifierFor(secret)
	if v.err != nil {
		return WebhookEvent{}, fmt.Errorf("verify webhook: %w", v.err)
	}
	if tolerance <= 0 {
		tolerance = DefaultWebhookTolerance
	}
	if h == nil {
		h = http.Header{}
	}
	u, err := v.client.Webhooks.UnwrapWithToleranceAndTime(body, h, tolerance, now)
	if err != nil {
		if u == nil { // openai-go returns no event when verification fails
			return WebhookEvent{}, fmt.Errorf("verify webhook: %w: %w", ErrWebhookSignature, err)
		}
		return WebhookEvent{}, fmt.Errorf("decode webhook: %w: %w", ErrWebhookPayload, err)
	}
	// openai-go's decoder is lenient: it accepts a body that is not JSON.
	if b := bytes.TrimSpace(body); !json.Valid(b) || b[0] != '{' {
		return WebhookEvent{}, fmt.Errorf("decode webhook: %w: not a JSON object", ErrWebhookPayload)
	}
	ev := WebhookEvent{ID: u.ID, Type: u.Type}
	if u.CreatedAt != 0 {
		ev.CreatedAt = time.Unix(u.CreatedAt, 0)
	}
	if batchEventTypes[u.Type] {
		if u.Data.ID == "" {
			return WebhookEvent{}, fmt.Errorf("decode webhook %s: %w: no data.id", u.Type, ErrWebhookPayload)
		}
		ev.BatchID = u.Data.ID
	}
	return ev, nil
}
