package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/ratelimit"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/submit"
)

// setupTimeout bounds each set-up call (stream creation, publishing the
// workload, opening a job store).
const setupTimeout = 30 * time.Second

// rig is one isolated environment for a scenario: an embedded JetStream
// server, a redis-server and the vendor emulator behind httptest. Every
// scenario gets a fresh one, so no run inherits another's streams, keys or
// batches.
type rig struct {
	nats    *fleettest.NATS
	nc      *nats.Conn
	js      jetstream.JetStream
	redis   *fleettest.Redis
	emu     *emulator.Emulator
	baseURL string // the emulator's /v1

	mu         sync.Mutex
	transports []*http.Transport
}

// newRig starts the servers; the emulator answers every /v1 call after
// latency. Batches stay "validating" for the whole run: the vendor's work
// is not this machine's, so the emulator only answers uploads and creates.
func newRig(b *testing.B, latency time.Duration) *rig {
	b.Helper()
	n := fleettest.StartNATS(b)
	nc, js := fleettest.Connect(b, n.URL())
	rd := fleettest.StartRedis(b)
	emu := emulator.New(emulator.Config{Logger: zerolog.Nop(), ValidatingFor: time.Hour})
	b.Cleanup(emu.Close)
	if err := emu.SetFaults(emulator.Faults{Latency: latency}); err != nil {
		b.Fatalf("set emulator latency: %v", err)
	}
	srv := httptest.NewServer(emu)
	b.Cleanup(srv.Close)
	r := &rig{nats: n, nc: nc, js: js, redis: rd, emu: emu, baseURL: srv.URL + "/v1"}
	// Runs before srv.Close: no client keeps a connection (and its
	// goroutines) open past the scenario.
	b.Cleanup(func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		for _, t := range r.transports {
			t.CloseIdleConnections()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Requests, stream.Work); err != nil {
		b.Fatalf("ensure streams: %v", err)
	}
	return r
}

// vendor returns a batchapi client of its own (own HTTP transport, as a
// separate process would have) pointed at the emulator.
func (r *rig) vendor() *batchapi.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	r.mu.Lock()
	r.transports = append(r.transports, t)
	r.mu.Unlock()
	return batchapi.New(batchapi.Config{APIKey: "bench", BaseURL: r.baseURL, HTTPClient: &http.Client{Transport: t}})
}

// submitter builds a submitter as fleet.Submitter does, with collaborators
// of its own (NATS connection, job store, Redis client, vendor client), as
// a separate submitter process would have. lim may be nil.
func (r *rig) submitter(b *testing.B, cfg submit.Config, lim func(*testing.B, *rig) *ratelimit.Limiter) *submit.Submitter {
	b.Helper()
	_, js := fleettest.Connect(b, r.nats.URL())
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	if err != nil {
		b.Fatalf("open job store: %v", err)
	}
	d := submit.Deps{
		JS: js, Store: st, Vendor: r.vendor(), Logger: zerolog.Nop(),
		Locker: lock.New(r.redis.Client(b), lock.Options{}),
	}
	if lim != nil {
		d.Limiter = lim(b, r) // set only when non-nil: a nil *Limiter in the interface is not "no limiter"
	}
	s, err := submit.New(d, cfg)
	if err != nil {
		b.Fatalf("new submitter: %v", err)
	}
	return s
}

// key is the idempotency key of request i of a scenario.
func key(scenario string, i int) string { return fmt.Sprintf("%s-%06d", scenario, i) }

// requestMsg is request i: one or two small chat completions.
func requestMsg(k string, i int) ([]byte, error) {
	body := func(q int) json.RawMessage {
		return json.RawMessage(fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"question %d of %s"}]}`, q, k))
	}
	items := []contract.RequestItem{{CustomID: "q-0", Body: body(0)}}
	if i%2 == 1 {
		items = append(items, contract.RequestItem{CustomID: "q-1", Body: body(1)})
	}
	return json.Marshal(contract.Request{IdempotencyKey: k, Requests: items})
}

// publishRequests publishes n requests to batch.requests and waits until
// the stream holds all of them.
func (r *rig) publishRequests(b *testing.B, scenario string, n int) {
	b.Helper()
	var futures []jetstream.PubAckFuture
	for i := range n {
		k := key(scenario, i)
		data, err := requestMsg(k, i)
		if err != nil {
			b.Fatalf("encode request: %v", err)
		}
		f, err := r.js.PublishAsync(contract.SubjectRequests, data, jetstream.WithMsgID(k))
		if err != nil {
			b.Fatalf("publish request %s: %v", k, err)
		}
		futures = append(futures, f)
	}
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(setupTimeout):
		b.Fatalf("publish %d requests: not acknowledged within %s", n, setupTimeout)
	}
	for _, f := range futures {
		select {
		case err := <-f.Err():
			b.Fatalf("publish request: %v", err)
		default:
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	s, err := r.js.Stream(ctx, stream.Requests)
	if err != nil {
		b.Fatalf("stream %s: %v", stream.Requests, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatalf("stream %s info: %v", stream.Requests, err)
	}
	if got := info.State.Msgs; got != uint64(n) {
		b.Fatalf("stream %s holds %d requests, want %d", stream.Requests, got, n)
	}
}

// handedOff counts the poll claims stored on batchfleet.poll: the
// submissions handed to the pollers.
func (r *rig) handedOff(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := r.js.Stream(ctx, stream.Work)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(stream.SubjectPoll))
	if err != nil {
		return 0, err
	}
	return int(info.State.Subjects[stream.SubjectPoll]), nil
}

// errRunnerStopped: a submitter or pipeline returned before the work was done.
var errRunnerStopped = errors.New("runner returned early")

// watchHandOffs subscribes to batchfleet.poll and returns a channel that
// receives each distinct claim's message id (a republish the stream
// de-duplicates is seen once): the event awaitHandedOff waits for. Call it
// before starting the runners; stop unsubscribes.
func (r *rig) watchHandOffs(b *testing.B, want int) (ids <-chan string, stop func()) {
	b.Helper()
	ch := make(chan string, want)
	seen := make(map[string]bool, want)
	sub, err := r.nc.Subscribe(stream.SubjectPoll, func(m *nats.Msg) {
		// One delivery goroutine per subscription: seen needs no lock.
		id := m.Header.Get(jetstream.MsgIDHeader)
		if seen[id] {
			return
		}
		seen[id] = true
		select {
		case ch <- id:
		default:
		}
	})
	if err != nil {
		b.Fatalf("subscribe %s: %v", stream.SubjectPoll, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		b.Fatalf("subscribe %s: %v", stream.SubjectPoll, err)
	}
	if err := r.nc.Flush(); err != nil {
		b.Fatalf("subscribe %s: %v", stream.SubjectPoll, err)
	}
	return ch, func() { _ = sub.Unsubscribe() }
}

// awaitHandedOff waits until want distinct claims were published on ids,
// then until the stream holds want of them (checking every 5ms: a publish
// is seen on the subject as the stream stores it), and returns the time it
// saw them stored. It gives up after timeout or when a runner reports on
// stopped.
func (r *rig) awaitHandedOff(ids <-chan string, want int, timeout time.Duration, stopped <-chan error) (time.Time, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	seen := 0
	for seen < want {
		select {
		case <-ids:
			seen++
		case err := <-stopped:
			return time.Time{}, fmt.Errorf("%w after %d of %d submissions: %v", errRunnerStopped, seen, want, err)
		case <-timer.C:
			return time.Time{}, fmt.Errorf("%d of %d submissions handed to the pollers within %s", seen, want, timeout)
		}
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n, err := r.handedOff(context.Background())
		if err == nil && n >= want {
			return time.Now(), nil
		}
		select {
		case err := <-stopped:
			return time.Time{}, fmt.Errorf("%w after %d of %d submissions stored: %v", errRunnerStopped, n, want, err)
		case <-timer.C:
			return time.Time{}, fmt.Errorf("%d of %d submissions stored on %s within %s (last error: %v)", n, want, stream.SubjectPoll, timeout, err)
		case <-tick.C:
		}
	}
}

// processCPU is the CPU time (user + system) this process has used: the
// embedded NATS server, the emulator and every client, but not the
// redis-server child.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure is one measured run.
type measure struct {
	elapsed time.Duration // from start to the last hand-off
	cpu     time.Duration // processCPU used meanwhile
}

// runFleet starts the submitters, waits until want submissions are handed
// to the pollers, stops them (cancels Run and waits for it to return) and
// measures from start to the last hand-off.
func (r *rig) runFleet(b *testing.B, subs []*submit.Submitter, want int, timeout time.Duration) measure {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, len(subs))
	ids, unwatch := r.watchHandOffs(b, want)
	defer unwatch()
	var wg sync.WaitGroup
	cpu0, start := processCPU(), time.Now()
	for _, s := range subs {
		wg.Go(func() { stopped <- s.Run(ctx) })
	}
	end, err := r.awaitHandedOff(ids, want, timeout, stopped)
	m := measure{elapsed: end.Sub(start), cpu: processCPU() - cpu0}
	cancel()
	wg.Wait()
	if err != nil {
		b.Fatalf("fleet: %v", err)
	}
	return m
}

// createTimes returns when the emulator created each batch, in order.
func (r *rig) createTimes() []time.Time {
	var ts []time.Time
	for _, bi := range r.emu.Batches() {
		ts = append(ts, bi.CreatedAt)
	}
	slices.SortFunc(ts, time.Time.Compare)
	return ts
}

// maxInWindow returns the largest number of sorted times ts within any
// half-open window [t, t+w).
func maxInWindow(ts []time.Time, w time.Duration) int {
	best, i := 0, 0
	for j := range ts {
		for ts[j].Sub(ts[i]) >= w {
			i++
		}
		best = max(best, j-i+1)
	}
	return best
}
