package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/batchfleet/batchfleet/pkg/backoff"
)

// DefaultTimeout is how long Send waits for an answer (contract: "no answer
// in 10 s is retried").
const DefaultTimeout = 10 * time.Second

// UserAgent is sent with every delivery.
const UserAgent = "batchfleet-webhook/1"

// ErrDelivery matches every *DeliveryError with errors.Is.
var ErrDelivery = errors.New("webhook: delivery failed")

// DeliveryError is a failed delivery attempt: a non-2xx answer (StatusCode
// set, Err nil) or no answer (StatusCode 0, Err the cause: a transport
// error, or context.DeadlineExceeded when the receiver did not answer within
// the Sender's Timeout). The caller retries it with backoff, honouring
// RetryAfter when it is set.
type DeliveryError struct {
	StatusCode int           // the receiver's HTTP status; 0 without an answer
	RetryAfter time.Duration // the receiver's Retry-After; 0 if none
	Err        error         // why there was no answer; nil with a status
}

func (e *DeliveryError) Error() string {
	if e.Err != nil {
		return "webhook: delivery failed: " + e.Err.Error()
	}
	s := "webhook: delivery failed: status " + strconv.Itoa(e.StatusCode)
	if e.RetryAfter > 0 {
		s += ", retry after " + e.RetryAfter.String()
	}
	return s
}

// Unwrap returns Err.
func (e *DeliveryError) Unwrap() error { return e.Err }

// Is makes every DeliveryError match ErrDelivery.
func (e *DeliveryError) Is(target error) bool { return target == ErrDelivery }

// Sender delivers signed webhooks, one attempt per Send. Its zero value
// lacks only Secret. It is safe for concurrent use.
type Sender struct {
	// Client sends the requests. Defaults to a client that does not follow
	// redirects (a redirected POST would become a GET): a 3xx is a
	// DeliveryError.
	Client *http.Client
	// Secret signs every delivery (WEBHOOK_SECRET, see ParseSecret). Required.
	Secret []byte
	// Timeout bounds one attempt, from dialling to the status line. Defaults
	// to DefaultTimeout (10s).
	Timeout time.Duration
	// Clock gives webhook-timestamp and dates Retry-After. Defaults to
	// time.Now.
	Clock func() time.Time
}

// defaultClient is shared by Senders without a Client, so connections to a
// receiver are reused across deliveries.
var defaultClient = &http.Client{
	Transport: http.DefaultTransport.(*http.Transport).Clone(),
	CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	},
}

// maxDrain is how much of a response body Send reads (and discards) so the
// connection can be reused.
const maxDrain = 64 << 10

// Send POSTs body to url once, signed with webhook-id id and the current
// time: Content-Type application/json, User-Agent batchfleet-webhook/1 and
// the Standard Webhooks headers. A 2xx answer returns nil; anything else,
// including no answer within Timeout or ctx ending, returns a *DeliveryError.
// A Sender without a Secret, or an empty url or id, is a plain error (a
// configuration bug, not worth retrying).
//
// Send does not retry: see the package doc. Use the same id on every retry
// of an event; the timestamp and signature are fresh on each attempt.
func (s *Sender) Send(ctx context.Context, url, id string, body []byte) error {
	if len(s.Secret) == 0 {
		return errors.New("webhook: sender has no secret")
	}
	if url == "" || id == "" {
		return errors.New("webhook: send needs a url and an id")
	}
	now := time.Now
	if s.Clock != nil {
		now = s.Clock
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	client := s.Client
	if client == nil {
		client = defaultClient
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook: new request to %q: %w", url, err)
	}
	for k, v := range Headers(s.Secret, id, now(), body) {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)

	resp, err := client.Do(req)
	if err != nil {
		return &DeliveryError{Err: err}
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return &DeliveryError{StatusCode: resp.StatusCode, RetryAfter: retryHint(resp.Header, now())}
}

// retryHint is the subscriber's Retry-After hint, capped at a day.
func retryHint(h http.Header, now time.Time) time.Duration {
	d, _ := backoff.RetryAfter(h, now)
	return min(d, 24*time.Hour)
}
