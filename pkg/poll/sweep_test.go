package poll

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// sweepRig is a real JetStream, a real redis-server and the emulator
// behind an optional middleware, with batches created through the API.
type sweepRig struct {
	t      *testing.T
	nc     *nats.Conn
	js     jetstream.JetStream
	store  *jobstore.Store
	emu    *emulator.Emulator
	vendor *batchapi.Client
	locker *lock.Locker
}

func newSweepRig(t *testing.T, cfg emulator.Config, wrap func(http.Handler) http.Handler) *sweepRig {
	t.Helper()
	srvNATS := fleettest.StartNATS(t)
	nc, js := fleettest.Connect(t, srvNATS.URL())
	rds := fleettest.StartRedis(t)
	emu := emulator.New(cfg)
	t.Cleanup(emu.Close)
	var h http.Handler = emu
	if wrap != nil {
		h = wrap(emu)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx := t.Context()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{}, stream.Work, stream.Events))
	store, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(t, err)
	return &sweepRig{t: t, nc: nc, js: js, store: store, emu: emu,
		vendor: batchapi.New(batchapi.Config{APIKey: "sk-test", BaseURL: srv.URL + "/v1"}),
		locker: lock.New(rds.Client(t), lock.Options{})}
}

// create makes a one-request vendor batch; with key set it carries the
// fleet's metadata and a poll record, as a submitter leaves it.
func (r *sweepRig) create(key string) string {
	r.t.Helper()
	ctx := r.t.Context()
	line := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	file, err := r.vendor.Upload(ctx, "in.jsonl", []byte(line))
	require.NoError(r.t, err)
	p := batchapi.CreateParams{InputFileID: file, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"}
	if key != "" {
		p.Metadata = map[string]string{contract.MetaIdempotencyKey: key}
	}
	b, err := r.vendor.Create(ctx, p)
	require.NoError(r.t, err)
	if key != "" {
		require.NoError(r.t, r.store.PutPoll(ctx, &jobstore.Poll{BatchID: b.ID, JobKey: key, Key: key, Attempt: 1, CreatedAt: time.Now().UTC()}))
	}
	return b.ID
}

func (r *sweepRig) poller(interval time.Duration) *Poller {
	r.t.Helper()
	p, err := New(Deps{JS: r.js, Store: r.store, Vendor: r.vendor, Lister: r.vendor, Leader: r.locker, Logger: zerolog.Nop()},
		Config{SweepInterval: interval, InitialInterval: time.Minute, MaxInterval: time.Hour})
	require.NoError(r.t, err)
	return p
}

// handOffs collects the batch ids handed to the notifiers (FinalTask) and
// the batch.state.completed events, counting duplicates.
type handOffs struct {
	mu        sync.Mutex
	final     map[string]int
	completed map[string]int
}

func (h *handOffs) counts() (final, completed map[string]int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps(h.final), maps(h.completed)
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (r *sweepRig) watch() *handOffs {
	r.t.Helper()
	// Core subscriptions see every publish, also one JetStream would
	// de-duplicate: the counts are of attempts, stricter than of events.
	h := &handOffs{final: map[string]int{}, completed: map[string]int{}}
	for subject, into := range map[string]map[string]int{
		stream.SubjectFinal:                             h.final,
		contract.StateSubject(contract.StatusCompleted): h.completed,
	} {
		sub, err := r.nc.Subscribe(subject, func(m *nats.Msg) {
			var v struct {
				BatchID string `json:"batch_id"`
			}
			if json.Unmarshal(m.Data, &v) == nil {
				h.mu.Lock()
				into[v.BatchID]++
				h.mu.Unlock()
			}
		})
		require.NoError(r.t, err)
		r.t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(r.t, r.nc.Flush())
	return h
}

func runSweeper(t *testing.T, p *Poller) (stop func()) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.runSweeper(ctx) }()
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			require.NoError(t, <-done)
		})
	}
}

// The sweep alone, with no claim polling at all, detects every batch's
// completion from List pages, hands each off exactly once with one
// batch.state.completed, ignores a batch that is not the fleet's, and
// makes no per-batch GET. Once nothing is active its sweeps shrink to the
// first page.
func TestSweepDetectsCompletionsFromListPages(t *testing.T) {
	clock := &offsetClock{}
	r := newSweepRig(t, emulator.Config{Clock: clock}, nil)
	foreign := r.create("")
	const n = 150 // two pages
	ids := map[string]bool{}
	for i := range n {
		ids[r.create(fmt.Sprintf("sweep-%03d", i))] = true
	}
	h := r.watch()
	stop := runSweeper(t, r.poller(100*time.Millisecond))
	defer stop()

	fleettest.WaitFor(t, 60*time.Second, func() bool {
		final, completed := h.counts()
		return len(final) == n && len(completed) == n
	}, "every batch handed off by the sweep")
	// A newer batch two minutes on: the sweeps now stop on its page.
	clock.add(2 * time.Minute)
	r.create("")
	var rec *jobstore.Sweep
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		var err error
		rec, err = r.store.GetSweep(t.Context())
		return err == nil && rec.Active == 0 && rec.Pages == 1
	}, "an idle sweep lists one page")
	stop()

	final, completed := h.counts()
	for id := range ids {
		require.Equal(t, 1, final[id], "hand-offs of %s", id)
		require.Equal(t, 1, completed[id], "batch.state.completed of %s", id)
	}
	require.Zero(t, final[foreign], "a batch without the fleet's metadata is not touched")
	st := r.emu.Stats()
	require.Zero(t, st.CallsByOp[emulator.OpGet], "no per-batch GET")
	require.Positive(t, st.CallsByOp[emulator.OpList])
	require.True(t, rec.Ordered)
	require.True(t, rec.Fresh(time.Now()))
	for id := range ids {
		ps, err := r.store.GetPoll(t.Context(), id)
		require.NoError(t, err)
		require.True(t, ps.Final)
		require.True(t, ps.Swept, "the claims may rely on the sweep for this batch")
		require.Equal(t, contract.StatusCompleted, ps.Status)
		break
	}
	t.Logf("%d batches detected with %d List calls and no GET", n, st.CallsByOp[emulator.OpList])
}

// A list that is not newest first is used to detect changes, but the
// sweep record says so and covers no batch: the claims keep polling.
func TestSweepDistrustsAnUnorderedList(t *testing.T) {
	clock := &offsetClock{}
	reverse := rewriteList(func(page map[string]json.RawMessage, data []json.RawMessage) []json.RawMessage {
		for i, j := 0, len(data)-1; i < j; i, j = i+1, j-1 {
			data[i], data[j] = data[j], data[i]
		}
		return data
	})
	r := newSweepRig(t, emulator.Config{Clock: clock}, reverse)
	for i := range 3 {
		clock.add(10 * time.Second)
		r.create(fmt.Sprintf("unordered-%d", i))
	}
	h := r.watch()
	stop := runSweeper(t, r.poller(100*time.Millisecond))
	defer stop()
	var rec *jobstore.Sweep
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		var err error
		rec, err = r.store.GetSweep(t.Context())
		return err == nil
	}, "a sweep record")
	require.False(t, rec.Ordered)
	require.False(t, rec.Fresh(time.Now()), "an unordered sweep is never relied on")
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		final, _ := h.counts()
		return len(final) == 3
	}, "changes still detected")
}

// rewriteList is a middleware that lets fn rewrite every List page's data
// (and other fields of page) on its way from the emulator.
func rewriteList(fn func(page map[string]json.RawMessage, data []json.RawMessage) []json.RawMessage) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			if req.Method != http.MethodGet || req.URL.Path != "/v1/batches" {
				next.ServeHTTP(w, req)
				return
			}
			rec := httptest.NewRecorder()
			next.ServeHTTP(rec, req)
			var page map[string]json.RawMessage
			var data []json.RawMessage
			if json.Unmarshal(rec.Body.Bytes(), &page) != nil || json.Unmarshal(page["data"], &data) != nil {
				http.Error(w, "bad list page", http.StatusBadGateway)
				return
			}
			page["data"], _ = json.Marshal(fn(page, data))
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(page)
		})
	}
}

type offsetClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *offsetClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *offsetClock) add(d time.Duration) {
	c.mu.Lock()
	c.off += d
	c.mu.Unlock()
}

// Two pollers compete for the leadership: one sweeps at a time, and when
// the leader stops the other takes over.
func TestSweepLeadershipMovesWhenTheLeaderStops(t *testing.T) {
	r := newSweepRig(t, emulator.Config{InProgressFor: time.Hour}, nil)
	r.create("leader-job")
	a, b := r.poller(100*time.Millisecond), r.poller(100*time.Millisecond)
	stopA := runSweeper(t, a)
	var first *jobstore.Sweep
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		var err error
		first, err = r.store.GetSweep(t.Context())
		return err == nil && first.Active == 1
	}, "a first sweep")
	stopB := runSweeper(t, b)
	defer stopB()
	stopA() // releases the lock: b leads within one interval
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		rec, err := r.store.GetSweep(t.Context())
		return err == nil && rec.StartedAt.After(first.FinishedAt) && rec.Active == 1
	}, "sweeps go on under the other poller")
}

func TestNewerNeverGoesBack(t *testing.T) {
	st := func(status string, done int) *jobstore.Poll {
		return &jobstore.Poll{Status: status, Counts: contract.Counts{Total: 10, Completed: done}}
	}
	b := func(status string, done int) batchapi.Batch {
		return batchapi.Batch{Status: status, Counts: contract.Counts{Total: 10, Completed: done}}
	}
	for _, c := range []struct {
		st   *jobstore.Poll
		b    batchapi.Batch
		want bool
	}{
		{st("", 0), b(contract.StatusValidating, 0), true},
		{st(contract.StatusValidating, 0), b(contract.StatusInProgress, 0), true},
		{st(contract.StatusInProgress, 3), b(contract.StatusInProgress, 5), true},
		{st(contract.StatusInProgress, 5), b(contract.StatusInProgress, 5), false},
		{st(contract.StatusInProgress, 5), b(contract.StatusInProgress, 3), false},
		{st(contract.StatusInProgress, 5), b(contract.StatusValidating, 0), false},
		{st(contract.StatusFinalizing, 10), b(contract.StatusInProgress, 9), false},
		{st(contract.StatusFinalizing, 10), b(contract.StatusCompleted, 10), true},
		{st(contract.StatusInProgress, 4), b(contract.StatusCancelling, 4), true},
		{st(contract.StatusCancelling, 4), b(contract.StatusCancelled, 4), true},
		{st(contract.StatusCompleted, 10), b(contract.StatusFinalizing, 10), false},
		{st(contract.StatusFinalizing, 10), b(contract.StatusCancelling, 10), false},
	} {
		require.Equal(t, c.want, newer(c.st, c.b), "%s/%d -> %s/%d", c.st.Status, c.st.Counts.Completed, c.b.Status, c.b.Counts.Completed)
	}
}

// A vendor whose list leaves batches out (here: only the newest two, and
// "no more") cannot silence their claims: a claim relies on the sweep only
// once the sweep has listed its batch, so the three left out are still
// polled and handed off.
func TestClaimsPollWhatTheSweepDoesNotList(t *testing.T) {
	truncate := rewriteList(func(page map[string]json.RawMessage, data []json.RawMessage) []json.RawMessage {
		page["has_more"] = json.RawMessage("false")
		return data[:min(2, len(data))]
	})
	r := newSweepRig(t, emulator.Config{}, truncate)
	var ids []string
	for i := range 5 {
		ids = append(ids, r.create(fmt.Sprintf("truncated-%d", i)))
	}
	h := r.watch()
	p, err := New(Deps{JS: r.js, Store: r.store, Vendor: r.vendor, Lister: r.vendor, Leader: r.locker, Logger: zerolog.Nop()},
		// A safety net of 4 x MaxInterval = 4m: only the claims' own
		// polling can hand the left-out batches off within the wait below.
		Config{SweepInterval: 100 * time.Millisecond, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Minute})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		_, err := r.store.GetSweep(t.Context())
		return err == nil
	}, "a first sweep")
	for i, id := range ids {
		data, err := json.Marshal(stream.PollTask{BatchID: id, JobKey: fmt.Sprintf("truncated-%d", i), Key: fmt.Sprintf("truncated-%d", i), Attempt: 1})
		require.NoError(t, err)
		_, err = r.js.Publish(t.Context(), stream.SubjectPoll, data)
		require.NoError(t, err)
	}
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		final, _ := h.counts()
		return len(final) == len(ids)
	}, "every batch handed off")
	gets := r.emu.Stats().CallsByOp[emulator.OpGet]
	require.Positive(t, gets, "the batches the list left out were polled")
	t.Logf("%d GETs for the 3 batches the list left out", gets)
}
