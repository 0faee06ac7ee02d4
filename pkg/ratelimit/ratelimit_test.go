package ratelimit_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ratelimit"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

func TestParseLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    ratelimit.Limit
		wantErr string
	}{
		{"2000/h", ratelimit.Limit{Rate: 2000, Per: time.Hour}, ""},
		{"50/s", ratelimit.Limit{Rate: 50, Per: time.Second}, ""},
		{"100/m", ratelimit.Limit{Rate: 100, Per: time.Minute}, ""},
		{" 5 / min ", ratelimit.Limit{Rate: 5, Per: time.Minute}, ""},
		{"7/Hour", ratelimit.Limit{Rate: 7, Per: time.Hour}, ""},
		{"10/30s", ratelimit.Limit{Rate: 10, Per: 30 * time.Second}, ""},
		{"3/1m30s", ratelimit.Limit{Rate: 3, Per: 90 * time.Second}, ""},
		{"0", ratelimit.Limit{}, ""},
		{"unlimited", ratelimit.Limit{}, ""},
		{"0/s", ratelimit.Limit{}, ""},
		{"", ratelimit.Limit{}, "empty"},
		{"50", ratelimit.Limit{}, "want RATE/PERIOD"},
		{"x/s", ratelimit.Limit{}, `rate "x" is not a non-negative integer`},
		{"-1/s", ratelimit.Limit{}, `rate "-1" is not a non-negative integer`},
		{"1.5/s", ratelimit.Limit{}, "not a non-negative integer"},
		{"5/fortnight", ratelimit.Limit{}, `period "fortnight" is not s, m, h or a duration`},
		{"5/", ratelimit.Limit{}, `period "" is not`},
		{"5/0s", ratelimit.Limit{}, `period "0s" must be positive`},
		{"5/-1s", ratelimit.Limit{}, "must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ratelimit.ParseLimit(tt.in)
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
				require.ErrorContains(t, err, "parse rate limit")
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.NoError(t, got.Validate())
		})
	}
}

func TestLimitStringRoundTrips(t *testing.T) {
	t.Parallel()
	for _, l := range []ratelimit.Limit{
		{Rate: 2000, Per: time.Hour},
		{Rate: 50, Per: time.Second},
		{Rate: 100, Per: time.Minute},
		{Rate: 10, Per: 30 * time.Second},
		{},
	} {
		got, err := ratelimit.ParseLimit(l.String())
		require.NoError(t, err, l.String())
		require.Equal(t, l, got, l.String())
	}
	require.Equal(t, "unlimited", ratelimit.Limit{}.String())
	require.Equal(t, "2000/h", ratelimit.Limit{Rate: 2000, Per: time.Hour, Burst: 9}.String())
}

func TestValidateAndNewPanics(t *testing.T) {
	t.Parallel()
	require.ErrorContains(t, ratelimit.Limit{Rate: 1}.Validate(), "period must be positive")
	require.ErrorContains(t, ratelimit.Limit{Rate: 1, Per: time.Second, Burst: -1}.Validate(), "burst")
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	require.PanicsWithValue(t, "ratelimit.New: nil redis client", func() { ratelimit.New(nil, "x", ratelimit.Limit{}) })
	require.PanicsWithValue(t, "ratelimit.New: empty name", func() { ratelimit.New(rdb, "", ratelimit.Limit{}) })
	require.Panics(t, func() { ratelimit.New(rdb, "x", ratelimit.Limit{Rate: 1}) })
	require.Equal(t, 1, ratelimit.New(rdb, "x", ratelimit.Limit{Rate: 5, Per: time.Second}).Limit().Burst, "burst defaults to 1")
}

func TestUnlimitedNeverCallsRedis(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1: any Redis call would fail.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	l := ratelimit.New(rdb, "free", ratelimit.Limit{})
	ctx := context.Background()
	for range 100 {
		ok, retry, err := l.Allow(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Zero(t, retry)
		require.NoError(t, l.Wait(ctx))
	}
}

func TestAllowBurstThenRetryAfter(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	l := ratelimit.New(r.Client(t), "burst", ratelimit.Limit{Rate: 5, Per: time.Second, Burst: 3})
	ctx := context.Background()
	for i := range 3 {
		ok, _, err := l.Allow(ctx)
		require.NoError(t, err)
		require.True(t, ok, "burst event %d", i)
	}
	ok, retry, err := l.Allow(ctx)
	require.NoError(t, err)
	require.False(t, ok)
	require.Greater(t, retry, time.Duration(0))
	require.LessOrEqual(t, retry, 200*time.Millisecond, "one emission interval at most")

	// Another name has its own budget.
	other := ratelimit.New(r.Client(t), "other", ratelimit.Limit{Rate: 5, Per: time.Second, Burst: 3})
	ok, _, err = other.Allow(ctx)
	require.NoError(t, err)
	require.True(t, ok)

	// Wait sleeps the RetryAfter and then gets the event.
	start := time.Now()
	require.NoError(t, l.Wait(ctx))
	require.Less(t, time.Since(start), 2*time.Second)
}

func TestWaitHonoursContext(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	l := ratelimit.New(r.Client(t), "slow", ratelimit.Limit{Rate: 1, Per: time.Hour})
	require.NoError(t, l.Wait(context.Background()))

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := l.Wait(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second, "Wait must not sleep the full hour")

	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	require.ErrorIs(t, l.Wait(canceled), context.Canceled)
}

func TestRedisDownReturnsError(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	// No retries, so the test does not wait out go-redis's dial backoff.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	l := ratelimit.New(rdb, "down", ratelimit.Limit{Rate: 10, Per: time.Second})
	r.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	ok, _, err := l.Allow(ctx)
	require.False(t, ok)
	require.ErrorContains(t, err, `allow rate limit "down"`)

	err = l.Wait(ctx)
	require.Error(t, err, "fails closed")
	require.NotErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorContains(t, err, `allow rate limit "down"`)
}

// TestSharedBudgetNeverExceeded runs many goroutines over two Limiters (as
// two processes would have, each with its own client) sharing one budget, and
// checks that no one-second window holds more than Rate+Burst grants.
func TestSharedBudgetNeverExceeded(t *testing.T) {
	t.Parallel()
	const (
		rate    = 10
		burst   = 3
		workers = 8
		run     = 2500 * time.Millisecond
	)
	r := fleettest.StartRedis(t)
	limit := ratelimit.Limit{Rate: rate, Per: time.Second, Burst: burst}
	limiters := []*ratelimit.Limiter{
		ratelimit.New(r.Client(t), "shared", limit),
		ratelimit.New(r.Client(t), "shared", limit),
	}

	ctx, cancel := context.WithTimeout(context.Background(), run)
	defer cancel()
	var (
		mu     sync.Mutex
		grants []time.Time
		errs   []error
		wg     sync.WaitGroup
	)
	start := time.Now()
	for i := range workers {
		l := limiters[i%len(limiters)]
		wg.Go(func() {
			for {
				err := l.Wait(ctx)
				mu.Lock()
				if err == nil {
					grants = append(grants, time.Now())
				} else if ctx.Err() == nil {
					errs = append(errs, err)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	require.Empty(t, errs)

	slices.SortFunc(grants, func(a, b time.Time) int { return a.Compare(b) })
	most, j := 0, 0
	for i := range grants {
		for grants[i].Sub(grants[j]) >= time.Second {
			j++
		}
		most = max(most, i-j+1)
	}
	t.Logf("%d grants in %s; busiest 1s window: %d (limit %d)", len(grants), elapsed.Round(time.Millisecond), most, rate+burst)
	require.LessOrEqual(t, most, rate+burst)
	require.LessOrEqual(t, len(grants), burst+int(elapsed.Seconds()*rate)+1)
	require.GreaterOrEqual(t, len(grants), rate, "the limiter must let work through")
}
