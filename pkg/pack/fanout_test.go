package pack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/pack"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// fanoutFixture stores a pack's merged results (lines) and sidecar (ids).
type fanoutFixture struct {
	js  jetstream.JetStream
	st  *jobstore.Store
	ctx context.Context
}

func newFanoutFixture(t *testing.T) *fanoutFixture {
	n := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, n.URL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(t, err)
	return &fanoutFixture{js: js, st: st, ctx: ctx}
}

func (fx *fanoutFixture) store(t *testing.T, key string, lines []string, ids []string) *contract.Completed {
	var buf bytes.Buffer
	w := results.NewWriter(&buf)
	for _, s := range lines {
		l, err := results.ParseLine([]byte(s))
		require.NoError(t, err)
		require.NoError(t, w.Write(0, l))
	}
	n, err := w.Flush()
	require.NoError(t, err)
	_, err = fx.st.PutObject(fx.ctx, jobstore.BucketResults, key, &buf)
	require.NoError(t, err)
	var side strings.Builder
	for _, id := range ids {
		fmt.Fprintf(&side, `{"custom_id":%q,"metadata":{"id":%q}}`+"\n", id, id)
	}
	_, err = fx.st.PutObject(fx.ctx, jobstore.BucketIntake, pack.SidecarName(key), strings.NewReader(side.String()))
	require.NoError(t, err)
	return &contract.Completed{IdempotencyKey: key, Outcome: contract.OutcomePartial, BatchIDs: []string{"batch_1"},
		Results: &contract.ResultsRef{Store: "jetstream-object-store", Bucket: jobstore.BucketResults, Object: key, Lines: n}}
}

// events reads every batch.item.completed of the stream.
func (fx *fanoutFixture) events(t *testing.T) map[string][]contract.ItemCompleted {
	s, err := fx.js.Stream(fx.ctx, stream.Events)
	require.NoError(t, err)
	info, err := s.Info(fx.ctx)
	require.NoError(t, err)
	out := map[string][]contract.ItemCompleted{}
	if info.State.Msgs == 0 {
		return out
	}
	c, err := fx.js.OrderedConsumer(fx.ctx, stream.Events, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.SubjectItemCompleted}})
	require.NoError(t, err)
	b, err := c.Fetch(int(info.State.Msgs), jetstream.FetchMaxWait(2*time.Second))
	require.NoError(t, err)
	for m := range b.Messages() {
		var ev contract.ItemCompleted
		require.NoError(t, json.Unmarshal(m.Data(), &ev))
		out[ev.CustomID] = append(out[ev.CustomID], ev)
	}
	return out
}

const (
	okLine     = `{"id":"r1","custom_id":"a","response":{"status_code":200,"request_id":"q","body":{"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}},"error":null}`
	failLine   = `{"id":"r2","custom_id":"b","response":{"status_code":400,"request_id":"q","body":{"error":{"message":"bad","type":"invalid_request_error","code":"invalid_value"}}},"error":null}`
	expireLine = `{"id":"r3","custom_id":"c","response":null,"error":{"code":"batch_expired","message":"not run"}}`
)

// Each item of a pack gets one event: from its result line (succeeded,
// failed with the vendor's code, expired), or from the job's outcome when
// it has none; metadata comes from the sidecar. A second run publishes
// nothing.
func TestFanoutAnswersEveryItemOnce(t *testing.T) {
	fx := newFanoutFixture(t)
	f, err := pack.NewFanout(fx.ctx, fx.js, fx.st, zerolog.Nop(), pack.FanoutConfig{Chunk: 2})
	require.NoError(t, err)
	ev := fx.store(t, "pack-m-1", []string{okLine, failLine, expireLine}, []string{"a", "b", "c", "d"})
	n, err := f.Pack(fx.ctx, ev)
	require.NoError(t, err)
	require.Equal(t, 4, n)
	got := fx.events(t)
	require.Len(t, got, 4)
	for id, evs := range got {
		require.Len(t, evs, 1, id)
		require.Equal(t, map[string]string{"id": id}, evs[0].Metadata)
		require.Equal(t, "pack-m-1", evs[0].JobKey)
		require.Equal(t, "batch_1", evs[0].BatchID)
	}
	require.Equal(t, contract.OutcomeSucceeded, got["a"][0].Outcome)
	require.Equal(t, 200, got["a"][0].Response.StatusCode)
	require.Equal(t, &contract.Usage{InputTokens: 3, OutputTokens: 2, TotalTokens: 5}, got["a"][0].Usage)
	require.Equal(t, contract.OutcomeFailed, got["b"][0].Outcome)
	require.Equal(t, "invalid_value", got["b"][0].Error.Code)
	require.Equal(t, 400, got["b"][0].Response.StatusCode, "the vendor's error body is kept")
	require.Equal(t, contract.OutcomeExpired, got["c"][0].Outcome)
	require.Equal(t, contract.OutcomeFailed, got["d"][0].Outcome)
	require.Equal(t, "missing_result", got["d"][0].Error.Code)

	n, err = f.Pack(fx.ctx, ev)
	require.NoError(t, err)
	require.Zero(t, n, "a finished fan-out publishes nothing again")
	_, _, err = fx.st.OpenObject(fx.ctx, jobstore.BucketIntake, pack.SidecarName("pack-m-1"))
	require.ErrorIs(t, err, jobstore.ErrNotFound, "the sidecar is deleted once all are answered")
}

// A fan-out resumes after the last chunk recorded for the same results
// object, and starts over for a rewritten one.
func TestFanoutResumesAfterItsLastChunk(t *testing.T) {
	fx := newFanoutFixture(t)
	f, err := pack.NewFanout(fx.ctx, fx.js, fx.st, zerolog.Nop(), pack.FanoutConfig{Chunk: 2})
	require.NoError(t, err)
	ev := fx.store(t, "pack-m-2", []string{okLine, failLine, expireLine}, []string{"a", "b", "c"})
	obj, err := fx.js.ObjectStore(fx.ctx, jobstore.BucketResults)
	require.NoError(t, err)
	info, err := obj.GetInfo(fx.ctx, "pack-m-2")
	require.NoError(t, err)
	kv, err := fx.js.KeyValue(fx.ctx, pack.BucketPacks)
	require.NoError(t, err)
	_, err = kv.Create(fx.ctx, "fanout.pack-m-2", []byte("2@"+info.NUID))
	require.NoError(t, err)
	n, err := f.Pack(fx.ctx, ev)
	require.NoError(t, err)
	require.Equal(t, 1, n, "two of three were published by the run that recorded them")
	require.Len(t, fx.events(t), 1)

	ev = fx.store(t, "pack-m-3", []string{okLine, failLine, expireLine}, []string{"a", "b", "c"})
	_, err = kv.Create(fx.ctx, "fanout.pack-m-3", []byte("2@another-version"))
	require.NoError(t, err)
	n, err = f.Pack(fx.ctx, ev)
	require.NoError(t, err)
	require.Equal(t, 3, n, "a rewritten results object: from the start")
}
