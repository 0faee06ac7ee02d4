package packbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/bench/benchfmt"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/pack"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

const (
	// procs is how many packers, consumers, publishers and fan-outs run
	// side by side: two processes of a kind.
	procs = 2
	// fetchBatch is the bare consumer's pull size: the packer's
	// PACK_CONCURRENCY default, the most its consume loop fetches at once.
	fetchBatch = 256
	// ackWindow is the bare publisher's acks pending: the fan-out's chunk.
	ackWindow = 1000
	// packRequests is PACK_MAX_REQUESTS of the rate run (step 2).
	packRequests = 10_000
	// targetRatio is the goal: a rate at least half the bare one.
	targetRatio = 0.5
	// targetGrowth bounds the packer heap's growth from the smallest to
	// the largest pack, as a share of the item bytes the largest packs
	// hold beyond the smallest (what keeping the lines in memory would add).
	targetGrowth = 0.25
	// runTimeout bounds every timed wait.
	runTimeout = 3 * time.Minute
)

// memoryRequests are the PACK_MAX_REQUESTS of the memory runs (step 5).
var memoryRequests = []int{2_500, 10_000, 50_000}

// figures are what the steps measured, for the table.
type figures struct {
	n           int
	bareConsume measure
	packers     packRun
	barePublish measure
	fanout      measure
	memory      map[int]packRun
}

// packRun is one run of the packers.
type packRun struct {
	m     measure
	stats pack.Stats
	heap  uint64 // peak HeapInuse above the base, when sampled
	// clientHeap is the peak live heap (at a GC) allocated outside the
	// NATS server's code above the base, when sampled.
	clientHeap uint64
	// staged is when every item was staged (routed), since the start.
	staged time.Duration
}

// BenchmarkPack measures single requests in (batch.items into closed
// packs) and out (batch.item.completed from pack results) beside the bare
// JetStream rates, and the packer's memory at three pack sizes.
func BenchmarkPack(b *testing.B) {
	f := figures{n: envInt(b, "BENCH_PACK_ITEMS", 100_000), memory: map[int]packRun{}}
	n := f.n
	b.Run("1-bare-consume", func(b *testing.B) {
		f.bareConsume = bareConsume(b, n)
		report(b, f.bareConsume, "msgs/s")
	})
	b.Run(fmt.Sprintf("2-packers/max=%d", packRequests), func(b *testing.B) {
		f.packers = runPackers(b, n, packRequests, false)
		report(b, f.packers.m, "items/s")
		b.ReportMetric(float64(f.packers.stats.Packs), "packs")
	})
	b.Run("3-bare-publish", func(b *testing.B) {
		f.barePublish = barePublish(b, n)
		report(b, f.barePublish, "msgs/s")
	})
	b.Run("4-fanout", func(b *testing.B) {
		f.fanout = fanout(b, n)
		report(b, f.fanout, "events/s")
	})
	for _, maxReq := range memoryRequests {
		b.Run(fmt.Sprintf("5-memory/max=%d", maxReq), func(b *testing.B) {
			r := runPackers(b, n, maxReq, true)
			f.memory[maxReq] = r
			report(b, r.m, "items/s")
			b.ReportMetric(float64(r.heap)/(1<<20), "heap-MiB")
			b.ReportMetric(float64(r.clientHeap)/(1<<20), "client-heap-MiB")
		})
	}
	b.Logf("single requests, N = %s items, %d of each worker, %d CPUs:\n%s", thousands(n), procs, runtime.NumCPU(), f.table())
}

// report sets a step's metrics; ns/op, meaningless for a one-shot step,
// is suppressed.
func report(b *testing.B, m measure, unit string) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(m.rate(), unit)
	if m.n > 0 {
		b.ReportMetric(float64(m.cpu.Microseconds())/float64(m.n), "cpu-us/item")
	}
}

func (f *figures) table() string {
	t := benchfmt.Table{Header: []string{"measure", "value", "cpu/item", "target"}}
	rate := func(m measure, unit string) string {
		if m.n == 0 {
			return "-"
		}
		return fmt.Sprintf("%s %s (%.2f s)", thousands(int(m.rate())), unit, m.elapsed.Seconds())
	}
	ratio := func(num, den measure) (string, string) {
		if num.n == 0 || den.n == 0 {
			return "-", "-"
		}
		r := num.rate() / den.rate()
		cpu := (float64(num.cpu) / float64(num.n)) / (float64(den.cpu) / float64(den.n))
		return fmt.Sprintf("%.0f%% (CPU per item %.1f× the bare)", 100*r, cpu),
			fmt.Sprintf("≥ %.0f%%: %s", 100*targetRatio, verdict(r >= targetRatio))
	}
	t.Add("1. bare JetStream consume+ack (work queue, 1 durable, 2 clients, fetch 256, ack each)",
		rate(f.bareConsume, "msgs/s"), f.bareConsume.cpuPerItem(), "")
	t.Add(fmt.Sprintf("2. packers: batch.items → closed packs (2 packers, 2 models, PACK_MAX_REQUESTS %s)", thousands(packRequests)),
		rate(f.packers.m, "items/s"), f.packers.m.cpuPerItem(), "")
	t.Add("· packs closed", fmt.Sprint(f.packers.stats.Packs), "", "")
	t.Add("· every item staged (routed to its group) at", fmt.Sprintf("%.2f s", f.packers.staged.Seconds()), "", "")
	v, target := ratio(f.packers.m, f.bareConsume)
	t.Add("· packers / bare consume (in)", v, "", target)
	t.Add("3. bare JetStream publish (BATCH_EVENTS, 400-byte events with Nats-Msg-Id, 2 publishers, 1,000 acks pending each)",
		rate(f.barePublish, "msgs/s"), f.barePublish.cpuPerItem(), "")
	t.Add("4. fan-out: batch.item.completed out (2 packs of N/2, 2 fan-outs in parallel, chunk 1,000)",
		rate(f.fanout, "events/s"), f.fanout.cpuPerItem(), "")
	v, target = ratio(f.fanout, f.barePublish)
	t.Add("· fan-out / bare publish (out)", v, "", target)
	for _, maxReq := range memoryRequests {
		r, ok := f.memory[maxReq]
		val, rt := "-", "-"
		if ok {
			val, rt = fmt.Sprintf("%s process heap; %s outside nats-server", mib(r.heap), mib(r.clientHeap)), rate(r.m, "items/s")
		}
		t.Add(fmt.Sprintf("5. packer memory: peak heap above start, PACK_MAX_REQUESTS %s (%d packs, %s)", thousands(maxReq), r.stats.Packs, rt),
			val, r.m.cpuPerItem(), "")
	}
	lo, okLo := f.memory[memoryRequests[0]]
	hi, okHi := f.memory[memoryRequests[len(memoryRequests)-1]]
	if okLo && okHi {
		// Two groups each fill one open pack: keeping its lines in memory
		// would add this many bytes at the largest pack over the smallest.
		held := float64(len(models)*(memoryRequests[len(memoryRequests)-1]-memoryRequests[0])) * itemBytes
		growth := func(name string, lo, hi uint64) {
			g := float64(hi) - float64(lo)
			t.Add(fmt.Sprintf("· growth %s → %s items per pack, %s", thousands(memoryRequests[0]), thousands(memoryRequests[len(memoryRequests)-1]), name),
				fmt.Sprintf("%+.1f MiB", g/(1<<20)), "",
				fmt.Sprintf("< %.0f%% of the %.1f MiB the bigger packs' lines take: %s", 100*targetGrowth, held/(1<<20), verdict(g < targetGrowth*held)))
		}
		growth("process heap (HeapInuse)", lo.heap, hi.heap)
		growth("outside nats-server (packers and clients)", lo.clientHeap, hi.clientHeap)
	}
	return t.String() + `
cpu/item: this process's CPU time per item (NATS server, packers, clients; not redis-server).
Step 5: "process heap" is the peak HeapInuse (sampled every 5ms) above its value before the packers start;
the embedded NATS server shares the process, so it includes the server's stream and object store caches.
"outside nats-server" is the peak live heap (heap profile, every 100ms) of allocations whose stack has no
nats-server function: the packers, the NATS and Redis clients.
`
}

// publishItems publishes items 1..n on batch.items (models alternating),
// each under Nats-Msg-Id = custom_id, as `batchfleet items publish` does.
func publishItems(b *testing.B, nc *nats.Conn, n int) {
	b.Helper()
	err := publishAll(b.Context(), nc, 1, n+1, 4000, func(i int) *nats.Msg {
		return &nats.Msg{Subject: contract.SubjectItems, Data: itemJSON(i, models[i%len(models)])}
	}, customID)
	if err != nil {
		b.Fatalf("publish items: %v", err)
	}
}

// publishAll async-publishes mk(i) under Nats-Msg-Id id(i) for i in
// [from, to) with at most window acks pending, and waits for every ack.
func publishAll(ctx context.Context, nc *nats.Conn, from, to, window int, mk func(i int) *nats.Msg, id func(i int) string) error {
	var failed atomic.Int64
	var first atomic.Pointer[error]
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(window),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			failed.Add(1)
			first.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return err
	}
	for i := from; i < to; i++ {
		if _, err := js.PublishMsgAsync(mk(i), jetstream.WithMsgID(id(i)), jetstream.WithStallWait(runTimeout)); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(runTimeout):
		return fmt.Errorf("%d acks pending after %s", js.PublishAsyncPending(), runTimeout)
	}
	if k := failed.Load(); k > 0 {
		return fmt.Errorf("%d of %d publishes failed, the first: %w", k, to-from, *first.Load())
	}
	return nil
}

// streamMsgs is how many messages the named stream holds.
func streamMsgs(b *testing.B, js jetstream.JetStream, name string) uint64 {
	b.Helper()
	s, err := js.Stream(b.Context(), name)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(b.Context())
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}

// bareConsume is step 1: n items on BATCH_ITEMS taken by procs clients
// of one durable pull consumer (the packers' settings), acked one by one.
func bareConsume(b *testing.B, n int) measure {
	ns := fleettest.StartNATS(b)
	nc, js := fleettest.Connect(b, ns.URL())
	ctx := b.Context()
	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Items); err != nil {
		b.Fatal(err)
	}
	publishItems(b, nc, n)
	cfg := jetstream.ConsumerConfig{Durable: "bare", AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxAckPending: 4 * fetchBatch, MaxDeliver: -1}
	if _, err := stream.EnsureConsumer(ctx, js, stream.Items, cfg); err != nil {
		b.Fatal(err)
	}
	var conns []*nats.Conn
	var cons []jetstream.Consumer
	for range procs {
		c, cjs := fleettest.Connect(b, ns.URL())
		cons1, err := cjs.Consumer(ctx, stream.Items, cfg.Durable)
		if err != nil {
			b.Fatal(err)
		}
		cons = append(cons, cons1)
		conns = append(conns, c)
	}
	var acked atomic.Int64
	all := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	stop := timer(n)
	for _, c := range cons {
		g.Go(func() error {
			for acked.Load() < int64(n) && gctx.Err() == nil {
				batch, err := c.Fetch(fetchBatch, jetstream.FetchMaxWait(time.Second))
				if err != nil {
					return err
				}
				for m := range batch.Messages() {
					if err := m.Ack(); err != nil {
						return err
					}
					if acked.Add(1) == int64(n) {
						close(all)
					}
				}
				if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
					return err
				}
			}
			return nil
		})
	}
	select {
	case <-all:
	case <-gctx.Done():
	case <-time.After(runTimeout):
	}
	for _, c := range conns {
		if err := c.Flush(); err != nil { // the acks have reached the server
			b.Fatal(err)
		}
	}
	m := stop()
	if err := g.Wait(); err != nil {
		b.Fatalf("bare consume: %v", err)
	}
	if got := acked.Load(); got != int64(n) {
		b.Fatalf("bare consume: %d of %d acked within %s", got, n, runTimeout)
	}
	fleettest.WaitFor(b, 10*time.Second, func() bool { return streamMsgs(b, js, stream.Items) == 0 }, "the work queue empties once every item is acked")
	return m
}

// runPackers is steps 2 and 5: n items on batch.items packed by procs
// packers into packs of at most maxRequests, timed until every item is in
// a closed pack; with sampleMem, the Go heap is sampled meanwhile.
func runPackers(b *testing.B, n, maxRequests int, sampleMem bool) packRun {
	ns := fleettest.StartNATS(b)
	rd := fleettest.StartRedis(b)
	nc, js := fleettest.Connect(b, ns.URL())
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Items); err != nil {
		b.Fatal(err)
	}
	publishItems(b, nc, n)
	var packers []*pack.Packer
	for range procs {
		_, pjs := fleettest.Connect(b, ns.URL())
		st, err := jobstore.Open(ctx, pjs, jobstore.Settings{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := pack.New(ctx, pack.Deps{JS: pjs, Store: st, Redis: rd.Client(b), Leader: lock.New(rd.Client(b), lock.Options{}), Logger: zerolog.Nop()},
			pack.Config{MaxRequests: maxRequests, MaxAge: time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		packers = append(packers, p)
	}
	sum := func() pack.Stats {
		var s pack.Stats
		for _, p := range packers {
			ps := p.Stats()
			s.Staged += ps.Staged
			s.Rejected += ps.Rejected
			s.Duplicates += ps.Duplicates
			s.Packed += ps.Packed
			s.Packs += ps.Packs
		}
		return s
	}
	var heap *heapSampler
	if sampleMem {
		heap = sampleHeap(5*time.Millisecond, 100*time.Millisecond)
	}
	var r packRun
	stop, t0 := timer(n), time.Now()
	runErr := make(chan error, len(packers))
	for _, p := range packers {
		go func() { runErr <- p.Run(ctx) }()
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(runTimeout)
	var failed error
wait:
	for {
		s := sum()
		if r.staged == 0 && s.Staged >= int64(n) {
			r.staged = time.Since(t0)
		}
		if s.Packed >= int64(n) {
			break
		}
		select {
		case <-tick.C:
		case err := <-runErr:
			failed = fmt.Errorf("a packer stopped: %v", err)
			runErr <- err // counted again below
			break wait
		case <-deadline:
			failed = fmt.Errorf("not every item packed within %s", runTimeout)
			break wait
		}
	}
	r.m = stop()
	if heap != nil {
		r.heap, r.clientHeap = heap.Stop()
	}
	r.stats = sum()
	cancel()
	for range packers {
		if err := <-runErr; err != nil && !errors.Is(err, context.Canceled) && failed == nil {
			failed = fmt.Errorf("packer: %w", err)
		}
	}
	if failed != nil {
		b.Fatalf("packers, PACK_MAX_REQUESTS %d: %v (stats %+v)", maxRequests, failed, r.stats)
	}
	if want := (pack.Stats{Staged: int64(n), Packed: int64(n), Packs: r.stats.Packs}); r.stats != want {
		b.Fatalf("packers, PACK_MAX_REQUESTS %d: stats %+v, want %+v", maxRequests, r.stats, want)
	}
	return r
}

// barePublish is step 3: n event-sized messages with Nats-Msg-Id
// async-published to BATCH_EVENTS by procs publishers, each with up to
// ackWindow acks pending.
func barePublish(b *testing.B, n int) measure {
	ns := fleettest.StartNATS(b)
	_, js := fleettest.Connect(b, ns.URL())
	ctx := b.Context()
	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Events); err != nil {
		b.Fatal(err)
	}
	data := make([][]byte, n+1)
	for i := 1; i <= n; i++ {
		data[i] = eventJSON(i)
	}
	var conns []*nats.Conn
	for range procs {
		c, _ := fleettest.Connect(b, ns.URL())
		conns = append(conns, c)
	}
	var g errgroup.Group
	stop := timer(n)
	for k, c := range conns {
		from, to := 1+k*n/procs, 1+(k+1)*n/procs
		g.Go(func() error {
			return publishAll(ctx, c, from, to, ackWindow, func(i int) *nats.Msg {
				return &nats.Msg{Subject: contract.SubjectItemCompleted, Data: data[i]}
			}, func(i int) string { return contract.ItemCompletedMsgID(customID(i)) })
		})
	}
	err := g.Wait()
	m := stop()
	if err != nil {
		b.Fatalf("bare publish: %v", err)
	}
	if got := streamMsgs(b, js, stream.Events); got != uint64(n) {
		b.Fatalf("bare publish: %d messages stored, want %d", got, n)
	}
	return m
}

// fanout is step 4: procs packs of n/procs items, their merged results
// and sidecars stored, fanned out by procs pack.Fanouts at once.
func fanout(b *testing.B, n int) measure {
	ns := fleettest.StartNATS(b)
	_, js := fleettest.Connect(b, ns.URL())
	ctx := b.Context()
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	if err != nil {
		b.Fatal(err)
	}
	var events []*contract.Completed
	for k := range procs {
		from, to := 1+k*n/procs, 1+(k+1)*n/procs
		key := fmt.Sprintf("%sgpt-4o-mini-bench-%d", contract.PackKeyPrefix, from)
		var res, side bytes.Buffer
		w := results.NewWriter(&res)
		for i := from; i < to; i++ {
			l, err := results.ParseLine(vendorLine(i))
			if err != nil {
				b.Fatal(err)
			}
			if err := w.Write(0, l); err != nil {
				b.Fatal(err)
			}
			side.Write(sidecarLine(i))
		}
		lines, err := w.Flush()
		if err != nil {
			b.Fatal(err)
		}
		name := key + ".results.jsonl"
		if _, err := st.PutObject(ctx, jobstore.BucketResults, name, &res); err != nil {
			b.Fatal(err)
		}
		if _, err := st.PutObject(ctx, jobstore.BucketIntake, pack.SidecarName(key), &side); err != nil {
			b.Fatal(err)
		}
		events = append(events, &contract.Completed{IdempotencyKey: key, Outcome: contract.OutcomeSucceeded,
			BatchIDs: []string{"batch_x"}, RequestCounts: contract.Counts{Total: lines, Completed: lines},
			Results: &contract.ResultsRef{Store: "jetstream-object-store", Bucket: jobstore.BucketResults, Object: name, Lines: lines}})
	}
	var fos []*pack.Fanout
	for range procs {
		_, fjs := fleettest.Connect(b, ns.URL())
		fst, err := jobstore.Open(ctx, fjs, jobstore.Settings{})
		if err != nil {
			b.Fatal(err)
		}
		fo, err := pack.NewFanout(ctx, fjs, fst, zerolog.Nop(), pack.FanoutConfig{})
		if err != nil {
			b.Fatal(err)
		}
		fos = append(fos, fo)
	}
	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Events); err != nil {
		b.Fatal(err)
	}
	before := streamMsgs(b, js, stream.Events)
	published := make([]int, procs)
	g, gctx := errgroup.WithContext(ctx)
	stop := timer(n)
	for k, fo := range fos {
		g.Go(func() (err error) {
			published[k], err = fo.Pack(gctx, events[k])
			return err
		})
	}
	err = g.Wait()
	m := stop()
	if err != nil {
		b.Fatalf("fan-out: %v", err)
	}
	for k, ev := range events {
		if published[k] != ev.Results.Lines {
			b.Fatalf("fan-out of %s: %d events published, want %d", ev.IdempotencyKey, published[k], ev.Results.Lines)
		}
	}
	if got := streamMsgs(b, js, stream.Events) - before; got != uint64(n) {
		b.Fatalf("fan-out: %d events stored, want %d", got, n)
	}
	return m
}
