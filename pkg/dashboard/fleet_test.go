package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/devfleet"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/presence"
	"github.com/batchfleet/batchfleet/pkg/webhook"
)

// The jobs the fleet is given, one per page state the dashboard shows.
const (
	keyOK        = "dash.ok:1"      // succeeded (a key with '.' and ':')
	keyPartial   = "dash-partial_1" // partial: one request fails with 400, never retried
	keyFailed    = "dash-failed"    // failed: the vendor fails the batch at validation
	keyInvalid   = "dash-invalid"   // failed and dead-lettered: no requests
	keyRunning   = "dash-running"   // stays in_progress: a never-finish request
	keyCancelled = "dash-cancel"    // stays in_progress until the test cancels it
)

// A hostile metadata value: the pages must show it as text.
const hostile = `<script>alert("x")</script>`

// webhookSecret signs the fleet's webhooks and the dashboard's replays.
const webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// fixture is a running fleet with the jobs above published.
type fixture struct {
	JS    jetstream.JetStream
	Store *jobstore.Store
	Hook  *receiver
}

// receiver is a webhook subscriber that fails every delivery until OK is set.
type receiver struct {
	*httptest.Server
	OK        atomic.Bool
	Delivered atomic.Int64
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	key, err := webhook.ParseSecret(webhookSecret)
	require.NoError(t, err)
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if !r.OK.Load() {
			http.Error(w, "subscriber down", http.StatusServiceUnavailable)
			return
		}
		if err := webhook.Verify(key, req.Header, body, time.Hour, time.Now()); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Delivered.Add(1)
	}))
	t.Cleanup(r.Close)
	return r
}

// syncBuffer keeps the fleet's log for a failing test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(b.buf.String()), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// startFleet runs the dev fleet (embedded JetStream, a redis-server
// child, the vendor emulator and one worker of each kind) with fast
// emulator timings and one webhook subscriber that is down.
func startFleet(t *testing.T) *fixture {
	hook := newReceiver(t)
	env := map[string]string{
		"EMULATOR_VALIDATING_FOR": "100ms", "EMULATOR_IN_PROGRESS_FOR": "300ms", "EMULATOR_FINALIZING_FOR": "100ms",
		"POLL_INITIAL_INTERVAL": "100ms", "POLL_MAX_INTERVAL": "500ms",
		"WEBHOOK_URLS": hook.URL, "WEBHOOK_SECRET": webhookSecret, "WEBHOOK_MAX_ATTEMPTS": "1",
	}
	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan devfleet.Addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- devfleet.Run(ctx, devfleet.Options{
			DataDir: t.TempDir(), NATSAddr: "127.0.0.1:-1", EmulatorAddr: "127.0.0.1:0", Log: logs,
			Env:   func(k string) (string, bool) { v, ok := env[k]; return v, ok },
			Ready: func(a devfleet.Addrs) { ready <- a },
		})
	}()
	var a devfleet.Addrs
	select {
	case a = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("dev fleet did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("dev fleet did not start in 30s")
	}
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-errc)
		if t.Failed() {
			t.Logf("fleet log (last lines):\n%s", logs.tail(60))
		}
	})
	_, js := fleettest.Connect(t, a.NATSURL)
	store, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(t, err)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		ws, err := presence.List(ctx, js)
		return err == nil && len(ws) == 3
	}, "the three workers announce themselves")
	return &fixture{JS: js, Store: store, Hook: hook}
}

func chatRequests(prefix string, n int) []contract.RequestItem {
	out := make([]contract.RequestItem, n)
	for i := range out {
		out[i] = contract.RequestItem{
			CustomID: fmt.Sprintf("%s-%d", prefix, i),
			Body:     json.RawMessage(fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"request %d of %s"}]}`, i, prefix)),
		}
	}
	return out
}

// seed publishes one job of each kind and waits until each is where the
// pages should show it: four final (with their webhooks dead-lettered),
// two running.
func (f *fixture) seed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reqs := []contract.Request{
		{IdempotencyKey: keyOK, Requests: chatRequests("ok", 3), Metadata: map[string]string{"team": "evals", "note": hostile}},
		{IdempotencyKey: keyPartial, Requests: append(chatRequests("partial-ok", 2), chatRequests("partial-fail-400", 1)...)},
		{IdempotencyKey: keyFailed, Requests: []contract.RequestItem{
			{CustomID: "a", Body: json.RawMessage(`{"model":"gpt-4o-mini","messages":[]}`)},
			{CustomID: "b", Body: json.RawMessage(`{"messages":[]}`)}, // no model: the vendor fails the batch
		}},
		{IdempotencyKey: keyInvalid}, // no requests: dead-lettered, ends failed
		{IdempotencyKey: keyRunning, Requests: append(chatRequests("run-ok", 1), chatRequests("run-never-finish", 1)...)},
		{IdempotencyKey: keyCancelled, Requests: chatRequests("cancel-never-finish", 2)},
	}
	for _, r := range reqs {
		require.NoError(t, ops.Publish(ctx, f.JS, r), r.IdempotencyKey)
	}
	want := map[string]string{keyOK: contract.OutcomeSucceeded, keyPartial: contract.OutcomePartial,
		keyFailed: contract.OutcomeFailed, keyInvalid: contract.OutcomeFailed}
	for key, outcome := range want {
		ev, err := ops.WaitCompleted(ctx, f.JS, key)
		require.NoError(t, err, key)
		require.Equal(t, outcome, ev.Outcome, key)
	}
	for _, key := range []string{keyRunning, keyCancelled} {
		fleettest.WaitFor(t, 30*time.Second, func() bool {
			j, err := f.Store.Get(ctx, key)
			return err == nil && jobstore.StateOf(j) == jobstore.StateActive
		}, key+" runs")
	}
	// Each batch.completed went to the subscriber that is down, once.
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		dls, err := ops.ListDLQ(ctx, f.JS, contract.SubjectDLQWebhooks)
		return err == nil && len(dls) >= len(want)
	}, "the webhooks of the finished jobs are dead-lettered")
}
