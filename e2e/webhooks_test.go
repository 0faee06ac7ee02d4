package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// receiver is a webhook subscriber that verifies Standard Webhooks
// signatures with its own HMAC code (not the project's), and can refuse
// the first delivery of each webhook-id.
type receiver struct {
	t         *testing.T
	key       []byte
	failFirst bool

	mu       sync.Mutex
	attempts map[string]int
	events   chan delivered
}

type delivered struct {
	ID       string
	Type     string
	Data     json.RawMessage
	Attempts int
}

func newReceiver(t *testing.T, secret string, failFirst bool) *receiver {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	require.NoError(t, err)
	return &receiver{t: t, key: key, failFirst: failFirst, attempts: map[string]int{}, events: make(chan delivered, 100)}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id, ts, sigs := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp"), req.Header.Get("webhook-signature")
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(id + "." + ts + "." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	ok := false
	for _, s := range strings.Fields(sigs) {
		ok = ok || hmac.Equal([]byte(s), []byte(want))
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !ok || err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		r.t.Errorf("bad webhook signature: id=%q ts=%q sig=%q", id, ts, sigs)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.attempts[id]++
	n := r.attempts[id]
	r.mu.Unlock()
	if r.failFirst && n == 1 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	var env struct {
		Type      string          `json:"type"`
		Timestamp string          `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	require.NoError(r.t, json.Unmarshal(body, &env))
	_, err = time.Parse(time.RFC3339, env.Timestamp)
	require.NoError(r.t, err)
	if n == 1 || r.failFirst && n == 2 {
		r.events <- delivered{ID: id, Type: env.Type, Data: env.Data, Attempts: n}
	}
	w.WriteHeader(http.StatusNoContent)
}

func serve(t *testing.T, ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// Every batch.completed and batch.retry reaches a subscriber that refuses
// the first delivery, signed, after a retry; a subscriber that is down
// gets its events dead-lettered, and they replay once it is back.
func TestWebhooksSignedRetriedDeadLetteredReplayed(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	flaky := newReceiver(t, secret, true)
	lnA, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	serve(t, lnA, flaky)
	lnB, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	downAddr := lnB.Addr().String()
	require.NoError(t, lnB.Close()) // subscriber B is down
	urlA, urlB := "http://"+lnA.Addr().String()+"/hook", "http://"+downAddr+"/hook"

	f := startFleet(t, fleetOpts{WorkerEnv: []string{
		"WEBHOOK_URLS=" + urlA + "," + urlB, "WEBHOOK_SECRET=" + secret,
		"WEBHOOK_MAX_ATTEMPTS=3", "WEBHOOK_RETRY_INITIAL=200ms", "WEBHOOK_TIMEOUT=2s", "RETRY_BACKOFF=100ms",
	}})
	f.startAll()
	f.publish(contract.Request{IdempotencyKey: "hook-1", Requests: chatRequests("hook-1", 2)}, true)
	f.publish(contract.Request{IdempotencyKey: "hook-2", Requests: items("hook-2", 1, "fail-once", 1)}, true)
	// 2 batch.completed + 1 batch.retry, each delivered on the second attempt.
	got := fleettest.ReadN(t, flaky.events, 3, 90*time.Second)
	types := map[string]int{}
	for _, d := range got {
		require.Equal(t, 2, d.Attempts, d.ID)
		types[d.Type]++
		switch d.Type {
		case contract.SubjectCompleted:
			var ev contract.Completed
			require.NoError(t, json.Unmarshal(d.Data, &ev))
			require.Equal(t, contract.CompletedMsgID(ev.IdempotencyKey), d.ID, "webhook-id is the event's Nats-Msg-Id")
			require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
		case contract.SubjectRetry:
			var ev contract.Retry
			require.NoError(t, json.Unmarshal(d.Data, &ev))
			require.Equal(t, contract.RetryMsgID(ev.IdempotencyKey), d.ID)
		}
	}
	require.Equal(t, map[string]int{contract.SubjectCompleted: 2, contract.SubjectRetry: 1}, types)

	// B ran out of attempts for all three events: they are in the DLQ.
	ctx := context.Background()
	fleettest.WaitFor(t, 60*time.Second, func() bool {
		l, err := ops.ListDLQ(ctx, f.JS, contract.SubjectDLQWebhooks)
		return err == nil && len(l) == 3
	}, "three webhook dead letters for the down subscriber")
	// B comes back; the replay delivers every letter and empties the DLQ.
	back := newReceiver(t, secret, false)
	lnB, err = net.Listen("tcp", downAddr)
	require.NoError(t, err)
	serve(t, lnB, back)
	res, err := ops.ReplayWebhooks(ctx, f.JS, secret, urlB)
	require.NoError(t, err)
	require.Len(t, res, 3)
	for _, r := range res {
		require.Empty(t, r.Error)
	}
	ids := map[string]bool{}
	for _, d := range fleettest.ReadN(t, back.events, 3, 10*time.Second) {
		ids[d.ID] = true
	}
	require.Len(t, ids, 3)
	left, err := ops.ListDLQ(ctx, f.JS, contract.SubjectDLQWebhooks)
	require.NoError(t, err)
	require.Empty(t, left)
}
