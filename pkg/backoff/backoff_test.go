package backoff_test

import (
	"math"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/batchfleet/batchfleet/pkg/backoff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		in   backoff.Policy
		want backoff.Policy
	}{
		{"zero", backoff.Policy{}, backoff.Policy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: 0.2}},
		{"kept", backoff.Policy{Initial: 2 * time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.5},
			backoff.Policy{Initial: 2 * time.Second, Max: time.Minute, Multiplier: 3, Jitter: 0.5}},
		{"no jitter survives", backoff.Policy{Jitter: backoff.NoJitter},
			backoff.Policy{Initial: time.Second, Max: 5 * time.Minute, Multiplier: 2, Jitter: backoff.NoJitter}},
		{"max follows large initial", backoff.Policy{Initial: time.Hour},
			backoff.Policy{Initial: time.Hour, Max: time.Hour, Multiplier: 2, Jitter: 0.2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.in.WithDefaults()
			require.Equal(t, tt.want, got)
			require.NoError(t, got.Validate())
		})
	}
}

func TestValidate(t *testing.T) {
	ok := backoff.Policy{}.WithDefaults()
	tests := []struct {
		name string
		mod  func(*backoff.Policy)
		want string
	}{
		{"initial", func(p *backoff.Policy) { p.Initial = 0 }, "Initial"},
		{"max below initial", func(p *backoff.Policy) { p.Max = p.Initial / 2 }, "Max"},
		{"multiplier", func(p *backoff.Policy) { p.Multiplier = 0.5 }, "Multiplier"},
		{"multiplier inf", func(p *backoff.Policy) { p.Multiplier = math.Inf(1) }, "Multiplier"},
		{"jitter", func(p *backoff.Policy) { p.Jitter = 1.5 }, "Jitter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := ok
			tt.mod(&p)
			require.ErrorContains(t, p.Validate(), tt.want)
		})
	}
}

func TestNextDeterministic(t *testing.T) {
	base := backoff.Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second, Multiplier: 2}
	tests := []struct {
		name    string
		p       backoff.Policy
		attempt int
		want    time.Duration
	}{
		{"attempt 0 is initial", base, 0, 100 * time.Millisecond},
		{"negative attempt is 0", base, -3, 100 * time.Millisecond},
		{"grows", base, 3, 800 * time.Millisecond},
		{"capped", base, 10, 10 * time.Second},
		{"huge attempt capped", base, 1 << 30, 10 * time.Second},
		{"multiplier below 1 is constant", backoff.Policy{Initial: time.Second, Max: time.Minute, Multiplier: 0.5}, 5, time.Second},
		{"fractional multiplier", backoff.Policy{Initial: time.Second, Max: time.Minute, Multiplier: 1.5}, 2, 2250 * time.Millisecond},
		{"no max is no cap", backoff.Policy{Initial: time.Second, Multiplier: 2}, 10, 1024 * time.Second},
		{"no max does not overflow", backoff.Policy{Initial: time.Second, Multiplier: 10}, 100, time.Duration(math.MaxInt64)},
		{"zero initial", backoff.Policy{Max: time.Second, Multiplier: 2}, 4, 0},
		{"nan multiplier", backoff.Policy{Initial: time.Second, Max: time.Minute, Multiplier: math.NaN()}, 3, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.p.Next(tt.attempt, nil))
			// Zero jitter ignores the random source.
			require.Equal(t, tt.want, tt.p.Next(tt.attempt, rand.New(rand.NewPCG(1, 2))))
		})
	}
}

func TestNextJitterBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	p := backoff.Policy{Initial: time.Second, Max: 20 * time.Second, Multiplier: 2, Jitter: 0.2}
	for attempt := range 8 {
		nominal := min(time.Second<<attempt, 20*time.Second)
		lo := time.Duration(float64(nominal) * 0.8)
		hi := min(time.Duration(float64(nominal)*1.2), p.Max)
		seen := map[time.Duration]bool{}
		for range 500 {
			d := p.Next(attempt, r)
			require.GreaterOrEqual(t, d, lo, "attempt %d", attempt)
			require.LessOrEqual(t, d, hi, "attempt %d", attempt)
			seen[d] = true
		}
		require.Greater(t, len(seen), 100, "attempt %d: jitter should spread delays", attempt)
	}
}

func TestNextFullJitterNeverNegative(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	p := backoff.Policy{Initial: time.Second, Max: 4 * time.Second, Multiplier: 2, Jitter: 5} // clamped to 1
	for attempt := range 5 {
		for range 200 {
			d := p.Next(attempt, r)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, p.Max)
		}
	}
}

func TestNextSameSeedSameDelays(t *testing.T) {
	p := backoff.Policy{}.WithDefaults()
	a, b := rand.New(rand.NewPCG(42, 42)), rand.New(rand.NewPCG(42, 42))
	for attempt := range 10 {
		require.Equal(t, p.Next(attempt, a), p.Next(attempt, b))
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
		wantOK bool
	}{
		{"none", nil, 0, false},
		{"seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second, true},
		{"fractional seconds", map[string]string{"Retry-After": "0.25"}, 250 * time.Millisecond, true},
		{"zero seconds", map[string]string{"Retry-After": "0"}, 0, true},
		{"spaces", map[string]string{"Retry-After": " 3 "}, 3 * time.Second, true},
		{"http date", map[string]string{"Retry-After": "Sun, 01 Jun 2025 12:00:42 GMT"}, 42 * time.Second, true},
		{"rfc850 date", map[string]string{"Retry-After": "Sunday, 01-Jun-25 12:01:00 GMT"}, time.Minute, true},
		{"asctime date", map[string]string{"Retry-After": "Sun Jun  1 12:00:10 2025"}, 10 * time.Second, true},
		{"past date", map[string]string{"Retry-After": "Sun, 01 Jun 2025 11:00:00 GMT"}, 0, true},
		{"negative", map[string]string{"Retry-After": "-5"}, 0, false},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0, false},
		{"inf", map[string]string{"Retry-After": "Inf"}, 0, false},
		{"overflow", map[string]string{"Retry-After": "1e300"}, 0, false},
		{"ms", map[string]string{"retry-after-ms": "1500"}, 1500 * time.Millisecond, true},
		{"fractional ms", map[string]string{"retry-after-ms": "20.5"}, 20500 * time.Microsecond, true},
		{"ms wins", map[string]string{"retry-after-ms": "200", "Retry-After": "1"}, 200 * time.Millisecond, true},
		{"bad ms falls back", map[string]string{"retry-after-ms": "x", "Retry-After": "2"}, 2 * time.Second, true},
		{"bad ms alone", map[string]string{"retry-after-ms": "-1"}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for k, v := range tt.header {
				h.Set(k, v)
			}
			got, ok := backoff.RetryAfter(h, now)
			require.Equal(t, tt.wantOK, ok)
			require.Equal(t, tt.want, got)
		})
	}
	got, ok := backoff.RetryAfter(nil, now)
	require.False(t, ok)
	require.Zero(t, got)
}

func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"1", "0.5", "Sun, 01 Jun 2025 12:00:42 GMT", "-1", "NaN", "1e400", ""} {
		f.Add(s, s)
	}
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ra, ms string) {
		h := http.Header{}
		h.Set("Retry-After", ra)
		h.Set("Retry-After-Ms", ms)
		d, ok := backoff.RetryAfter(h, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("RetryAfter(%q, %q) = %v, %v", ra, ms, d, ok)
		}
	})
}
