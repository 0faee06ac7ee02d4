// Package backoff computes retry delays: exponential growth with a cap and
// proportional jitter, plus the server's own Retry-After hint.
//
// The package is pure: it never sleeps and never reads the wall clock. Callers
// pass the attempt number, an injected *rand.Rand (math/rand/v2) for jitter, and
// "now" for HTTP-date hints, so tests are deterministic.
//
// A typical retry loop takes the larger of the policy's delay and the server's
// hint:
//
//	d := policy.Next(attempt, rng)
//	if hint, ok := backoff.RetryAfter(resp.Header, clock.Now()); ok {
//		d = max(d, hint)
//	}
package backoff

import (
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Defaults filled in by WithDefaults.
const (
	DefaultInitial    = time.Second
	DefaultMax        = 5 * time.Minute
	DefaultMultiplier = 2.0
	DefaultJitter     = 0.2
)

// NoJitter disables jitter in a Policy that goes through WithDefaults, which
// cannot tell an explicit zero from an unset field. Next treats any Jitter <= 0
// as no jitter.
const NoJitter = -1.0

// maxDuration is the largest representable time.Duration.
const maxDuration = time.Duration(math.MaxInt64)

// Policy describes exponential backoff with jitter. The zero value is not
// useful on its own: call WithDefaults, or set every field.
type Policy struct {
	// Initial is the delay before the first retry (attempt 0). Defaults to 1s.
	Initial time.Duration
	// Max caps every delay, jitter included. Defaults to 5m. Next treats
	// Max <= 0 as no cap.
	Max time.Duration
	// Multiplier is the growth factor per attempt. Defaults to 2; Next treats
	// values below 1 as 1 (constant delay).
	Multiplier float64
	// Jitter is the fraction, in [0, 1], by which a delay is randomly moved up
	// or down: 0.2 gives a delay in [0.8d, 1.2d]. Defaults to 0.2; use NoJitter
	// to keep it off through WithDefaults.
	Jitter float64
}

// WithDefaults returns p with its zero fields set to the package defaults.
// It leaves a negative Jitter (NoJitter) alone.
func (p Policy) WithDefaults() Policy {
	if p.Initial == 0 {
		p.Initial = DefaultInitial
	}
	if p.Max == 0 {
		p.Max = max(DefaultMax, p.Initial)
	}
	if p.Multiplier == 0 {
		p.Multiplier = DefaultMultiplier
	}
	if p.Jitter == 0 {
		p.Jitter = DefaultJitter
	}
	return p
}

// Validate reports the first field that makes p unusable.
func (p Policy) Validate() error {
	switch {
	case p.Initial <= 0:
		return errors.New("backoff: Initial must be positive")
	case p.Max < p.Initial:
		return errors.New("backoff: Max must not be less than Initial")
	case p.Multiplier < 1 || math.IsNaN(p.Multiplier) || math.IsInf(p.Multiplier, 0):
		return errors.New("backoff: Multiplier must be a finite number >= 1")
	case p.Jitter > 1 || math.IsNaN(p.Jitter):
		return errors.New("backoff: Jitter must not exceed 1")
	}
	return nil
}

// Next returns the delay before retry number attempt (0 for the first retry):
// Initial * Multiplier^attempt, capped at Max, then moved by up to ±Jitter of
// itself using r, and finally clamped to [0, Max].
//
// Next uses the fields as given; call WithDefaults first for the documented
// defaults. A nil r disables jitter. r is not safe for concurrent use, so give
// each goroutine its own.
func (p Policy) Next(attempt int, r *rand.Rand) time.Duration {
	attempt = max(attempt, 0)
	limit := float64(maxDuration)
	if p.Max > 0 {
		limit = float64(p.Max)
	}
	mult := p.Multiplier
	if !(mult >= 1) || math.IsInf(mult, 0) { // also catches NaN
		mult = 1
	}

	d := float64(max(p.Initial, 0)) * math.Pow(mult, float64(attempt))
	if math.IsNaN(d) || d > limit {
		d = limit
	}

	if jitter := min(p.Jitter, 1); jitter > 0 && r != nil {
		d += d * jitter * (2*r.Float64() - 1)
	}
	return toDuration(min(max(d, 0), limit))
}

// toDuration converts nanoseconds to a Duration without overflowing:
// float64(math.MaxInt64) rounds up to 2^63, which does not fit.
func toDuration(ns float64) time.Duration {
	if ns >= float64(maxDuration) {
		return maxDuration
	}
	return time.Duration(ns)
}

// RetryAfter reads the server's retry hint from h. It prefers OpenAI's
// "retry-after-ms" (milliseconds, fractions allowed), then the standard
// "Retry-After" as delay-seconds (fractions allowed) or an HTTP-date, which is
// measured from now. A date in the past yields (0, true): the server allows a
// retry right away. Missing, negative or malformed values yield (0, false).
//
// RetryAfter does not bound the hint; callers that must not wait for long
// should cap it themselves.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	if h == nil {
		return 0, false
	}
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if d, ok := parseUnits(v, float64(time.Millisecond)); ok {
			return d, true
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if d, ok := parseUnits(v, float64(time.Second)); ok {
		return d, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parseUnits parses a non-negative decimal number of units into a Duration.
func parseUnits(s string, unit float64) (time.Duration, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f < 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	ns := f * unit
	if ns >= float64(maxDuration) {
		return 0, false
	}
	return time.Duration(ns), true
}
