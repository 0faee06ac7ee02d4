package poll

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

func TestDelay(t *testing.T) {
	p := &Poller{cfg: Config{InitialInterval: time.Second, MaxInterval: 30 * time.Second, Jitter: 1e-9}.WithDefaults()}
	p.rnd = newRand()
	for _, c := range []struct {
		status string
		since  int
		want   time.Duration
	}{
		{contract.StatusValidating, 0, time.Second},
		{contract.StatusInProgress, 1, 2 * time.Second},
		{contract.StatusInProgress, 3, 8 * time.Second},
		{contract.StatusInProgress, 5, 30 * time.Second}, // capped
		{contract.StatusInProgress, 500, 30 * time.Second},
		{contract.StatusFinalizing, 9, time.Second}, // fast while finalizing
	} {
		require.InDelta(t, float64(c.want), float64(p.Delay(c.status, c.since)), float64(time.Millisecond), "%+v", c)
	}
	fixed := &Poller{cfg: Config{InitialInterval: time.Second, MaxInterval: 30 * time.Second, Strategy: StrategyFixed}.WithDefaults()}
	fixed.rnd = newRand()
	require.Equal(t, time.Second, fixed.Delay(contract.StatusInProgress, 7))
}

// Jitter stays within +-20% and never exceeds the cap.
func TestDelayJitter(t *testing.T) {
	p := &Poller{cfg: Config{InitialInterval: time.Second, MaxInterval: 4 * time.Second}.WithDefaults()}
	p.rnd = newRand()
	for range 1000 {
		d := p.Delay(contract.StatusInProgress, 1)
		require.GreaterOrEqual(t, d, 1600*time.Millisecond)
		require.LessOrEqual(t, d, 2400*time.Millisecond)
		require.LessOrEqual(t, p.Delay(contract.StatusInProgress, 9), 4*time.Second)
	}
}

func TestETA(t *testing.T) {
	p := &Poller{cfg: Config{InitialInterval: time.Second, MaxInterval: 5 * time.Minute}.WithDefaults()}
	t0 := time.Unix(1000, 0)
	// 100 of 1000 done in 10s -> 900 left at 10 req/s -> 90s.
	d, ok := p.ETA(contract.Counts{Total: 1000}, t0, contract.Counts{Total: 1000, Completed: 90, Failed: 10}, t0.Add(10*time.Second))
	require.True(t, ok)
	require.Equal(t, 90*time.Second, d)
	// Nearly done: never below the initial interval.
	d, ok = p.ETA(contract.Counts{Total: 1000, Completed: 998}, t0, contract.Counts{Total: 1000, Completed: 999}, t0.Add(time.Millisecond))
	require.True(t, ok)
	require.Equal(t, time.Second, d)
	// Slow: capped at the max interval.
	d, _ = p.ETA(contract.Counts{Total: 1000}, t0, contract.Counts{Total: 1000, Completed: 1}, t0.Add(time.Hour))
	require.Equal(t, 5*time.Minute, d)
	// No progress, no rate.
	_, ok = p.ETA(contract.Counts{Total: 10, Completed: 3}, t0, contract.Counts{Total: 10, Completed: 3}, t0.Add(time.Second))
	require.False(t, ok)
	fixed := &Poller{cfg: Config{InitialInterval: time.Second, Strategy: StrategyFixed}.WithDefaults()}
	_, ok = fixed.ETA(contract.Counts{Total: 1000}, t0, contract.Counts{Total: 1000, Completed: 100}, t0.Add(time.Second))
	require.False(t, ok)
}
