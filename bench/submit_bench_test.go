package bench

import (
	"fmt"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/batchfleet/batchfleet/pkg/ratelimit"
	"github.com/batchfleet/batchfleet/pkg/submit"
)

// Workload sizes.
const (
	// throughputN requests are submitted by each throughput run.
	throughputN = 2000
	// defaultConcurrency is submit.Config's default in-flight submissions.
	defaultConcurrency = 8
	// vendorLatency is the latency runs' answer time of every vendor call.
	vendorLatency = 200 * time.Millisecond
	// runTimeout bounds each measured run.
	runTimeout = 3 * time.Minute
	// targetRatio is the goal for fleet submissions/s over the ceiling.
	targetRatio = 0.5
)

// row is one line of a summary table.
type row struct {
	name        string
	submitters  int
	concurrency int // in flight, all submitters together
	latency     time.Duration
	n           int
	m           measure
	unit        string
	// cpu: show the CPU per message (meaningful only for runs that keep
	// the machine busy; a run waiting on a slow vendor is mostly idle time).
	cpu  bool
	note string
}

func (r row) rate() float64 { return float64(r.n) / r.m.elapsed.Seconds() }

// cpuPerMsg is this process's CPU per message (NATS server, emulator and
// clients; not redis-server): unlike the rate, it hardly depends on what
// else the machine runs.
func (r row) cpuPerMsg() time.Duration { return r.m.cpu / time.Duration(r.n) }

// table collects the rows of a top-level benchmark by name: a sub-benchmark
// the framework runs again replaces its row.
type table struct {
	order []string
	rows  map[string]row
}

func (t *table) put(r row) {
	if t.rows == nil {
		t.rows = map[string]row{}
	}
	if _, ok := t.rows[r.name]; !ok {
		t.order = append(t.order, r.name)
	}
	t.rows[r.name] = r
}

func (t *table) get(name string) (row, bool) {
	r, ok := t.rows[name]
	return r, ok
}

func (t *table) String() string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tsubmitters\tin flight\tvendor latency\tN\telapsed\trate\tcpu/msg\tnote")
	for _, name := range t.order {
		r := t.rows[name]
		cpu := "-"
		if r.cpu {
			cpu = r.cpuPerMsg().Round(10 * time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%.1f %s\t%s\t%s\n",
			r.name, r.submitters, r.concurrency, r.latency, r.n, r.m.elapsed.Round(time.Millisecond),
			r.rate(), r.unit, cpu, r.note)
	}
	_ = tw.Flush()
	return "\n" + sb.String()
}

// report sets a run's metrics; ns/op, meaningless for a one-shot scenario,
// is suppressed.
func report(b *testing.B, r row) {
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(r.rate(), r.unit)
	if r.cpu {
		b.ReportMetric(float64(r.cpuPerMsg().Microseconds()), "cpu-us/msg")
	}
}

// BenchmarkSubmitThroughput measures fleet submissions/s with 1 and 4
// submitters against a vendor that answers at once, and the ceiling of the
// bare pipeline (fetch, lock, publish, unlock, ack) with as many pipelines
// at the same concurrency, each run on fresh servers; it reports
// fleet/ceiling for the rate and for the CPU per message.
func BenchmarkSubmitThroughput(b *testing.B) {
	var tab table
	ceilingName := func(p int) string { return fmt.Sprintf("ceiling/pipelines=%d", p) }
	fleetName := func(p int) string { return fmt.Sprintf("fleet/submitters=%d", p) }
	const vendorName = "vendor/calls"
	for _, procs := range []int{1, 4} {
		b.Run(ceilingName(procs), func(b *testing.B) {
			r := newRig(b, 0)
			r.publishRequests(b, fmt.Sprintf("ceiling%d", procs), throughputN)
			var pipes []*pipeline
			for range procs {
				pipes = append(pipes, r.pipeline(b))
			}
			res := row{name: ceilingName(procs), submitters: procs, concurrency: procs * defaultConcurrency, n: throughputN,
				m: r.runCeiling(b, pipes, defaultConcurrency, throughputN, runTimeout), unit: "msgs/s", cpu: true,
				note: "fetch+lock+publish+unlock+ack, no vendor, no job store"}
			report(b, res)
			tab.put(res)
		})
		if procs == 1 {
			b.Run(vendorName, func(b *testing.B) {
				r := newRig(b, 0)
				res := row{name: vendorName, submitters: 1, concurrency: defaultConcurrency, n: throughputN,
					m: r.runVendorCalls(b, defaultConcurrency, throughputN), unit: "pairs/s", cpu: true,
					note: "upload+create only (openai-go + in-process emulator), no NATS, no Redis"}
				report(b, res)
				tab.put(res)
			})
		}
		b.Run(fleetName(procs), func(b *testing.B) {
			r := newRig(b, 0)
			r.publishRequests(b, fmt.Sprintf("fleet%d", procs), throughputN)
			var subs []*submit.Submitter
			for range procs {
				subs = append(subs, r.submitter(b, submit.Config{}, nil))
			}
			res := row{name: fleetName(procs), submitters: procs, concurrency: procs * defaultConcurrency, n: throughputN,
				m: r.runFleet(b, subs, throughputN, runTimeout), unit: "submissions/s", cpu: true, note: "no ceiling measured"}
			if got := r.emu.Stats().BatchesCreated; got != throughputN {
				b.Errorf("emulator created %d batches for %d requests, want exactly one each", got, throughputN)
			}
			report(b, res)
			if c, ok := tab.get(ceilingName(procs)); ok {
				ratio := res.rate() / c.rate()
				b.ReportMetric(ratio, "x_ceiling")
				verdict := "met"
				if ratio < targetRatio {
					verdict = "NOT met"
				}
				res.note = fmt.Sprintf("%.2f x ceiling rate, target %.2f %s; %.1f x its CPU/msg",
					ratio, targetRatio, verdict, float64(res.cpuPerMsg())/float64(c.cpuPerMsg()))
			}
			tab.put(res)
		})
	}
	// A leaf of its own: a parent benchmark's log shows only with -v.
	b.Run("summary", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		for _, procs := range []int{1, 4} {
			f, okf := tab.get(fleetName(procs))
			c, okc := tab.get(ceilingName(procs))
			if okf && okc {
				b.ReportMetric(f.rate()/c.rate(), fmt.Sprintf("x_ceiling_%d", procs))
			}
		}
		msg := tab.String()
		c, okc := tab.get(ceilingName(1))
		v, okv := tab.get(vendorName)
		if okc && okv {
			// CPU-bound, the costs per message add up: a submitter doing
			// nothing but the bare pipeline and the two vendor calls would
			// reach at most this fraction of the ceiling.
			bound := float64(c.cpuPerMsg()) / float64(c.cpuPerMsg()+v.cpuPerMsg())
			b.ReportMetric(bound, "x_ceiling_bound")
			msg += fmt.Sprintf("bound: bare pipeline + the two vendor calls cost %s CPU/msg, so even a submitter adding nothing else reaches about %.2f x ceiling\n",
				(c.cpuPerMsg() + v.cpuPerMsg()).Round(10*time.Microsecond), bound)
		}
		b.Log(msg)
	})
}

// BenchmarkSubmitLatency measures submissions/s against a vendor that
// answers every call (upload, create) after 200ms, for 1, 4 and 16
// submissions in flight in one submitter; then two submitters sharing a
// fleet-wide create limit of 10/s (burst 1), checking from the emulator's
// creation times that no 1-second window held more than Rate+Burst creates.
func BenchmarkSubmitLatency(b *testing.B) {
	var tab table
	levels := []int{1, 4, 16}
	levelName := func(c int) string { return fmt.Sprintf("concurrency=%d", c) }
	for _, c := range levels {
		b.Run(levelName(c), func(b *testing.B) {
			n := 10 * c // about 4s at two 200ms calls per submission
			r := newRig(b, vendorLatency)
			r.publishRequests(b, fmt.Sprintf("lat%d", c), n)
			s := r.submitter(b, submit.Config{Concurrency: c}, nil)
			res := row{name: levelName(c), submitters: 1, concurrency: c, latency: vendorLatency, n: n,
				m: r.runFleet(b, []*submit.Submitter{s}, n, runTimeout), unit: "submissions/s"}
			ideal := float64(c) / (2 * vendorLatency).Seconds() // two vendor calls per submission
			res.note = fmt.Sprintf("%.2f x ideal %.1f/s (in flight / 2 calls x %s)", res.rate()/ideal, ideal, vendorLatency)
			report(b, res)
			b.ReportMetric(res.rate()/ideal, "x_ideal")
			tab.put(res)
		})
	}
	for i := 1; i < len(levels); i++ {
		lo, okl := tab.get(levelName(levels[i-1]))
		hi, okh := tab.get(levelName(levels[i]))
		if okl && okh && hi.rate() <= lo.rate() {
			b.Errorf("throughput did not grow with concurrency: %.1f/s at %d in flight, %.1f/s at %d",
				lo.rate(), lo.concurrency, hi.rate(), hi.concurrency)
		}
	}

	limit := ratelimit.Limit{Rate: 10, Per: time.Second, Burst: 1}
	const rateName = "ratelimit/submitters=2"
	b.Run(rateName, func(b *testing.B) {
		const n = 50
		r := newRig(b, vendorLatency)
		r.publishRequests(b, "rate", n)
		newLimiter := func(b *testing.B, r *rig) *ratelimit.Limiter {
			return ratelimit.New(r.redis.Client(b), "SUBMIT_RATE", limit) // one budget, one client per submitter
		}
		subs := []*submit.Submitter{
			r.submitter(b, submit.Config{}, newLimiter),
			r.submitter(b, submit.Config{}, newLimiter),
		}
		res := row{name: rateName, submitters: 2, concurrency: 2 * defaultConcurrency, latency: vendorLatency, n: n,
			m: r.runFleet(b, subs, n, runTimeout), unit: "submissions/s"}
		ts := r.createTimes()
		if len(ts) != n {
			b.Errorf("emulator created %d batches for %d requests", len(ts), n)
		}
		most, bound := maxInWindow(ts, limit.Per), limit.Rate+limit.Burst
		if most > bound {
			b.Errorf("a 1s window held %d creates; the limit allows at most Rate+Burst = %d", most, bound)
		}
		res.note = fmt.Sprintf("limit %d/s burst %d: at most %d creates in any 1s window (bound %d)", limit.Rate, limit.Burst, most, bound)
		report(b, res)
		b.ReportMetric(float64(most), "max_creates/1s")
		tab.put(res)
	})
	b.Run("summary", func(b *testing.B) {
		b.ReportMetric(0, "ns/op")
		lo, okl := tab.get(levelName(levels[0]))
		hi, okh := tab.get(levelName(levels[len(levels)-1]))
		if okl && okh {
			b.ReportMetric(hi.rate()/lo.rate(), fmt.Sprintf("x_growth_%dv%d", hi.concurrency, lo.concurrency))
		}
		b.Log(tab.String())
	})
}
