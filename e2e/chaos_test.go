//go:build chaos

// The chaos suite (go test -tags chaos -run Chaos -timeout 60m ./e2e/):
// long fault runs through the process fleet, each checking the four
// promises at the end: one batch.completed per key, no key with two vendor
// batches, no orphan (every vendor batch of a job is in its batch_ids) and
// no admission slot held.
package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/admission"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// chaosEnv keeps the chaos runs fast: short call deadlines and margins, a
// quick rescuer, a fleet-wide cap so admission slots are exercised.
var chaosEnv = []string{
	"RETRY_BACKOFF=200ms", "VENDOR_CALL_TIMEOUT=3s", "SUBMIT_CREATE_MARGIN=1s",
	"RESCUE_INTERVAL=2s", "RESCUE_AFTER=10s", "MAX_ACTIVE_BATCHES=40", "POLL_LEASE=5s",
	// The fleet-wide create rate (2000/h, burst 50) would pace these runs, not the faults.
	"SUBMIT_RATE=0",
}

// chaosJobs publishes n jobs of 3 requests; every third needs a retry batch.
func (f *fleet) chaosJobs(prefix string, n int) []string {
	f.t.Helper()
	keys := make([]string, n)
	for i := range n {
		keys[i] = fmt.Sprintf("%s-%03d", prefix, i)
		reqs := chatRequests(keys[i], 3)
		if i%3 == 0 {
			reqs = items(keys[i], 2, emulator.TriggerFailOnce, 1)
		}
		f.publish(contract.Request{IdempotencyKey: keys[i], Requests: reqs}, true)
	}
	return keys
}

// checkPromises waits for one batch.completed per key and checks the
// fleet's promises against the vendor's own record of its batches.
func (f *fleet) checkPromises(completed <-chan contract.Completed, keys []string, timeout time.Duration) map[string]time.Time {
	f.t.Helper()
	got, arrived := f.readOneEach(completed, keys, timeout)
	perKey := map[string]int{}
	for _, b := range f.vendorBatches() {
		key := b.Metadata[contract.MetaIdempotencyKey]
		perKey[key]++
		require.Equal(f.t, 1, perKey[key], "two vendor batches for %s", key)
		job := key
		if of := b.Metadata[contract.MetaRetryOf]; of != "" {
			job = of
		}
		if _, ours := got[job]; !ours {
			continue
		}
		require.Contains(f.t, got[job].BatchIDs, b.ID, "orphan: vendor batch %s of %s not in its batch_ids", b.ID, job)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	adm, err := admission.Open(ctx, f.JS, admission.Limits{MaxActive: 40}, 1)
	require.NoError(f.t, err)
	fleettest.WaitFor(f.t, 30*time.Second, func() bool {
		s, _, err := adm.Snapshot(ctx)
		return err == nil && len(s.Active) == 0
	}, "no admission slot held at the end")
	f.t.Logf("%d jobs completed once each; %d vendor batches, none twice, none orphaned", len(got), len(perKey))
	return arrived
}

// natsProcess is a JetStream server in a child process that can be
// SIGKILLed and started again on the same port and store.
type natsProcess struct {
	t     *testing.T
	bin   string
	env   []string
	proc  *fleettest.Process
	url   string
	count int
}

func startNATSProcess(t *testing.T) *natsProcess {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	n := &natsProcess{t: t, bin: fleettest.BuildBinary(t, "e2e/testdata/natsd"),
		env: []string{"NATSD_PORT=" + strconv.Itoa(port), "NATSD_STORE=" + t.TempDir()},
		url: "nats://127.0.0.1:" + strconv.Itoa(port)}
	n.start()
	return n
}

func (n *natsProcess) start() {
	n.count++
	n.proc = fleettest.StartProcess(n.t, n.bin, n.env, fmt.Sprintf("natsd-%d", n.count))
	n.proc.WaitForLine(n.t, "natsd ready", 30*time.Second)
}

func (n *natsProcess) kill() { n.proc.Kill() }

// NATS is SIGKILLed and restarted 4 times, 2s apart, while 60 jobs run.
func TestChaosNATSKilled(t *testing.T) {
	ns := startNATSProcess(t)
	f := startFleet(t, fleetOpts{NATSURL: ns.url, WorkerEnv: chaosEnv})
	f.start("submitter", 2)
	f.start("poller", 2)
	f.start("notifier", 2)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.chaosJobs("nats", 60)
	for range 4 {
		time.Sleep(2 * time.Second) // the fault schedule, not synchronisation
		ns.kill()
		ns.start()
	}
	f.checkPromises(completed, keys, 5*time.Minute)
}

// The vendor drops half the creates after creating the batch and fails
// 70% of GETs and List calls for 25s, then is healthy.
func TestChaosVendorFaults(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: chaosEnv})
	f.start("submitter", 2)
	f.start("poller", 2)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.setFaults(emulator.Faults{DropAfterCreateRate: 0.5, Ops: map[string]emulator.OpFaults{
		emulator.OpGet: {ServerErrorRate: 0.7}, emulator.OpList: {ServerErrorRate: 0.7},
	}})
	keys := f.chaosJobs("vendor", 60)
	time.Sleep(25 * time.Second) // the fault window
	f.setFaults(emulator.Faults{})
	f.checkPromises(completed, keys, 5*time.Minute)
}

// A submitter is stopped (SIGSTOP) for 40s in the middle of its creates,
// then continued: it wakes holding stale locks and old messages.
func TestChaosSubmitterStopped(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=100ms"}, WorkerEnv: chaosEnv})
	subs := f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.chaosJobs("stop", 60)
	subs[0].WaitForLine(t, "vendor batch created", 30*time.Second)
	require.NoError(t, syscall.Kill(subs[0].Pid(), syscall.SIGSTOP))
	time.Sleep(40 * time.Second) // the pause being simulated
	require.NoError(t, syscall.Kill(subs[0].Pid(), syscall.SIGCONT))
	f.checkPromises(completed, keys, 5*time.Minute)
}

// Redis is stopped for 20s and comes back empty (no persistence).
func TestChaosRedisLost(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=50ms"}, WorkerEnv: chaosEnv})
	f.start("submitter", 2)
	f.start("poller", 2)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.chaosJobs("redis", 60)
	time.Sleep(time.Second) // let some creates start
	f.Redis.Kill()
	time.Sleep(20 * time.Second) // the outage
	f.Redis.Restart(t)
	f.checkPromises(completed, keys, 5*time.Minute)
}

// Every JetStream consumer is deleted in the middle of a run; 20 more jobs
// published after that complete within 60s.
func TestChaosConsumersDeleted(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: chaosEnv})
	f.start("submitter", 2)
	f.start("poller", 2)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.chaosJobs("consumers", 40)
	time.Sleep(3 * time.Second) // mid-run
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deleted := 0
	for _, name := range []string{stream.Requests, stream.Work, stream.Cancels} {
		s, err := f.JS.Stream(ctx, name)
		require.NoError(t, err)
		for info := range s.ListConsumers(ctx).Info() {
			require.NoError(t, f.JS.DeleteConsumer(ctx, name, info.Name))
			deleted++
		}
	}
	t.Logf("deleted %d consumers", deleted)
	more := f.chaosJobs("after", 20)
	published := time.Now()
	arrived := f.checkPromises(completed, append(keys, more...), 5*time.Minute)
	var last time.Time
	for _, k := range more {
		if arrived[k].After(last) {
			last = arrived[k]
		}
	}
	t.Logf("the 20 jobs published after the deletion completed %.1fs after their publish", last.Sub(published).Seconds())
	if os.Getenv("CHAOS_DEBUG") != "" {
		for kind, ps := range f.procs {
			for _, p := range ps {
				for _, l := range p.Lines() {
					if strings.Contains(l, `"warn"`) || strings.Contains(l, "consume") {
						t.Log(kind, l)
					}
				}
			}
		}
	}
	require.Less(t, last.Sub(published), 60*time.Second, "jobs published after the deletion complete within 60s")
}
