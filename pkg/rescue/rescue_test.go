package rescue_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/admission"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/rescue"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

type handOff struct {
	subject string
	task    map[string]any
}

// handOffs reads every message of the Work stream.
func handOffs(t *testing.T, js jetstream.JetStream) []handOff {
	t.Helper()
	ctx := t.Context()
	s, err := js.Stream(ctx, stream.Work)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []handOff
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		var task map[string]any
		require.NoError(t, json.Unmarshal(m.Data, &task))
		out = append(out, handOff{m.Subject, task})
	}
	return out
}

// Scan re-drives each kind of stalled step once, and leaves alone what is
// done or still within its bound.
func TestScanRedrivesStalledSteps(t *testing.T) {
	ns := fleettest.StartNATS(t)
	rd := fleettest.StartRedis(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := t.Context()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{}, stream.Work))
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(t, err)
	now := time.Now().UTC()
	create := func(j *jobstore.Job) {
		t.Helper()
		require.NoError(t, st.Create(ctx, j))
	}
	create(&jobstore.Job{Key: "complete", Final: true, Outcome: "succeeded"})
	create(&jobstore.Job{Key: "done", Final: true, Completed: true})
	create(&jobstore.Job{Key: "collect", Attempts: []jobstore.Attempt{{Key: "collect", State: jobstore.AttemptSubmitted, BatchID: "batch_c"}}})
	require.NoError(t, st.PutPoll(ctx, &jobstore.Poll{BatchID: "batch_c", Final: true, ChangedAt: now}))
	create(&jobstore.Job{Key: "submit", Attempts: []jobstore.Attempt{
		{Key: "submit", State: jobstore.AttemptFinal, BatchID: "batch_s"},
		{N: 1, Key: "submit:retry-1", State: jobstore.AttemptPending, InputObject: "submit:retry-1", NotBefore: now,
			CreateStartedAt: now.Add(-2 * time.Second), CreateDeadline: now},
	}})
	create(&jobstore.Job{Key: "decide", Attempts: []jobstore.Attempt{{Key: "decide", State: jobstore.AttemptFinal, BatchID: "batch_d"}}})
	create(&jobstore.Job{Key: "cancel", CancelRequested: true,
		Attempts: []jobstore.Attempt{{Key: "cancel", State: jobstore.AttemptSubmitted, BatchID: "batch_x"}}})
	require.NoError(t, st.PutPoll(ctx, &jobstore.Poll{BatchID: "batch_x", Status: "in_progress", ChangedAt: now}))
	// A live attempt in its first request (its message is still in its
	// stream) and a due retry without a create mark (it may be waiting its
	// turn): neither is re-driven.
	create(&jobstore.Job{Key: "fresh", Attempts: []jobstore.Attempt{{Key: "fresh", State: jobstore.AttemptPending}}})
	create(&jobstore.Job{Key: "waiting", Attempts: []jobstore.Attempt{
		{Key: "waiting", State: jobstore.AttemptFinal, BatchID: "batch_w"},
		{N: 1, Key: "waiting:retry-1", State: jobstore.AttemptPending, InputObject: "waiting:retry-1", NotBefore: now},
	}})

	leader := lock.New(rd.Client(t), lock.Options{})
	later := func() time.Time { return time.Now().Add(time.Hour) }
	r, err := rescue.New(rescue.Deps{JS: js, Store: st, Leader: leader, Logger: zerolog.Nop(), Now: later}, rescue.Config{After: 5 * time.Minute})
	require.NoError(t, err)

	// Within the bound nothing moves.
	early, err := rescue.New(rescue.Deps{JS: js, Store: st, Leader: leader, Logger: zerolog.Nop()}, rescue.Config{After: 5 * time.Minute})
	require.NoError(t, err)
	n, err := early.Scan(ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Empty(t, handOffs(t, js))

	n, err = r.Scan(ctx)
	require.NoError(t, err)
	require.Equal(t, 5, n)
	got := map[string]handOff{}
	for _, h := range handOffs(t, js) {
		got[h.task["job_key"].(string)] = h
	}
	require.Len(t, got, 4)
	require.Equal(t, stream.SubjectFinal, got["complete"].subject)
	require.Equal(t, map[string]any{"job_key": "collect", "key": "collect", "batch_id": "batch_c"}, got["collect"].task)
	require.Equal(t, handOff{stream.SubjectSubmit, map[string]any{"job_key": "submit", "key": "submit:retry-1"}}, got["submit"])
	require.Equal(t, map[string]any{"job_key": "decide", "key": "decide", "batch_id": "batch_d"}, got["decide"].task)
	p, err := st.GetPoll(ctx, "batch_x")
	require.NoError(t, err)
	require.True(t, p.CancelRequested, "the cancel is on the batch's poll record for its claim")

	// Admission: a slot no live attempt holds is freed; a held one stays.
	adm, err := admission.Open(ctx, js, admission.Limits{MaxActive: 10}, 1)
	require.NoError(t, err)
	for _, key := range []string{"ghost", "held"} {
		ok, _, err := adm.Admit(ctx, key, "m", 1)
		require.NoError(t, err)
		require.True(t, ok)
	}
	create(&jobstore.Job{Key: "held", Attempts: []jobstore.Attempt{{Key: "held", State: jobstore.AttemptSubmitted, Admitted: true, BatchID: "batch_h"}}})
	r, err = rescue.New(rescue.Deps{JS: js, Store: st, Leader: leader, Slots: adm, Logger: zerolog.Nop(), Now: later}, rescue.Config{After: 5 * time.Minute})
	require.NoError(t, err)
	_, err = r.Scan(ctx)
	require.NoError(t, err)
	s, _, err := adm.Snapshot(ctx)
	require.NoError(t, err)
	require.Contains(t, s.Active, "held")
	require.NotContains(t, s.Active, "ghost")
}
