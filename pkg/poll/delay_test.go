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
