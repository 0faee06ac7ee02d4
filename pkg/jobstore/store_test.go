package jobstore_test

import (
	"context"
	"errors"
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
	in, err := st.Input(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "line\n", string(in))
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
