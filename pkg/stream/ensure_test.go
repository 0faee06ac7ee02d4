package stream_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// Declaring what the server already holds sends no update (a worker's
// start must not rewrite a stream a peer is creating consumers on); a
// changed setting does.
func TestEnsureUpdatesOnlyOnChange(t *testing.T) {
	ns := fleettest.StartNATS(t)
	nc, js := fleettest.Connect(t, ns.URL())
	ctx := t.Context()
	updates := make(chan *nats.Msg, 64)
	sub, err := nc.ChanSubscribe("$JS.EVENT.ADVISORY.STREAM.UPDATED.>", updates)
	require.NoError(t, err)
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	require.NoError(t, nc.Flush())

	kvCfg := jetstream.KeyValueConfig{Bucket: "ensure_kv", Description: "d", TTL: time.Hour, History: 1, Storage: jetstream.FileStorage}
	objCfg := jetstream.ObjectStoreConfig{Bucket: "ensure_obj", Description: "d", TTL: time.Hour, Storage: jetstream.FileStorage}
	declare := func(s stream.Settings) {
		require.NoError(t, stream.Ensure(ctx, js, s, stream.Requests, stream.Cancels, stream.Events, stream.DLQ, stream.Work))
		_, err := stream.EnsureKeyValue(ctx, js, kvCfg)
		require.NoError(t, err)
		_, err = stream.EnsureObjectStore(ctx, js, objCfg)
		require.NoError(t, err)
	}
	for range 3 {
		declare(stream.Settings{})
	}
	require.NoError(t, nc.Flush())
	select {
	case m := <-updates:
		t.Fatalf("an unchanged declaration updated a stream: %s", m.Subject)
	case <-time.After(200 * time.Millisecond):
	}

	// Changed settings are applied.
	kvCfg.TTL, objCfg.TTL = 2*time.Hour, 2*time.Hour
	declare(stream.Settings{EventsMaxAge: 48 * time.Hour})
	got := map[string]bool{}
	for len(got) < 3 {
		select {
		case m := <-updates:
			got[m.Subject] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("updates seen: %v", got)
		}
	}
	require.True(t, got["$JS.EVENT.ADVISORY.STREAM.UPDATED."+stream.Events], "%v", got)
	require.True(t, got["$JS.EVENT.ADVISORY.STREAM.UPDATED.KV_ensure_kv"], "%v", got)
	require.True(t, got["$JS.EVENT.ADVISORY.STREAM.UPDATED.OBJ_ensure_obj"], "%v", got)
	kv, err := js.KeyValue(ctx, "ensure_kv")
	require.NoError(t, err)
	st, err := kv.Status(ctx)
	require.NoError(t, err)
	require.Equal(t, 2*time.Hour, st.TTL())
}

// The operator CLI declares streams without knowing the fleet's settings:
// an existing stream keeps them (EVENTS_MAX_AGE of 30 days is not reset
// to the 7-day default), a missing one is created.
func TestEnsureMissingKeepsTheFleetsSettings(t *testing.T) {
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := t.Context()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{EventsMaxAge: 30 * 24 * time.Hour}, stream.Events))
	require.NoError(t, stream.EnsureMissing(ctx, js, stream.Settings{}, stream.Events, stream.Items))
	s, err := js.Stream(ctx, stream.Events)
	require.NoError(t, err)
	require.Equal(t, 30*24*time.Hour, s.CachedInfo().Config.MaxAge, "the fleet's EVENTS_MAX_AGE is kept")
	_, err = js.Stream(ctx, stream.Items)
	require.NoError(t, err, "a missing stream is created")
}
