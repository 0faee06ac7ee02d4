// Package ratelimit is a fleet-wide rate limit shared through Redis: every
// process that builds a Limiter with the same name draws from one budget, so
// the fleet as a whole stays under a vendor's limit however many workers run.
//
// It wraps github.com/go-redis/redis_rate (GCRA, the generic cell rate
// algorithm, run as a Lua script on Redis's clock, so workers' clocks do not
// matter). With Limit{Rate: r, Per: p, Burst: b}, any window of length T sees
// at most b + r*T/p grants.
//
// The limiter fails closed: when Redis is unreachable, Allow and Wait return
// the error (wrapped) and the caller decides whether to proceed.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// KeyPrefix is prepended to a Limiter's name to form its Redis key (after
// redis_rate's own "rate:" prefix).
const KeyPrefix = "batchfleet:ratelimit:"

// callTimeout bounds each Redis call Wait makes.
const callTimeout = 5 * time.Second

// minWait keeps Wait from spinning on a zero RetryAfter.
const minWait = time.Millisecond

// Limit is a rate: Rate events per Per, with bursts of up to Burst events.
type Limit struct {
	// Rate is the number of events per Per. Zero (or less) means unlimited.
	Rate int
	// Per is the period Rate is counted over, such as time.Hour.
	Per time.Duration
	// Burst is how many events may happen at once after a quiet spell.
	// Zero means 1: events are spread evenly, one every Per/Rate.
	Burst int
}

// Unlimited reports whether l lets everything through.
func (l Limit) Unlimited() bool { return l.Rate <= 0 }

// String formats the rate and period as ParseLimit reads them: "2000/h",
// "50/s", "10/30s", "unlimited". Burst is not included.
func (l Limit) String() string {
	if l.Unlimited() {
		return "unlimited"
	}
	per := l.Per.String()
	switch l.Per {
	case time.Second:
		per = "s"
	case time.Minute:
		per = "m"
	case time.Hour:
		per = "h"
	}
	return strconv.Itoa(l.Rate) + "/" + per
}

// Validate reports a limit that cannot be enforced.
func (l Limit) Validate() error {
	if l.Unlimited() {
		return nil
	}
	if l.Per <= 0 {
		return fmt.Errorf("ratelimit: period must be positive, got %s", l.Per)
	}
	if l.Burst < 0 {
		return fmt.Errorf("ratelimit: burst must not be negative, got %d", l.Burst)
	}
	return nil
}

// ParseLimit reads the environment form of a Limit: "RATE/PERIOD" where
// PERIOD is s, m or h (also sec, min, hour, second, minute) or a Go duration
// such as 30s or 1m30s; "2000/h", "50/s", "100/m", "10/30s". "0" and
// "unlimited" (and a zero rate such as "0/s") mean no limit. Burst is left 0,
// which a Limiter treats as 1.
func ParseLimit(s string) (Limit, error) {
	in := strings.TrimSpace(s)
	switch strings.ToLower(in) {
	case "":
		return Limit{}, errors.New(`parse rate limit "": empty; want RATE/PERIOD such as "50/s" or "unlimited"`)
	case "0", "unlimited":
		return Limit{}, nil
	}
	rateStr, perStr, ok := strings.Cut(in, "/")
	if !ok {
		return Limit{}, fmt.Errorf("parse rate limit %q: want RATE/PERIOD such as \"2000/h\"", s)
	}
	rate, err := strconv.Atoi(strings.TrimSpace(rateStr))
	if err != nil || rate < 0 {
		return Limit{}, fmt.Errorf("parse rate limit %q: rate %q is not a non-negative integer", s, rateStr)
	}
	per, err := parsePeriod(strings.TrimSpace(perStr))
	if err != nil {
		return Limit{}, fmt.Errorf("parse rate limit %q: %w", s, err)
	}
	if rate == 0 {
		return Limit{}, nil
	}
	return Limit{Rate: rate, Per: per}, nil
}

func parsePeriod(s string) (time.Duration, error) {
	switch strings.ToLower(s) {
	case "s", "sec", "second":
		return time.Second, nil
	case "m", "min", "minute":
		return time.Minute, nil
	case "h", "hr", "hour":
		return time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("period %q is not s, m, h or a duration such as 30s", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("period %q must be positive", s)
	}
	return d, nil
}

// Limiter draws from the budget named by its name. Limiters with the same
// name on the same Redis share one budget, so give each limit its own name
// ("openai-batch-create"). It is safe for concurrent use.
type Limiter struct {
	name  string
	key   string
	limit Limit
	rl    *redis_rate.Limiter
}

// New returns a Limiter for name on rdb. It panics if rdb is nil or name is
// empty, or if limit fails Validate: both are programming or configuration
// errors to catch at startup (validate configured limits before calling New).
func New(rdb redis.UniversalClient, name string, limit Limit) *Limiter {
	if rdb == nil {
		panic("ratelimit.New: nil redis client")
	}
	if name == "" {
		panic("ratelimit.New: empty name")
	}
	if err := limit.Validate(); err != nil {
		panic("ratelimit.New: " + err.Error())
	}
	if !limit.Unlimited() {
		limit.Burst = max(limit.Burst, 1)
	}
	return &Limiter{
		name:  name,
		key:   KeyPrefix + name,
		limit: limit,
		rl:    redis_rate.NewLimiter(rdb),
	}
}

// Limit returns the limit in force, with Burst defaulted.
func (l *Limiter) Limit() Limit { return l.limit }

// Allow takes one event from the budget if there is room, without waiting.
// When it returns false, retryAfter is how long until an event would be
// allowed. An unlimited Limiter always allows and never calls Redis.
func (l *Limiter) Allow(ctx context.Context) (ok bool, retryAfter time.Duration, err error) {
	if l.limit.Unlimited() {
		return true, 0, nil
	}
	res, err := l.rl.Allow(ctx, l.key, redis_rate.Limit{
		Rate:   l.limit.Rate,
		Period: l.limit.Per,
		Burst:  l.limit.Burst,
	})
	if err != nil {
		return false, 0, fmt.Errorf("allow rate limit %q: %w", l.name, err)
	}
	if res.Allowed > 0 {
		return true, 0, nil
	}
	return false, max(res.RetryAfter, 0), nil
}

// Wait blocks until the budget grants an event or ctx is done, sleeping for
// the RetryAfter that Redis computes between attempts. It returns ctx.Err()
// if ctx ends first, and a Redis error wrapped (no event granted) if Redis
// fails: the caller decides whether to go ahead without the limiter.
func (l *Limiter) Wait(ctx context.Context) error {
	if l.limit.Unlimited() {
		return nil
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		callCtx, cancel := context.WithTimeout(ctx, callTimeout)
		ok, retryAfter, err := l.Allow(callCtx)
		cancel()
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			return err // already wrapped by Allow
		}
		if ok {
			return nil
		}
		wait := max(retryAfter, minWait)
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
	}
}
