package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of Standard Webhooks.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// DefaultTolerance is how far a webhook-timestamp may be from now, in either
// direction, when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// secretPrefix marks a base64 Standard Webhooks secret.
const secretPrefix = "whsec_"

// minSecretBytes is Standard Webhooks' (and openai-go's) minimum length of
// a decoded whsec_ secret.
const minSecretBytes = 24

// Errors of Verify and ParseSecret. Verify's errors wrap one of the first
// three, so errors.Is tells the receiver what to answer (all three are a 400
// for the vendor webhook endpoint).
var (
	ErrMissingHeaders            = errors.New("webhook: missing headers")
	ErrBadSignature              = errors.New("webhook: bad signature")
	ErrTimestampOutsideTolerance = errors.New("webhook: timestamp outside tolerance")
	ErrInvalidSecret             = errors.New("webhook: invalid secret")
)

// ParseSecret reads a webhook secret as the contract gives it:
// "whsec_<base64>" is decoded (standard base64, padded, at least 24 bytes
// decoded, as openai-go and Standard Webhooks require); anything else is used
// as raw bytes. An empty secret is an error wrapping ErrInvalidSecret.
func ParseSecret(s string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidSecret)
	}
	enc, ok := strings.CutPrefix(s, secretPrefix)
	if !ok {
		return []byte(s), nil
	}
	key, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil {
		return nil, fmt.Errorf("%w: whsec_ value is not base64: %w", ErrInvalidSecret, err)
	}
	if len(key) < minSecretBytes {
		return nil, fmt.Errorf("%w: whsec_ value decodes to %d bytes, want at least %d", ErrInvalidSecret, len(key), minSecretBytes)
	}
	return key, nil
}

// Sign returns the webhook-signature value for a delivery:
// "v1," + base64(HMAC-SHA256(secret, id + "." + unix seconds of ts + "." + body)).
// The receiver gets the same id and ts in webhook-id and webhook-timestamp
// (see Headers) and body byte for byte.
func Sign(secret []byte, id string, ts time.Time, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(secret, id, strconv.FormatInt(ts.Unix(), 10), body))
}

func mac(secret []byte, id, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(id))
	h.Write([]byte{'.'})
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Headers returns the three Standard Webhooks headers of a signed delivery.
func Headers(secret []byte, id string, ts time.Time, body []byte) http.Header {
	h := make(http.Header, 3)
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, Sign(secret, id, ts, body))
	return h
}

// Verify checks a delivery: h must carry webhook-id, webhook-timestamp and
// webhook-signature, the timestamp must be within tolerance of now (either
// direction; tolerance <= 0 means DefaultTolerance), and one of the
// space-separated "v1,<base64>" entries of webhook-signature must be the
// HMAC of body (compared in constant time; other versions are skipped).
//
// Verify does not deduplicate: a receiver must remember processed webhook-ids
// for at least the tolerance, since the sender delivers at least once.
func Verify(secret []byte, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	id, tsText, sigs := header(h, HeaderID), header(h, HeaderTimestamp), header(h, HeaderSignature)
	var missing []string
	for _, hv := range []struct{ name, v string }{{HeaderID, id}, {HeaderTimestamp, tsText}, {HeaderSignature, sigs}} {
		if hv.v == "" {
			missing = append(missing, hv.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingHeaders, strings.Join(missing, ", "))
	}
	if len(secret) == 0 {
		return fmt.Errorf("%w: no secret configured", ErrBadSignature)
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: webhook-timestamp %q is not unix seconds", ErrBadSignature, tsText)
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	tol := int64(tolerance / time.Second)
	if d := now.Unix() - ts; d > tol || -d > tol {
		return fmt.Errorf("%w: webhook-timestamp %d is %ds from now, tolerance %s", ErrTimestampOutsideTolerance, ts, d, tolerance)
	}
	want := mac(secret, id, tsText, body)
	for _, entry := range strings.Fields(sigs) {
		sig, ok := strings.CutPrefix(entry, "v1,")
		if !ok {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return ErrBadSignature
}

// header gets name from h, also when h was built with non-canonical keys
// (a literal map, a header copied from a message bus): net/http
// canonicalizes what it receives, other sources may not.
func header(h http.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) {
			return vs[0]
		}
	}
	return ""
}
