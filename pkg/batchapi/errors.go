package batchapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/backoff"
)

// Kind classifies a vendor error.
type Kind int

const (
	// Permanent: the vendor rejected the call (400, 401, 403, 404, 422);
	// repeating it will not help. Nothing was created.
	Permanent Kind = iota + 1
	// RateLimited: 429. Nothing was created; retry after RetryAfter.
	RateLimited
	// Unavailable: 5xx, timeout or broken connection. Retry later; for a
	// create, the vendor may or may not have created the batch (Ambiguous).
	Unavailable
)

func (k Kind) String() string {
	switch k {
	case Permanent:
		return "permanent"
	case RateLimited:
		return "rate_limited"
	case Unavailable:
		return "unavailable"
	}
	return "unknown"
}

// Error is a classified vendor error.
type Error struct {
	Kind       Kind
	Op         string
	StatusCode int    // 0 when there was no HTTP answer
	Code       string // the vendor's error code, if any
	Message    string
	// RetryAfter is the vendor's Retry-After (0 if none).
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", e.Op, e.Kind)
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d", e.StatusCode)
		if e.Code != "" {
			fmt.Fprintf(&b, " %s", e.Code)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	} else if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable reports whether repeating the call later may succeed.
func (e *Error) Retryable() bool { return e.Kind == RateLimited || e.Kind == Unavailable }

// Ambiguous reports whether a create may have taken effect despite the error.
func (e *Error) Ambiguous() bool { return e.Kind == Unavailable }

// Classify returns err as an *Error (nil stays nil; a context cancellation
// of the caller's own ctx is returned as it is).
func Classify(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return err
	}
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		return httpError(op, apiErr.StatusCode, apiErr.Code, apiErr.Message, apiErr.Response, err)
	}
	var antErr *anthropic.Error
	if errors.As(err, &antErr) {
		raw := antErr.RawJSON()
		return httpError(op, antErr.StatusCode, gjson.Get(raw, "error.type").String(), gjson.Get(raw, "error.message").String(), antErr.Response, err)
	}
	// No HTTP answer: timeout, refused or dropped connection.
	return &Error{Op: op, Kind: Unavailable, Message: err.Error(), Err: err}
}

// httpError classifies a vendor's HTTP answer: 429 is RateLimited; 5xx
// (Anthropic's 529 overloaded included), 408 and 409 are Unavailable;
// other statuses are Permanent.
func httpError(op string, status int, code, msg string, res *http.Response, err error) *Error {
	e := &Error{Op: op, StatusCode: status, Code: code, Message: msg, Err: err}
	if res != nil {
		e.RetryAfter, _ = backoff.RetryAfter(res.Header, time.Now())
	}
	switch {
	case status == http.StatusTooManyRequests:
		e.Kind = RateLimited
	case status >= 500, status == http.StatusRequestTimeout, status == http.StatusConflict:
		e.Kind = Unavailable
	default:
		e.Kind = Permanent
	}
	return e
}

// AsError returns err's *Error, if it has one.
func AsError(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}
