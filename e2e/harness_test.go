package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

// fleet is a running test fleet.
type fleet struct {
	t      *testing.T
	NATS   *fleettest.NATS
	Redis  *fleettest.Redis
	JS     jetstream.JetStream
	Emu    *fleettest.Process
	EmuURL string // base URL, .../v1
	env    []string

	mu    sync.Mutex
	procs map[string][]*fleettest.Process
}

type fleetOpts struct {
	// EmulatorEnv adds EMULATOR_* settings.
	EmulatorEnv []string
	// WorkerEnv adds worker settings (beyond the contract's variables).
	WorkerEnv []string
	// NATSURL is a JetStream server the test runs itself (default: an
	// embedded one per test).
	NATSURL string
}

// startFleet starts JetStream, redis-server and the emulator; workers are
// started with f.start.
func startFleet(t *testing.T, o fleetOpts) *fleet {
	t.Helper()
	f := &fleet{t: t, procs: map[string][]*fleettest.Process{}}
	natsURL := o.NATSURL
	if natsURL == "" {
		f.NATS = fleettest.StartNATS(t)
		natsURL = f.NATS.URL()
	}
	f.Redis = fleettest.StartRedis(t)
	_, f.JS = fleettest.Connect(t, natsURL)
	emuEnv := append([]string{
		"EMULATOR_ADDR=127.0.0.1:0", "EMULATOR_API_KEY=sk-test",
		"EMULATOR_VALIDATING_FOR=100ms", "EMULATOR_IN_PROGRESS_FOR=500ms", "EMULATOR_FINALIZING_FOR=100ms",
	}, o.EmulatorEnv...)
	f.Emu = fleettest.StartProcess(t, fleettest.BuildBinary(t, "cmd/openai-emulator"), emuEnv, "emulator")
	line := f.Emu.WaitForLine(t, `"base_url"`, 20*time.Second)
	var l struct {
		BaseURL string `json:"base_url"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &l), line)
	f.EmuURL = l.BaseURL
	f.env = append([]string{
		"NATS_URL=" + natsURL, "REDIS_URL=" + f.Redis.URL(),
		"OPENAI_API_KEY=sk-test", "OPENAI_BASE_URL=" + f.EmuURL,
		// anthropic-sdk-go's convention: the base URL without /v1.
		"ANTHROPIC_API_KEY=sk-test", "ANTHROPIC_BASE_URL=" + strings.TrimSuffix(f.EmuURL, "/v1"),
		"ANTHROPIC_RPM=6000",
		"POLL_INITIAL_INTERVAL=100ms", "POLL_MAX_INTERVAL=1s", "POLL_RATE=1000/s",
		// The sweep runs beside the claims in every test, so both paths
		// race to apply each change.
		"POLL_SWEEP_INTERVAL=500ms",
	}, o.WorkerEnv...)
	return f
}

// start starts n workers of kind ("submitter", "poller", "notifier").
func (f *fleet) start(kind string, n int, extraEnv ...string) []*fleettest.Process {
	f.t.Helper()
	bin := fleettest.BuildBinary(f.t, "cmd/"+kind)
	var out []*fleettest.Process
	for range n {
		f.mu.Lock()
		name := fmt.Sprintf("%s-%d", kind, len(f.procs[kind]))
		f.mu.Unlock()
		p := fleettest.StartProcess(f.t, bin, append(append([]string{}, f.env...), extraEnv...), name)
		p.WaitForLine(f.t, `running"`, 30*time.Second)
		f.mu.Lock()
		f.procs[kind] = append(f.procs[kind], p)
		f.mu.Unlock()
		out = append(out, p)
	}
	return out
}

// startAll starts one worker of each kind.
func (f *fleet) startAll() {
	f.start("submitter", 1)
	f.start("poller", 1)
	f.start("notifier", 1)
}

// publish JetStream-publishes a request (with its key as Nats-Msg-Id when msgID).
func (f *fleet) publish(req contract.Request, msgID bool) {
	f.t.Helper()
	data, err := json.Marshal(req)
	require.NoError(f.t, err)
	f.publishRaw(contract.SubjectRequests, data, map[bool]string{true: req.IdempotencyKey}[msgID])
}

func (f *fleet) publishRaw(subject string, data []byte, msgID string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var opts []stream.PublishOpt
	if msgID != "" {
		opts = append(opts, stream.WithMsgID(msgID))
	}
	require.NoError(f.t, stream.Ensure(ctx, f.JS, stream.Settings{}, stream.Requests, stream.Cancels))
	_, err := stream.PublishRaw(ctx, f.JS, subject, data, opts...)
	require.NoError(f.t, err)
}

// subscribe returns every message on the events stream matching subjects,
// from the start of the stream, decoded as T.
func subscribe[T any](f *fleet, subjects ...string) <-chan T {
	f.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.t.Cleanup(cancel)
	require.NoError(f.t, stream.Ensure(ctx, f.JS, stream.Settings{}, stream.Events, stream.DLQ))
	name := stream.Events
	if strings.HasPrefix(subjects[0], "batch.dlq.") {
		name = stream.DLQ
	}
	c, err := f.JS.OrderedConsumer(ctx, name, jetstream.OrderedConsumerConfig{FilterSubjects: subjects})
	require.NoError(f.t, err)
	ch := make(chan T, 100000)
	cc, err := c.Consume(func(m jetstream.Msg) {
		var v T
		if err := json.Unmarshal(m.Data(), &v); err != nil {
			f.t.Errorf("decode %s: %v", m.Subject(), err)
			return
		}
		ch <- v
	})
	require.NoError(f.t, err)
	f.t.Cleanup(cc.Stop)
	return ch
}

// vendorBatches asks the emulator for every batch it ever created.
func (f *fleet) vendorBatches() []emulator.BatchInfo {
	f.t.Helper()
	var out struct {
		Data []emulator.BatchInfo `json:"data"`
	}
	f.adminGet("/_emulator/batches", &out)
	return out.Data
}

func (f *fleet) adminGet(path string, v any) {
	f.t.Helper()
	root := strings.TrimSuffix(f.EmuURL, "/v1")
	resp, err := http.Get(root + path)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	require.Equal(f.t, http.StatusOK, resp.StatusCode, path)
	require.NoError(f.t, json.NewDecoder(resp.Body).Decode(v))
}

// batchesPerKey counts vendor batches by metadata idempotency_key.
func (f *fleet) batchesPerKey() map[string]int {
	per := map[string]int{}
	for _, b := range f.vendorBatches() {
		per[b.Metadata[contract.MetaIdempotencyKey]]++
	}
	return per
}

// chatRequests builds n chat sub-requests with custom_ids prefix-0..n-1.
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

// setFaults replaces the emulator's fault injection.
func (f *fleet) setFaults(faults emulator.Faults) {
	f.t.Helper()
	data, err := json.Marshal(faults)
	require.NoError(f.t, err)
	root := strings.TrimSuffix(f.EmuURL, "/v1")
	req, err := http.NewRequest(http.MethodPut, root+"/_emulator/faults", strings.NewReader(string(data)))
	require.NoError(f.t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	resp.Body.Close()
	require.Equal(f.t, http.StatusOK, resp.StatusCode)
}

// stats reads the emulator's counters.
func (f *fleet) stats() emulator.Stats {
	f.t.Helper()
	var s emulator.Stats
	f.adminGet("/_emulator/stats", &s)
	return s
}

// publishJobs publishes n jobs of per requests with keys prefix-00.. and
// returns the keys.
func (f *fleet) publishJobs(prefix string, n, per int, msgID bool) []string {
	f.t.Helper()
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("%s-%02d", prefix, i)
		f.publish(contract.Request{IdempotencyKey: keys[i], Requests: chatRequests(keys[i], per)}, msgID)
	}
	return keys
}

// expectOneEach reads one batch.completed per key (failing on a second or
// on an unknown key) and checks the vendor made exactly one batch per key.
func (f *fleet) expectOneEach(completed <-chan contract.Completed, keys []string, timeout time.Duration) map[string]contract.Completed {
	f.t.Helper()
	got, _ := f.readOneEach(completed, keys, timeout)
	per := f.batchesPerKey()
	for _, k := range keys {
		require.Equal(f.t, 1, per[k], "vendor batches for key %s", k)
	}
	return got
}

// readOneEach reads one batch.completed per key, failing on a second or on
// an unknown key, and returns the events and when each arrived.
func (f *fleet) readOneEach(completed <-chan contract.Completed, keys []string, timeout time.Duration) (map[string]contract.Completed, map[string]time.Time) {
	f.t.Helper()
	want := map[string]bool{}
	for _, k := range keys {
		want[k] = true
	}
	got := map[string]contract.Completed{}
	arrived := map[string]time.Time{}
	for _, ev := range fleettest.ReadN(f.t, completed, len(keys), timeout) {
		require.True(f.t, want[ev.IdempotencyKey], "batch.completed for unexpected key %q", ev.IdempotencyKey)
		_, dup := got[ev.IdempotencyKey]
		require.False(f.t, dup, "second batch.completed for %s", ev.IdempotencyKey)
		got[ev.IdempotencyKey] = ev
		arrived[ev.IdempotencyKey] = time.Now()
	}
	return got, arrived
}

// awaitKilled waits for a failpoint to kill p.
func awaitKilled(t *testing.T, p *fleettest.Process, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(timeout):
		t.Fatal("the failpoint never killed the worker")
	}
}

// noMore asserts that no further event arrives while the fleet finishes a
// sentinel job published after everything else: once the sentinel's event
// is in, any duplicate of an earlier job would have been too.
func (f *fleet) noMore(completed <-chan contract.Completed, sentinel string) {
	f.t.Helper()
	f.publish(contract.Request{IdempotencyKey: sentinel, Requests: chatRequests(sentinel, 1)}, true)
	for {
		select {
		case ev := <-completed:
			if ev.IdempotencyKey == sentinel {
				return
			}
			f.t.Fatalf("unexpected extra batch.completed: %s %s", ev.IdempotencyKey, ev.Outcome)
		case <-time.After(60 * time.Second):
			f.t.Fatalf("sentinel %s never completed", sentinel)
		}
	}
}

// refusedAtStart waits for a worker that must refuse its configuration:
// it exits with status 1 at start, without a panic; its output is returned.
func refusedAtStart(t *testing.T, p *fleettest.Process, what string) string {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not exit at start", what)
	}
	var exit *exec.ExitError
	require.ErrorAs(t, p.Stop(time.Second), &exit, "%s must exit non-zero", what)
	require.Equal(t, 1, exit.ExitCode())
	text := strings.Join(p.Lines(), "\n")
	require.NotContains(t, text, "goroutine ")
	require.NotContains(t, text, "panic")
	return text
}

// processLogs is the output of every process of the fleet (the emulator,
// each worker as "<kind>-<n>", refused ones as "<kind>-refused-<n>") plus
// extra named texts, for tests that grep all of it.
func (f *fleet) processLogs(refused []*fleettest.Process, refusedKind func(i int) string, extra map[string]string) map[string]string {
	logs := map[string]string{"emulator": strings.Join(f.Emu.Lines(), "\n")}
	for name, text := range extra {
		logs[name] = text
	}
	for kind, ps := range f.procs {
		for i, p := range ps {
			logs[kind+"-"+string(rune('0'+i))] = strings.Join(p.Lines(), "\n")
		}
	}
	for i, p := range refused {
		logs[refusedKind(i)+"-refused-"+string(rune('0'+i))] = strings.Join(p.Lines(), "\n")
	}
	return logs
}
