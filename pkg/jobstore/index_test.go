package jobstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

func keysIn(t *testing.T, st *jobstore.Store, state string) []string {
	t.Helper()
	var keys []string
	_, err := st.Scan(context.Background(), state, time.Time{}, func(e jobstore.IndexedEntry) error {
		keys = append(keys, e.Key)
		return nil
	})
	require.NoError(t, err)
	return keys
}

func TestIndexFollowsTheRecordAndTheTimelineRecordsEachChange(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	j := &jobstore.Job{Key: "job.1", Total: 4, Attempts: []jobstore.Attempt{{Key: "job.1", State: jobstore.AttemptPending, Count: 4, Model: "gpt-4o-mini"}}}
	require.NoError(t, st.Create(ctx, j))
	require.Equal(t, []string{"job.1"}, keysIn(t, st, jobstore.StateQueued))

	step := func(fn func(*jobstore.Job)) {
		_, err := st.Mutate(ctx, "job.1", func(j *jobstore.Job) error { fn(j); return nil })
		require.NoError(t, err)
	}
	step(func(j *jobstore.Job) {
		a := &j.Attempts[0]
		a.State, a.BatchID, a.Status = jobstore.AttemptSubmitted, "batch_1", contract.StatusValidating
	})
	require.Empty(t, keysIn(t, st, jobstore.StateQueued))
	require.Equal(t, []string{"job.1"}, keysIn(t, st, jobstore.StateSubmitted))
	step(func(j *jobstore.Job) {
		j.Attempts[0].Status, j.Attempts[0].Counts = contract.StatusInProgress, contract.Counts{Total: 4, Completed: 1}
	})
	require.Empty(t, keysIn(t, st, jobstore.StateSubmitted))
	require.Equal(t, []string{"job.1"}, keysIn(t, st, jobstore.StateActive))
	step(func(j *jobstore.Job) {
		a := &j.Attempts[0]
		a.State, a.Status, a.Counts = jobstore.AttemptFinal, contract.StatusCompleted, contract.Counts{Total: 4, Completed: 3, Failed: 1}
		j.Attempts = append(j.Attempts, jobstore.Attempt{N: 1, Key: "job.1:retry-1", State: jobstore.AttemptPending, Count: 1, Reason: "server_error"})
	})
	require.Equal(t, []string{"job.1"}, keysIn(t, st, jobstore.StateQueued), "a retry waiting for its batch is queued")
	step(func(j *jobstore.Job) {
		j.Attempts[1].State, j.Attempts[1].Status = jobstore.AttemptFinal, contract.StatusCompleted
		j.Final, j.Outcome, j.FinishedAt = true, contract.OutcomeSucceeded, time.Now().UTC()
		j.Counts = contract.Counts{Total: 4, Completed: 4}
	})
	require.Equal(t, []string{"job.1"}, keysIn(t, st, jobstore.StateEnding))
	step(func(j *jobstore.Job) { j.Completed = true })
	for _, s := range jobstore.OpenStates {
		require.Empty(t, keysIn(t, st, s), s)
	}
	var final []jobstore.IndexedEntry
	_, err := st.Scan(ctx, jobstore.StateFinal, time.Now().Add(-time.Hour), func(e jobstore.IndexedEntry) error {
		final = append(final, e)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, final, 1)
	require.Equal(t, contract.OutcomeSucceeded, final[0].Outcome)
	require.Equal(t, "gpt-4o-mini", final[0].Model)
	require.Equal(t, 4, final[0].Done)

	got, err := st.Get(ctx, "job.1")
	require.NoError(t, err)
	var kinds []string
	for _, e := range got.Timeline {
		kinds = append(kinds, e.Kind+":"+e.To)
	}
	require.Equal(t, []string{"created:", "submitted:", "state:validating", "state:in_progress", "state:completed", "ended:completed",
		"retry:", "state:completed", "ended:completed", "final:succeeded", "completed:succeeded"}, kinds)
}

func TestEachOpenRepairsStaleEntries(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "a", Attempts: []jobstore.Attempt{{Key: "a", State: jobstore.AttemptPending}}}))
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "b", Attempts: []jobstore.Attempt{{Key: "b", State: jobstore.AttemptPending}}}))
	// A stale entry for "a" in another state, as a writer that died
	// between its record and its index write would leave one.
	a, err := st.Get(ctx, "a")
	require.NoError(t, err)
	a.Attempts[0].State, a.Attempts[0].BatchID, a.Attempts[0].Status = jobstore.AttemptSubmitted, "batch_a", contract.StatusInProgress
	require.NoError(t, st.Update(ctx, a))
	require.NoError(t, st.Reindex(ctx, &jobstore.Job{Key: "a", Attempts: []jobstore.Attempt{{Key: "a", State: jobstore.AttemptPending}}}, ""))
	require.ElementsMatch(t, []string{"a", "b"}, keysIn(t, st, jobstore.StateQueued))

	var visited []string
	require.NoError(t, st.EachOpen(ctx, func(j *jobstore.Job) error {
		visited = append(visited, j.Key)
		return nil
	}))
	require.ElementsMatch(t, []string{"a", "b"}, visited, "each open job once")
	require.Equal(t, []string{"b"}, keysIn(t, st, jobstore.StateQueued), "the stale queued entry of a was dropped")
	require.Equal(t, []string{"a"}, keysIn(t, st, jobstore.StateActive))
}

func TestHourRollupIsRemadeWhenItsHourChanges(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	hour := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour)
	final := func(key string, d time.Duration, outcome string) {
		cost := 0.5
		fin := hour.Add(10 * time.Minute)
		require.NoError(t, st.Create(ctx, &jobstore.Job{Key: key, Final: true, Completed: true, Outcome: outcome,
			Counts: contract.Counts{Total: 2, Completed: 2}, CostUSD: &cost, CreatedAt: fin.Add(-d), FinishedAt: fin,
			Attempts: []jobstore.Attempt{{Key: key, State: jobstore.AttemptFinal, Model: "m"}}}))
	}
	final("a", 1500*time.Millisecond, contract.OutcomeSucceeded)
	final("b", 2*time.Minute, contract.OutcomePartial)

	r, read, ok, err := st.HourRollup(ctx, hour)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, 2, read, "made from the entries")
	require.Equal(t, 2, r.Entries)
	require.Equal(t, map[string]int{"succeeded": 1, "partial": 1}, r.Models["m"].ByOutcome)
	require.Equal(t, jobstore.Millis{1500, 120000}, r.Models["m"].Durations)
	require.InDelta(t, 1.0, r.Models["m"].CostUSD, 1e-12)

	r, read, _, err = st.HourRollup(ctx, hour)
	require.NoError(t, err)
	require.Zero(t, read, "the stored rollup is used")
	require.Equal(t, jobstore.Millis{1500, 120000}, r.Models["m"].Durations, "durations survive their encoding")

	final("c", time.Second, contract.OutcomeSucceeded) // a late arrival in the hour
	r, read, _, err = st.HourRollup(ctx, hour)
	require.NoError(t, err)
	require.Equal(t, 3, read, "remade: the hour holds another entry")
	require.Equal(t, 3, r.Models["m"].Jobs)

	_, _, ok, err = st.HourRollup(ctx, time.Now())
	require.NoError(t, err)
	require.False(t, ok, "the current hour is never rolled up")
}

// A create that finds the record already there leaves the index
// describing the record that exists, not the one that was not created.
func TestCreateOfAnExistingKeyKeepsItsEntry(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	now := time.Now().UTC()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "dup", Final: true, Completed: true, Outcome: contract.OutcomeSucceeded, FinishedAt: now}))
	err := st.Create(ctx, &jobstore.Job{Key: "dup", Attempts: []jobstore.Attempt{{Key: "dup", State: jobstore.AttemptPending}}})
	require.ErrorIs(t, err, jobstore.ErrExists)
	require.Empty(t, keysIn(t, st, jobstore.StateQueued), "no queued entry for a final job")
	require.Equal(t, []string{"dup"}, keysIn(t, st, jobstore.StateFinal))
}
