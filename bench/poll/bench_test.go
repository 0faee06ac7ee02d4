package pollbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/poll"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// scenario is one measured run: N batches tracked by Pollers poller
// processes with one strategy.
type scenario struct {
	Jobs     int
	Strategy string
	// Observe bounds the run after the claims are published; zero waits
	// for every batch's batch.state.completed event (up to a safety bound).
	Observe time.Duration

	Pollers, Concurrency int
	Initial, Max         time.Duration // POLL_INITIAL_INTERVAL, POLL_MAX_INTERVAL
	// Sweep is POLL_SWEEP_INTERVAL of the "sweep" strategy (adaptive
	// claims plus the List sweep); the other strategies run without.
	Sweep time.Duration

	// Vendor timings: a batch validates for Validating plus its share of
	// Stagger (0..Stagger, by creation wave), runs InProgress, finalizes
	// for Finalizing, then completes.
	Validating, InProgress, Finalizing, Stagger time.Duration

	// PageLatency is the assumed latency of one List page in the
	// simulated List sweep (the emulator answers locally in about 1ms).
	PageLatency time.Duration
}

func (s scenario) lifetime() (lo, hi time.Duration) {
	lo = s.Validating + s.InProgress + s.Finalizing
	return lo, lo + s.Stagger
}

// scales parses POLLBENCH_JOBS: comma-separated job counts, each optionally
// "@<duration>" to observe the run for that long after the claims are
// published instead of waiting for every completion.
func scales(spec string) ([]scenario, error) {
	var out []scenario
	for f := range strings.SplitSeq(spec, ",") {
		n, obs, _ := strings.Cut(strings.TrimSpace(f), "@")
		jobs, err := strconv.Atoi(n)
		if err != nil || jobs < 1 {
			return nil, fmt.Errorf("POLLBENCH_JOBS: bad job count %q", n)
		}
		s := scenario{Jobs: jobs}
		if obs != "" {
			if s.Observe, err = time.ParseDuration(obs); err != nil {
				return nil, fmt.Errorf("POLLBENCH_JOBS: %w", err)
			}
		}
		out = append(out, s)
	}
	return out, nil
}

func envDur(b *testing.B, name string, def time.Duration) time.Duration {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return d
}

func envInt(b *testing.B, name string, def int) int {
	v, ok := os.LookupEnv(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("%s: %v", name, err)
	}
	return n
}

// scenarios returns every run of the benchmark: each scale of
// POLLBENCH_JOBS with each strategy of POLLBENCH_STRATEGIES.
//
// Defaults: 3,000 jobs (about what the fixed baseline sustains here: 1,500
// GETs/s on two shared cores) tracked to completion, then 100,000 jobs
// observed for 90s.
// Intervals 2s..60s; the fixed baseline polls every 2s (the adaptive
// initial interval: equal footing). A batch validates 5s plus 0..60s
// (completions staggered over a minute), runs 60s, finalizes 10s.
func scenarios(b *testing.B) []scenario {
	sc, err := scales(cmpOr(os.Getenv("POLLBENCH_JOBS"), "3000,100000@90s"))
	if err != nil {
		b.Fatal(err)
	}
	base := scenario{
		Pollers:     envInt(b, "POLLBENCH_POLLERS", 2),
		Concurrency: envInt(b, "POLLBENCH_CONCURRENCY", 64),
		Initial:     envDur(b, "POLLBENCH_INITIAL", 2*time.Second),
		Max:         envDur(b, "POLLBENCH_MAX", 60*time.Second),
		Sweep:       envDur(b, "POLLBENCH_SWEEP", time.Second),
		Validating:  envDur(b, "POLLBENCH_VALIDATING", 5*time.Second),
		InProgress:  envDur(b, "POLLBENCH_IN_PROGRESS", 60*time.Second),
		Finalizing:  envDur(b, "POLLBENCH_FINALIZING", 10*time.Second),
		Stagger:     envDur(b, "POLLBENCH_STAGGER", 60*time.Second),
		PageLatency: envDur(b, "POLLBENCH_LIST_PAGE_LATENCY", 200*time.Millisecond),
	}
	var out []scenario
	for _, s := range sc {
		for st := range strings.SplitSeq(cmpOr(os.Getenv("POLLBENCH_STRATEGIES"), "sweep,adaptive,fixed"), ",") {
			r := base
			r.Jobs, r.Observe, r.Strategy = s.Jobs, s.Observe, strings.TrimSpace(st)
			if r.Strategy != strategySweep && r.Strategy != poll.StrategyAdaptive && r.Strategy != poll.StrategyFixed {
				b.Fatalf("POLLBENCH_STRATEGIES: unknown strategy %q", r.Strategy)
			}
			out = append(out, r)
		}
	}
	return out
}

// strategySweep is the fleet's default: adaptive claims and the List sweep.
const strategySweep = "sweep"

// pollerEnv is a scenario's strategy as poller settings.
func (s scenario) pollerEnv() []string {
	if s.Strategy == strategySweep {
		return []string{"POLL_STRATEGY=" + poll.StrategyAdaptive, "POLL_SWEEP_INTERVAL=" + s.Sweep.String()}
	}
	return []string{"POLL_STRATEGY=" + s.Strategy, "POLL_SWEEP_INTERVAL=0"}
}

func cmpOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// BenchmarkPoll tracks POLLBENCH_JOBS active vendor batches with real
// poller processes, per strategy, and prints the figures; see the package
// doc. Run it with -benchtime 1x: each run takes minutes.
func BenchmarkPoll(b *testing.B) {
	bin := fleettest.BuildBinary(b, "cmd/poller")
	var results []*result
	for _, sc := range scenarios(b) {
		b.Run(fmt.Sprintf("jobs=%d/%s", sc.Jobs, sc.Strategy), func(b *testing.B) {
			r := runScenario(b, bin, sc)
			r.report(b)
			results = append(results, r)
		})
	}
	printSummary(os.Stdout, results)
}

// result holds one run's raw observations and derived figures.
type result struct {
	sc scenario

	seedTook, publishTook time.Duration
	ran                   time.Duration // claims published -> last completion (or end of observation)
	completed             int           // batch.state.completed events seen
	vendorTerminal        int           // batches terminal at the emulator by the end
	gets                  int64
	lists                 int64 // List pages (the sweep)
	lastSweep             *jobstore.Sweep
	sweepFresh            bool // at the end of the run, pollers still up
	getsByPoller          []int64
	getsPerCompleted      []int // GETs of each completed batch
	latency               []time.Duration
	missed                int // completed events without a terminal time (should be 0)
	intervals             []time.Duration
	idle                  []procMem       // per poller, once pulling, before any claim
	end                   []procMem       // per poller, at the end: VmHWM is the peak
	peakRSS               []int64         // per poller, highest VmRSS sampled while tracking
	trackedAtPeak         int             // batches not yet completed when the RSS sum peaked
	cpu                   []time.Duration // per poller, CPU used from the first claim to the end
	peakRate              float64         // highest GETs/s over a 5s window, all pollers
	sweep                 sweep           // the simulated List sweep over the same batches and time
}

// runScenario runs one scenario on its own NATS, Redis and emulator.
func runScenario(b *testing.B, bin string, sc scenario) *result {
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	r := &result{sc: sc}

	nats := fleettest.StartNATS(b)
	_, js := fleettest.Connect(b, nats.URL())
	rds := fleettest.StartRedis(b)
	clock := &staggerClock{}
	emu := emulator.New(emulator.Config{
		Clock: clock, ValidatingFor: sc.Validating, InProgressFor: sc.InProgress, FinalizingFor: sc.Finalizing,
		CallLogSize: 1000,
	})
	b.Cleanup(emu.Close)
	m := newMeter(emu)
	srv := httptest.NewServer(m) // 127.0.0.1: reachable by the poller processes
	b.Cleanup(srv.Close)
	hc := srv.Client()
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 64

	if err := stream.Ensure(ctx, js, stream.Settings{}, stream.Work, stream.Events); err != nil {
		b.Fatal(err)
	}
	store, err := jobstore.Open(ctx, js, jobstore.Settings{})
	if err != nil {
		b.Fatal(err)
	}

	// 1. Seed the vendor: n batches, completions staggered.
	key := func(i int) string { return fmt.Sprintf("pollbench-%07d", i) }
	began := time.Now()
	ids, err := seed(ctx, vendorClient{hc: hc, base: srv.URL + "/v1"}, clock, sc.Jobs, sc.Stagger, key)
	if err != nil {
		b.Fatal(err)
	}
	r.seedTook = time.Since(began)
	b.Logf("seeded %d batches in %s", sc.Jobs, r.seedTook.Round(time.Millisecond))

	// 2. Record each batch's poll state, as a submitter does before it
	// hands the batch over (a webhook may arrive before the first poll).
	began = time.Now()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for i, id := range ids {
		g.Go(func() error {
			return store.PutPoll(gctx, &jobstore.Poll{BatchID: id, JobKey: key(i), Key: key(i), Attempt: 1, CreatedAt: time.Now().UTC()})
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.Logf("stored %d poll states in %s", sc.Jobs, time.Since(began).Round(time.Millisecond))
	ev := watchCompleted(b, ctx, js)

	// 3. Start the pollers and wait until they pull.
	procs := make([]*fleettest.Process, sc.Pollers)
	pids := make([]int, sc.Pollers)
	keys := make([]string, sc.Pollers)
	for i := range procs {
		keys[i] = fmt.Sprintf("pollbench-poller-%d", i)
		marker := fmt.Sprintf("POLLBENCH_PROC=%d-%s-%d-%d", os.Getpid(), sc.Strategy, sc.Jobs, i)
		procs[i] = fleettest.StartProcess(b, bin, append([]string{
			"NATS_URL=" + nats.URL(), "REDIS_URL=" + rds.URL(),
			"OPENAI_BASE_URL=" + srv.URL + "/v1", "OPENAI_API_KEY=" + keys[i],
			"POLL_INITIAL_INTERVAL=" + sc.Initial.String(), "POLL_MAX_INTERVAL=" + sc.Max.String(),
			"POLL_RATE=0", "POLL_CONCURRENCY=" + strconv.Itoa(sc.Concurrency),
			"LOG_LEVEL=warn", "STOP_TIMEOUT=5s", marker,
		}, sc.pollerEnv()...), fmt.Sprintf("poller-%d", i))
		fleettest.WaitFor(b, 30*time.Second, func() bool {
			pids[i], err = findPID(marker)
			return err == nil
		}, "poller process visible in /proc")
	}
	fleettest.WaitFor(b, 60*time.Second, func() bool {
		c, err := js.Consumer(ctx, stream.Work, stream.ConsumerPollers)
		if err != nil {
			return false
		}
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting >= sc.Pollers
	}, "pollers pulling claims")
	if sc.Strategy == strategySweep {
		// A running fleet has a sweep leader when batches arrive; before
		// its first sweep every claim polls on its own schedule.
		fleettest.WaitFor(b, 60*time.Second, func() bool {
			_, err := store.GetSweep(ctx)
			return err == nil
		}, "the first sweep")
	}
	time.Sleep(time.Second) // let start-up settle before the idle reading
	for _, pid := range pids {
		mem, err := readProcMem(pid)
		if err != nil {
			b.Fatal(err)
		}
		r.idle = append(r.idle, mem)
		cpu, err := readProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		r.cpu = append(r.cpu, -cpu)
	}

	// 4. Sample GETs, completions and poller memory every second.
	t0 := time.Now()
	smp := startSampler(ctx, m, ev, pids)

	// 5. Hand every batch to the pollers: one claim each, published
	// asynchronously so the burst is short, in random order: the stream
	// delivers claims in publish order, and batches complete in creation
	// order here, which real batches (of any size) do not. Publishing in
	// creation order would let an overloaded poller look good by polling
	// each batch just before it completes.
	order := rand.New(rand.NewPCG(1, 2)).Perm(len(ids))
	for lo := 0; lo < len(order); lo += 2000 {
		var acks []jetstream.PubAckFuture
		for _, i := range order[lo:min(lo+2000, len(order))] {
			data, err := json.Marshal(stream.PollTask{BatchID: ids[i], JobKey: key(i), Key: key(i), Attempt: 1})
			if err != nil {
				b.Fatal(err)
			}
			a, err := js.PublishAsync(stream.SubjectPoll, data, jetstream.WithMsgID(ids[i]+":poll"))
			if err != nil {
				b.Fatal(err)
			}
			acks = append(acks, a)
		}
		for _, a := range acks {
			select {
			case <-a.Ok():
			case err := <-a.Err():
				b.Fatalf("publish claim: %v", err)
			case <-time.After(time.Minute):
				b.Fatal("claim not acknowledged within 1m")
			}
		}
	}
	r.publishTook = time.Since(t0)
	b.Logf("published %d claims in %s", sc.Jobs, r.publishTook.Round(time.Millisecond))

	// 6. Wait for every completion, or the end of the observation.
	_, hi := sc.lifetime()
	deadline := t0.Add(hi + 5*time.Minute)
	if sc.Observe > 0 {
		deadline = t0.Add(sc.Observe)
	}
	for ev.count() < sc.Jobs && time.Now().Before(deadline) {
		for i, p := range procs {
			select {
			case <-p.Done():
				b.Fatalf("poller %d exited", i)
			default:
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if sc.Observe == 0 {
		r.ran = ev.last().Sub(t0)
	} else {
		r.ran = time.Since(t0)
	}
	for i, pid := range pids {
		cpu, err := readProcCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		r.cpu[i] += cpu
		mem, err := readProcMem(pid)
		if err != nil {
			b.Fatal(err)
		}
		r.end = append(r.end, mem)
	}
	samples := smp.stop()
	if sc.Strategy == strategySweep {
		if rec, err := store.GetSweep(ctx); err == nil {
			r.lastSweep, r.sweepFresh = rec, rec.Fresh(time.Now())
		}
	}
	for i, p := range procs {
		if err := p.Stop(15 * time.Second); err != nil {
			b.Logf("poller %d stop: %v", i, err)
		}
	}
	if sc.Observe == 0 && ev.count() < sc.Jobs {
		b.Fatalf("only %d of %d batches completed within %s", ev.count(), sc.Jobs, hi+5*time.Minute)
	}

	// 7. Derive the figures.
	r.gets, r.lists = m.gets(), m.lists()
	for _, k := range keys {
		r.getsByPoller = append(r.getsByPoller, m.getsBy(k))
	}
	r.intervals = m.intervalSample()
	var doneAtPeak int
	r.peakRSS, r.peakRate, doneAtPeak = samples.peaks(len(pids))
	r.trackedAtPeak = sc.Jobs - doneAtPeak
	terminal := map[string]time.Time{}
	terms := make([]time.Time, len(ids))
	for i, bi := range emu.Batches() { // oldest first: creation order, as ids
		terminal[bi.ID] = bi.TerminalAt
		if i < len(terms) {
			terms[i] = bi.TerminalAt
		}
	}
	seen := ev.snapshot()
	var done []string
	for id, at := range seen {
		t := terminal[id]
		if t.IsZero() {
			r.missed++
			continue
		}
		r.latency = append(r.latency, at.Sub(t))
		done = append(done, id)
	}
	r.completed = len(seen)
	r.getsPerCompleted = m.getsOf(done)
	end := t0.Add(r.ran)
	for _, t := range terms {
		if !t.IsZero() && !t.After(end) {
			r.vendorTerminal++
		}
	}
	r.sweep = listSweep(terms, t0, end, sc.Initial, sc.PageLatency)
	if emuGets := emu.Stats().CallsByOp[emulator.OpGet]; emuGets != r.gets {
		b.Fatalf("emulator counted %d GETs, the meter %d", emuGets, r.gets)
	}
	return r
}

// completions collects batch.state.completed events: batch id -> the
// time JetStream stored the event (its publish time).
type completions struct {
	mu     sync.Mutex
	at     map[string]time.Time
	n      atomic.Int64
	newest time.Time
}

func (c *completions) count() int { return int(c.n.Load()) }

func (c *completions) last() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.newest
}

func (c *completions) snapshot() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Time, len(c.at))
	for k, v := range c.at {
		out[k] = v
	}
	return out
}

func watchCompleted(b *testing.B, ctx context.Context, js jetstream.JetStream) *completions {
	c := &completions{at: map[string]time.Time{}}
	cons, err := js.OrderedConsumer(ctx, stream.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contract.StateSubject(contract.StatusCompleted)},
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var ev contract.State
		md, err := m.Metadata()
		if err != nil || json.Unmarshal(m.Data(), &ev) != nil {
			return
		}
		c.mu.Lock()
		if _, dup := c.at[ev.BatchID]; !dup {
			c.at[ev.BatchID] = md.Timestamp
			c.n.Add(1)
			if md.Timestamp.After(c.newest) {
				c.newest = md.Timestamp
			}
		}
		c.mu.Unlock()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cc.Stop()
		<-cc.Closed()
	})
	return c
}

// sample is one reading of the sampler.
type sample struct {
	at        time.Time
	gets      int64
	completed int
	rss       []int64
}

type samples []sample

// peaks returns the highest VmRSS of each poller, the highest GET rate over
// a 5s window and how many batches were still tracked at the RSS peak.
func (s samples) peaks(pollers int) (rss []int64, rate float64, tracked int) {
	rss = make([]int64, pollers)
	var best int64
	for i, x := range s {
		var sum int64
		for p, v := range x.rss {
			rss[p] = max(rss[p], v)
			sum += v
		}
		if sum > best {
			best, tracked = sum, x.completed
		}
		for j := i - 1; j >= 0; j-- {
			if d := x.at.Sub(s[j].at); d >= 5*time.Second {
				rate = max(rate, float64(x.gets-s[j].gets)/d.Seconds())
				break
			}
		}
	}
	return rss, rate, tracked
}

type sampler struct {
	cancel context.CancelFunc
	done   chan struct{}
	out    samples
}

func startSampler(ctx context.Context, m *meter, ev *completions, pids []int) *sampler {
	ctx, cancel := context.WithCancel(ctx)
	s := &sampler{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			x := sample{at: time.Now(), gets: m.gets(), completed: ev.count()}
			for _, pid := range pids {
				mem, _ := readProcMem(pid)
				x.rss = append(x.rss, mem.RSS)
			}
			s.out = append(s.out, x)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) stop() samples {
	s.cancel()
	<-s.done
	return s.out
}

// report prints the run's figures as benchmark metrics.
func (r *result) report(b *testing.B) {
	n := float64(r.sc.Jobs)
	lat := sortedCopy(r.latency)
	b.ReportMetric(float64(r.gets)/n, "gets/job")
	b.ReportMetric(float64(r.gets+r.lists)/n, "vendor-calls/job")
	b.ReportMetric(mean(r.getsPerCompleted), "gets/completed-job")
	b.ReportMetric(float64(r.completed), "completed")
	b.ReportMetric(float64(r.completed)/float64(max(r.vendorTerminal, 1)), "detected/vendor-terminal")
	b.ReportMetric(float64(percentile(lat, 0.50))/1e6, "p50-detect-ms")
	b.ReportMetric(float64(percentile(lat, 0.99))/1e6, "p99-detect-ms")
	b.ReportMetric(float64(sumHWM(r.end))/n, "hwm-B/job")
	b.ReportMetric(float64(sumHWM(r.end)-sumIdle(r.idle))/n, "hwm-growth-B/job")
	b.ReportMetric(float64(r.gets)/r.ran.Seconds()/float64(r.sc.Pollers), "polls/s/poller")
	b.ReportMetric(float64(r.sweep.calls)/n, "list-sweep-calls/job")
}

func sum(s []int64) int64 {
	var t int64
	for _, v := range s {
		t += v
	}
	return t
}

func sumIdle(s []procMem) int64 {
	var t int64
	for _, v := range s {
		t += v.RSS
	}
	return t
}

func sumHWM(s []procMem) int64 {
	var t int64
	for _, v := range s {
		t += v.HWM
	}
	return t
}

// printSummary prints every run side by side.
func printSummary(out io.Writer, rs []*result) {
	if len(rs) == 0 {
		return
	}
	sc := rs[0].sc
	lo, hi := sc.lifetime()
	fmt.Fprintf(out, "\n=== poll benchmark: %d poller process(es), POLL_CONCURRENCY=%d each, POLL_RATE=0 (no limiter); NATS, Redis, emulator and these readings share %d CPUs ===\n",
		sc.Pollers, sc.Concurrency, runtime.NumCPU())
	fmt.Fprintf(out, "intervals: adaptive %s..%s (doubling per unchanged poll, +-20%% jitter, %s while finalizing); fixed every %s (no jitter) = the adaptive initial interval\n",
		sc.Initial, sc.Max, sc.Initial, sc.Initial)
	fmt.Fprintf(out, "vendor: 1-request batches; validating %s + 0..%s (staggered by creation wave), in_progress %s, finalizing %s: each completes %s..%s after its creation wave\n",
		sc.Validating, sc.Stagger, sc.InProgress, sc.Finalizing, lo, hi)
	fmt.Fprintf(out, "observed: run length after the claims; GETs/job = emulator calls_by_op[get] / jobs (all jobs, also those not yet completed)\n")
	fmt.Fprintf(out, "detect = JetStream time of batch.state.completed - emulator terminal_at, quantiles over every batch terminal at the vendor by the end\n")
	fmt.Fprintf(out, "(\"undetected\": that rank was not detected within the run); GET interval: between consecutive GETs of one batch\n\n")

	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "jobs\tstrategy\tobserved\tvendor-terminal\tdetected\tvendor calls/job\t(GETs + Lists)\tGETs/detected job\tdetect p50\tdetect p99\tdetect max\tGET interval p50\tp99\t")
	for _, r := range rs {
		lat, iv := sortedCopy(r.latency), sortedCopy(r.intervals)
		obs := r.ran.Round(time.Second).String() + " (all)"
		if r.sc.Observe > 0 {
			obs = r.sc.Observe.String() + " (cap)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\t%.2f\t%d + %d\t%.2f\t%s\t%s\t%s\t%s\t%s\t\n",
			r.sc.Jobs, r.sc.Strategy, obs, r.vendorTerminal, r.completed, float64(r.gets+r.lists)/float64(r.sc.Jobs), r.gets, r.lists, mean(r.getsPerCompleted),
			censored(lat, r.vendorTerminal, 0.5), censored(lat, r.vendorTerminal, 0.99), censored(lat, r.vendorTerminal, 1),
			quantile(iv, 0.5), quantile(iv, 0.99))
	}
	w.Flush()

	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "jobs\tstrategy\tGET polls/s per poller\tjobs looked at/s, all\tpeak GETs 5s, all\tCPU/look\tRSS idle\tRSS peak\tVmHWM\t(tracked then)\tHWM/job\tHWM growth/job\t")
	for _, r := range rs {
		n := float64(r.sc.Jobs)
		var per []string
		for _, g := range r.getsByPoller {
			per = append(per, fmt.Sprintf("%.0f", float64(g)/r.ran.Seconds()))
		}
		// A List page shows up to 100 jobs (exactly 100 but on a sweep's
		// last page): an upper bound for the sweep's looks.
		looks := r.gets + 100*r.lists
		var cpuPerLook time.Duration
		if looks > 0 {
			cpuPerLook = sumDur(r.cpu) / time.Duration(looks)
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%.0f/s\t%.0f/s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n",
			r.sc.Jobs, r.sc.Strategy, strings.Join(per, " + "), float64(looks)/r.ran.Seconds(), r.peakRate, cpuPerLook.Round(time.Microsecond),
			mib(sumIdle(r.idle)), mib(sum(r.peakRSS)), mib(sumHWM(r.end)), r.trackedAtPeak,
			kib(float64(sumHWM(r.end))/n), kib(float64(sumHWM(r.end)-sumIdle(r.idle))/n))
	}
	w.Flush()

	fmt.Fprintf(out, "\nList sweep (simulated over the same batches and time span, not run): from the claims on, every %s (or back to back\n"+
		"if longer) list newest first, 100 per page, %s per page (assumed), down to the oldest batch not yet seen terminal\n", sc.Initial, sc.PageLatency)
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "jobs\tover\tsweeps\tmax pages\tList calls\tcalls/job\tseen terminal\tdetect p50\tdetect p99\t")
	seen := map[int]bool{}
	for _, r := range rs {
		if seen[r.sc.Jobs] {
			continue // the sweep depends on the batches, not on the strategy
		}
		seen[r.sc.Jobs] = true
		lat := sortedCopy(r.sweep.detect)
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\t%d\t%.2f\t%d\t%s\t%s\t\n", r.sc.Jobs, r.ran.Round(time.Second), r.sweep.sweeps,
			r.sweep.maxPages, r.sweep.calls, float64(r.sweep.calls)/float64(r.sc.Jobs), len(lat),
			quantile(lat, 0.5), quantile(lat, 0.99))
	}
	w.Flush()
	for _, r := range rs {
		if sw := r.lastSweep; sw != nil {
			fmt.Fprintf(out, "%d/%s: last sweep: %d pages, %d listed, %d active, %d changes applied, took %s, ordered %t, covers from %s, fresh at the end %t\n",
				r.sc.Jobs, r.sc.Strategy, sw.Pages, sw.Listed, sw.Active, sw.Changed, sw.FinishedAt.Sub(sw.StartedAt).Round(time.Millisecond),
				sw.Ordered, sw.CoversFrom.Format(time.RFC3339), r.sweepFresh)
		}
	}
	for _, r := range rs {
		if r.missed > 0 {
			fmt.Fprintf(out, "WARNING: %s/%d: %d completed events without an emulator terminal time\n", r.sc.Strategy, r.sc.Jobs, r.missed)
		}
	}
	fmt.Fprintln(out)
}

func sumDur(s []time.Duration) time.Duration {
	var t time.Duration
	for _, v := range s {
		t += v
	}
	return t
}
