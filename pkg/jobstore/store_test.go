package jobstore_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

func open(t *testing.T) (*jobstore.Store, *fleettest.NATS) {
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	st, err := jobstore.Open(context.Background(), js, jobstore.Settings{})
	require.NoError(t, err)
	return st, ns
}

func TestCreateIsExclusive(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "a.b:c"}))
	err := st.Create(ctx, &jobstore.Job{Key: "a.b:c"})
	require.ErrorIs(t, err, jobstore.ErrExists)
	j, err := st.Get(ctx, "a.b:c")
	require.NoError(t, err)
	require.Equal(t, "a.b:c", j.Key)
	_, err = st.Get(ctx, "missing")
	require.ErrorIs(t, err, jobstore.ErrNotFound)
}

// A stale record cannot overwrite a newer one: the revision is the fence.
func TestUpdateIsCompareAndSet(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "k"}))
	a, _ := st.Get(ctx, "k")
	b, _ := st.Get(ctx, "k")
	a.Outcome = "first"
	require.NoError(t, st.Update(ctx, a))
	b.Outcome = "second"
	require.ErrorIs(t, st.Update(ctx, b), jobstore.ErrConflict)
	got, _ := st.Get(ctx, "k")
	require.Equal(t, "first", got.Outcome)
}

// Concurrent Mutates never lose an increment.
func TestMutateSerialises(t *testing.T) {
	st, _ := open(t)
	ctx := context.Background()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "k"}))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10 {
				_, err := st.Mutate(ctx, "k", func(j *jobstore.Job) error { j.Total++; return nil })
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	j, _ := st.Get(ctx, "k")
	require.Equal(t, 80, j.Total)
	// ErrNoChange leaves the record as it is.
	before := j.Revision
	_, err := st.Mutate(ctx, "k", func(*jobstore.Job) error { return jobstore.ErrNoChange })
	require.NoError(t, err)
	j, _ = st.Get(ctx, "k")
	require.Equal(t, before, j.Revision)
	boom := errors.New("boom")
	_, err = st.Mutate(ctx, "k", func(*jobstore.Job) error { return boom })
	require.ErrorIs(t, err, boom)
}

// Records, polls and objects survive a restart of the NATS server.
func TestDurableAcrossRestart(t *testing.T) {
	st, ns := open(t)
	ctx := context.Background()
	require.NoError(t, st.Create(ctx, &jobstore.Job{Key: "k", Total: 5}))
	require.NoError(t, st.PutPoll(ctx, &jobstore.Poll{BatchID: "batch_1", Status: "in_progress"}))
	require.NoError(t, st.PutInput(ctx, "k", []byte("line\n")))
	ns.Restart(t)
	fleettest.WaitFor(t, 10*time.Second, func() bool {
		_, err := st.Get(ctx, "k")
		return err == nil
	}, "job store readable after restart")
	j, err := st.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, 5, j.Total)
	p, err := st.GetPoll(ctx, "batch_1")
	require.NoError(t, err)
	require.Equal(t, "in_progress", p.Status)
	rc, size, err := st.OpenObject(ctx, jobstore.BucketInputs, "k")
	require.NoError(t, err)
	in, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, "line\n", string(in))
	require.Equal(t, int64(5), size)
	p.Status = "completed"
	stale := *p
	require.NoError(t, st.PutPoll(ctx, p))
	require.ErrorIs(t, st.PutPoll(ctx, &stale), jobstore.ErrConflict)
}

func TestKVKey(t *testing.T) {
	require.Equal(t, "a=2Eb=3Ac-d_e", jobstore.KVKey("a.b:c-d_e"))
	require.Equal(t, "plain", jobstore.KVKey("plain"))
	require.NotEqual(t, jobstore.KVKey("a.b"), jobstore.KVKey("a:b"))
}

// TestObjects streams objects in and out of every bucket, replaces one
// while it is being read (the notifier rewrites merged results from their
// previous version), and reports missing objects as ErrNotFound.
func TestObjects(t *testing.T) {
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := context.Background()
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(t, err)
	for _, b := range []string{jobstore.BucketInputs, jobstore.BucketResults, jobstore.BucketIntake} {
		data := strings.Repeat("0123456789\n", 50_000) // several chunks
		n, err := st.PutObject(ctx, b, "o", strings.NewReader(data))
		require.NoError(t, err)
		require.Equal(t, int64(len(data)), n)

		rc, size, err := st.OpenObject(ctx, b, "o")
		require.NoError(t, err)
		require.Equal(t, n, size)
		// Replace it from its own stream: the old chunks go only once the
		// new object is complete.
		n2, err := st.PutObject(ctx, b, "o", io.MultiReader(rc, strings.NewReader("more\n")))
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, n+5, n2)
		rc, _, err = st.OpenObject(ctx, b, "o")
		require.NoError(t, err)
		got, err := io.ReadAll(rc)
		require.NoError(t, err)
		require.NoError(t, rc.Close())
		require.Equal(t, data+"more\n", string(got))

		require.NoError(t, st.DeleteObject(ctx, b, "o"))
		require.NoError(t, st.DeleteObject(ctx, b, "o"), "deleting a missing object is no error")
		_, _, err = st.OpenObject(ctx, b, "o")
		require.ErrorIs(t, err, jobstore.ErrNotFound)
	}
	_, _, err = st.OpenObject(ctx, "nope", "o")
	require.ErrorContains(t, err, "unknown object store bucket")
}
