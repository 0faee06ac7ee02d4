package jobstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

func TestSweepFreshness(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	quick := &jobstore.Sweep{StartedAt: t0, FinishedAt: t0.Add(time.Second), Interval: 10 * time.Second, Ordered: true}
	require.True(t, quick.Fresh(t0.Add(25*time.Second)))
	require.False(t, quick.Fresh(t0.Add(27*time.Second)), "2 x 10s + 5s after it finished")

	long := *quick
	long.FinishedAt = t0.Add(time.Minute) // took longer than its interval
	require.True(t, long.Fresh(t0.Add(time.Minute+2*time.Minute)))
	require.False(t, long.Fresh(t0.Add(time.Minute+2*time.Minute+6*time.Second)))

	beating := *quick
	beating.Heartbeat = t0.Add(time.Hour)
	require.True(t, beating.Fresh(t0.Add(time.Hour+20*time.Second)), "the next sweep is progressing")

	unordered := *quick
	unordered.Ordered = false
	require.False(t, unordered.Fresh(t0.Add(2*time.Second)))
	var none *jobstore.Sweep
	require.False(t, none.Fresh(t0))
}

func TestSweepCovers(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	all := &jobstore.Sweep{}
	require.True(t, all.Covers(t0), "reached the end of the list")
	partial := &jobstore.Sweep{CoversFrom: t0}
	require.True(t, partial.Covers(t0.Add(2*time.Minute)))
	require.False(t, partial.Covers(t0.Add(30*time.Second)), "within the minute of clock margin")
	require.False(t, partial.Covers(t0.Add(-time.Hour)))
}
