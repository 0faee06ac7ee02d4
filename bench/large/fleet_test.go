package largebench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// apiKey is the emulator's key and the workers' OPENAI_API_KEY.
const apiKey = "sk-bench"

// fleet is a running process fleet, set up as e2e/harness_test.go does:
// JetStream and redis-server, the emulator as a process, workers started
// with start.
type fleet struct {
	b      *testing.B
	nats   *fleettest.NATS
	js     jetstream.JetStream
	emu    *fleettest.Process
	emuURL string // base URL, .../v1
	env    []string
	procs  []worker
}

// worker is a started worker process and its name (submitter-0, ...).
type worker struct {
	name string
	proc *fleettest.Process
}

type fleetOpts struct {
	// emulatorEnv adds EMULATOR_* settings.
	emulatorEnv []string
	// workerEnv adds worker settings to every worker.
	workerEnv []string
}

// phases10ms is a near-zero vendor timeline: each phase lasts 10ms (the
// emulator's scheduler ticks every 100ms, which bounds it in practice).
var phases10ms = []string{
	"EMULATOR_VALIDATING_FOR=10ms", "EMULATOR_IN_PROGRESS_FOR=10ms", "EMULATOR_FINALIZING_FOR=10ms",
}

func startFleet(b *testing.B, o fleetOpts) *fleet {
	b.Helper()
	f := &fleet{b: b}
	f.nats = fleettest.StartNATS(b)
	rd := fleettest.StartRedis(b)
	_, f.js = fleettest.Connect(b, f.nats.URL())
	emuEnv := append([]string{"EMULATOR_ADDR=127.0.0.1:0", "EMULATOR_API_KEY=" + apiKey}, o.emulatorEnv...)
	f.emu = fleettest.StartProcess(b, fleettest.BuildBinary(b, "cmd/openai-emulator"), emuEnv, "emulator")
	line := f.emu.WaitForLine(b, `"base_url"`, 20*time.Second)
	var l struct {
		BaseURL string `json:"base_url"`
	}
	if err := json.Unmarshal([]byte(line), &l); err != nil || l.BaseURL == "" {
		b.Fatalf("emulator listening line %q: %v", line, err)
	}
	f.emuURL = l.BaseURL
	f.env = append([]string{
		"NATS_URL=" + f.nats.URL(), "REDIS_URL=" + rd.URL(),
		"OPENAI_API_KEY=" + apiKey, "OPENAI_BASE_URL=" + f.emuURL,
		"POLL_INITIAL_INTERVAL=100ms", "POLL_MAX_INTERVAL=1s", "POLL_RATE=1000/s",
		"POLL_SWEEP_INTERVAL=500ms",
		// The default fleet-wide create budget (2000/h, bursts of 50)
		// would pace the small jobs at one every 1.8s: measure the
		// workers, not the budget.
		"SUBMIT_RATE=0",
	}, o.workerEnv...)
	return f
}

// start starts n workers of kind ("submitter", "poller", "notifier") and
// waits until each is running.
func (f *fleet) start(kind string, n int, extraEnv ...string) []*fleettest.Process {
	f.b.Helper()
	bin := fleettest.BuildBinary(f.b, "cmd/"+kind)
	var out []*fleettest.Process
	for range n {
		name := fmt.Sprintf("%s-%d", kind, len(f.named(kind)))
		p := fleettest.StartProcess(f.b, bin, append(append([]string{}, f.env...), extraEnv...), name)
		p.WaitForLine(f.b, `running"`, 30*time.Second)
		f.procs = append(f.procs, worker{name: name, proc: p})
		out = append(out, p)
	}
	return out
}

// named returns the workers of kind, in start order.
func (f *fleet) named(kind string) []worker {
	var out []worker
	for _, w := range f.procs {
		if strings.HasPrefix(w.name, kind+"-") {
			out = append(out, w)
		}
	}
	return out
}

// publish JetStream-publishes a request on batch.requests with its key as
// Nats-Msg-Id.
func (f *fleet) publish(ctx context.Context, data []byte, key string) {
	f.b.Helper()
	if _, err := stream.PublishRaw(ctx, f.js, contract.SubjectRequests, data, stream.WithMsgID(key)); err != nil {
		f.b.Fatalf("publish %s: %v", key, err)
	}
}

// arrival is a batch.completed event and when it reached the benchmark.
type arrival struct {
	ev     contract.Completed
	at     time.Time // received here
	stored time.Time // stored by the JetStream server: when the notifier published it
}

// completions delivers every batch.completed event on the events stream,
// from its start, with its arrival time. Call it before publishing.
func (f *fleet) completions() <-chan arrival {
	f.b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := stream.Ensure(ctx, f.js, stream.Settings{}, stream.Requests, stream.Cancels, stream.Events, stream.DLQ); err != nil {
		f.b.Fatalf("ensure streams: %v", err)
	}
	c, err := f.js.OrderedConsumer(ctx, stream.Events, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.SubjectCompleted}})
	if err != nil {
		f.b.Fatalf("consume %s: %v", contract.SubjectCompleted, err)
	}
	ch := make(chan arrival, 100_000)
	cc, err := c.Consume(func(m jetstream.Msg) {
		a := arrival{at: time.Now()}
		if md, err := m.Metadata(); err == nil {
			a.stored = md.Timestamp
		}
		if err := json.Unmarshal(m.Data(), &a.ev); err != nil {
			a.ev.IdempotencyKey = "undecodable: " + err.Error()
		}
		ch <- a
	})
	if err != nil {
		f.b.Fatalf("consume %s: %v", contract.SubjectCompleted, err)
	}
	f.b.Cleanup(cc.Stop)
	return ch
}

// awaitCompleted receives n completions within timeout; on a timeout it
// logs the workers' warnings and errors before failing.
func (f *fleet) awaitCompleted(ch <-chan arrival, n int, timeout time.Duration) []arrival {
	f.b.Helper()
	out := make([]arrival, 0, n)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case a := <-ch:
			out = append(out, a)
		case <-timer.C:
			f.logProblems()
			f.b.Fatalf("got %d of %d batch.completed events within %s", len(out), n, timeout)
		}
	}
	return out
}

// problems returns every warn, error or fatal log line of the workers
// and the emulator, prefixed with the process name.
func (f *fleet) problems() []string {
	var out []string
	all := append([]worker{{name: "emulator", proc: f.emu}}, f.procs...)
	for _, w := range all {
		for _, l := range w.proc.Lines() {
			if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"level":"error"`) ||
				strings.Contains(l, `"level":"fatal"`) || strings.Contains(l, "panic:") {
				out = append(out, w.name+": "+l)
			}
		}
	}
	return out
}

// logProblems logs the workers' warnings and errors (at most 50 lines):
// the fleet's own trouble is reported, not hidden in the figures.
func (f *fleet) logProblems() {
	p := f.problems()
	if len(p) == 0 {
		return
	}
	f.b.Logf("%d warn/error log lines in the fleet; the first %d:\n%s", len(p), min(len(p), 50), strings.Join(p[:min(len(p), 50)], "\n"))
}

// logTime returns the time field of the first JSON log line of p whose
// message is msg and whose string fields match fields; false if none.
// The workers log RFC 3339 times with nanoseconds.
func logTime(p *fleettest.Process, msg string, fields map[string]string) (time.Time, bool) {
	for _, l := range p.Lines() {
		if !strings.Contains(l, msg) {
			continue
		}
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil || m["message"] != msg {
			continue
		}
		match := true
		for k, v := range fields {
			if m[k] != v {
				match = false
			}
		}
		s, _ := m["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, s)
		if match && err == nil {
			return at, true
		}
	}
	return time.Time{}, false
}
