package e2e

import (
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

// calls returns the emulator's call log for one op.
func (f *fleet) calls(op string) []emulator.Call {
	f.t.Helper()
	var out struct {
		Data []emulator.Call `json:"data"`
	}
	f.adminGet("/_emulator/calls", &out)
	var sel []emulator.Call
	for _, c := range out.Data {
		if c.Op == op {
			sel = append(sel, c)
		}
	}
	return sel
}

// assertNoOverlappingGets fails if two GETs of one batch were in flight at
// the same moment: each batch is polled by one poller at a time.
func (f *fleet) assertNoOverlappingGets() int {
	f.t.Helper()
	byBatch := map[string][]emulator.Call{}
	gets := f.calls(emulator.OpGet)
	for _, c := range gets {
		byBatch[c.BatchID] = append(byBatch[c.BatchID], c)
	}
	for id, cs := range byBatch {
		sort.Slice(cs, func(i, j int) bool { return cs[i].StartedAt.Before(cs[j].StartedAt) })
		for i := 1; i < len(cs); i++ {
			require.False(f.t, cs[i].StartedAt.Before(cs[i-1].EndedAt),
				"batch %s: GET at %s overlaps GET %s..%s", id, cs[i].StartedAt, cs[i-1].StartedAt, cs[i-1].EndedAt)
		}
	}
	return len(gets)
}

// A poller holding 50 active jobs is SIGKILLed: its peers take them over
// within the lease and every job completes exactly once; no batch is ever
// polled by two pollers at the same moment.
func TestPollerKilledJobsTakenOver(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=6s", "EMULATOR_LATENCY=20ms"},
		WorkerEnv: []string{"POLL_SWEEP_INTERVAL=0"}}) // the claims alone
	f.start("submitter", 1)
	f.start("notifier", 1)
	victim := f.start("poller", 1)[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	inProgress := subscribe[contract.State](f, contract.StateSubject(contract.StatusInProgress))
	keys := f.publishJobs("takeover", 50, 2, true)
	// All 50 are active and held by the victim (the only poller so far).
	fleettest.ReadN(t, inProgress, 50, 60*time.Second)
	f.start("poller", 2)
	victim.Kill()
	killed := time.Now()
	evs := f.expectOneEach(completed, keys, 120*time.Second)
	for _, ev := range evs {
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	}
	t.Logf("all 50 jobs completed %.1fs after the kill (lease 15s)", time.Since(killed).Seconds())
	gets := f.assertNoOverlappingGets()
	t.Logf("%d vendor GETs, none overlapping for one batch", gets)
	f.noMore(completed, "takeover-sentinel")
}

// With vendor webhooks on, completion is detected in well under a second
// although the pollers' own schedule would only look again after 20s.
func TestVendorWebhooksDetectCompletionFast(t *testing.T) {
	const secret = "whsec_c2VjcmV0LWZvci10aGUtdmVuZG9yLXdlYmhvb2tz"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_WEBHOOK_URL=http://" + addr + "/webhooks/openai", "EMULATOR_WEBHOOK_SECRET=" + secret},
		WorkerEnv:   []string{"POLL_INITIAL_INTERVAL=20s", "POLL_MAX_INTERVAL=60s", "POLL_SWEEP_INTERVAL=0"},
	})
	f.start("submitter", 1)
	f.start("notifier", 1)
	f.start("poller", 1, "VENDOR_WEBHOOK_ADDR="+addr, "OPENAI_WEBHOOK_SECRET="+secret)
	f.start("poller", 1) // a second poller without the endpoint: whichever holds a claim, the webhook path polls at once
	done := subscribe[contract.State](f, contract.StateSubject(contract.StatusCompleted))
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("hooked", 20, 2, true)
	states := fleettest.ReadN(t, done, len(keys), 60*time.Second)
	f.expectOneEach(completed, keys, 30*time.Second)
	terminal := map[string]time.Time{}
	for _, b := range f.vendorBatches() {
		terminal[b.ID] = b.TerminalAt
	}
	var lat []time.Duration
	for _, st := range states {
		at, ok := terminal[st.BatchID]
		require.True(t, ok && !at.IsZero(), "terminal time of %s", st.BatchID)
		lat = append(lat, st.At.Sub(at))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[(len(lat)*99+99)/100-1]
	t.Logf("detection latency vendor terminal -> batch.state.completed over %d batches: p50 %s, p99 %s, max %s",
		len(lat), p50.Round(time.Millisecond), p99.Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	require.Less(t, p99, time.Second)
}

// The List sweep's leader is SIGKILLed while 20 jobs are in progress: the
// other poller takes the leadership over within the lock's TTL (5s) and
// detects every completion, long before the dead poller's claims could be
// taken over (a 40s lease here) or the claims' own 30s schedule; every job
// completes exactly once, and no poller GETs a batch.
func TestSweepLeaderKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=6s"},
		WorkerEnv:   []string{"POLL_INITIAL_INTERVAL=30s", "POLL_MAX_INTERVAL=60s", "POLL_LEASE=40s", "POLL_SWEEP_INTERVAL=300ms"},
	})
	f.start("submitter", 1)
	f.start("notifier", 1)
	leader := f.start("poller", 1)[0]
	store, err := jobstore.Open(t.Context(), f.JS, jobstore.Settings{})
	require.NoError(t, err)
	sweptBy := func() string {
		rec, err := store.GetSweep(t.Context())
		if err != nil || time.Since(rec.FinishedAt) > 2*time.Second {
			return ""
		}
		return rec.Leader
	}
	fleettest.WaitFor(t, 30*time.Second, func() bool { return strings.HasSuffix(sweptBy(), "/"+strconv.Itoa(leader.Pid())) },
		"the first poller leads the sweep")
	other := f.start("poller", 1)[0]
	inProgress := subscribe[contract.State](f, contract.StateSubject(contract.StatusInProgress))
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("swept", 20, 2, true)
	fleettest.ReadN(t, inProgress, len(keys), 60*time.Second)
	leader.Kill()
	killed := time.Now()
	f.expectOneEach(completed, keys, 30*time.Second)
	t.Logf("all %d jobs completed %.1fs after the sweep leader was killed", len(keys), time.Since(killed).Seconds())
	require.True(t, strings.HasSuffix(sweptBy(), "/"+strconv.Itoa(other.Pid())), "the other poller leads now: %q", sweptBy())
	gets := f.assertNoOverlappingGets()
	st := f.stats()
	t.Logf("%d List calls, %d GETs (the notifiers' reads of final batches, and any claim polls) for %d batches", st.CallsByOp[emulator.OpList], gets, len(keys))
	// The notifiers read each final batch once; a claim polls only a batch
	// the sweep had not yet marked listed when its first wait ran out
	// (around the kill), so the pollers add at most a few GETs.
	require.Less(t, gets, 2*len(keys), "the sweep, not per-batch GETs, detected the changes")
	f.noMore(completed, "swept-sentinel")
}

// batch.cancel cancels the vendor batch; what finished is kept, the job
// ends cancelled, and no retry starts.
func TestCancelOnRequest(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	inProgress := subscribe[contract.State](f, contract.StateSubject(contract.StatusInProgress))
	cancelled := subscribe[contract.State](f, contract.StateSubject(contract.StatusCancelled))
	reqs := items("cancel-me", 2, "never-finish", 2)
	f.publish(contract.Request{IdempotencyKey: "cancel-me", Requests: reqs}, true)
	fleettest.ReadN(t, inProgress, 1, 30*time.Second)
	// Wait until the good requests ran, so there is something to keep.
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		for _, b := range f.vendorBatches() {
			if b.RequestCounts.Completed == 2 {
				return true
			}
		}
		return false
	}, "two requests completed at the vendor")
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"cancel-me"}`), "")
	// Unknown and repeated cancels are ignored.
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"no-such-job"}`), "")
	fleettest.ReadN(t, cancelled, 1, 30*time.Second)
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, contract.OutcomeCancelled, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 4, Completed: 2, Failed: 2}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 1, "no retry after a cancel")
	res := f.mergedResults("cancel-me", reqs)
	require.Equal(t, "succeeded", res["cancel-me-ok-0"]["status"])
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"cancel-me"}`), "")
	f.noMore(completed, "cancel-sentinel")
}

// The TimeoutManager: a soft-timeout warning, then at the hard timeout
// the configured action; with "retry" the unrun requests are cancelled and
// retried as a new batch.
func TestTimeouts(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms", "MAX_RETRY_ATTEMPTS=1",
		"POLL_SOFT_TIMEOUT=1s", "POLL_HARD_TIMEOUT=3s", "POLL_TIMEOUT_ACTION=retry"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	warnings := subscribe[contract.Warning](f, contract.SubjectWarning)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	reqs := items("slow", 2, "never-finish", 1)
	f.publish(contract.Request{IdempotencyKey: "slow", Requests: reqs}, true)
	w := fleettest.ReadN(t, warnings, 2, 30*time.Second)
	require.Equal(t, contract.WarningSoftTimeout, w[0].Kind)
	require.Equal(t, contract.WarningHardTimeout, w[1].Kind)
	require.Equal(t, "retry", w[1].Action)
	r := fleettest.ReadN(t, retries, 1, 30*time.Second)[0]
	require.Equal(t, 1, r.FailedCount)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomePartial, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 3, Completed: 2, Failed: 1}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2)
}

// SIGTERM: a worker stops taking work and exits within 10s; the jobs it
// held complete once, through its peers or its successor.
func TestGracefulStop(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=100ms"}})
	subs := f.start("submitter", 2)
	polls := f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("term", 30, 2, true)
	for _, p := range []interface{ Stop(time.Duration) error }{subs[0], polls[0]} {
		start := time.Now()
		require.NoError(t, p.Stop(10*time.Second), "exit status after SIGTERM")
		t.Logf("stopped in %s", time.Since(start).Round(time.Millisecond))
	}
	f.start("poller", 1)
	f.expectOneEach(completed, keys, 120*time.Second)
	f.noMore(completed, "term-sentinel")
}

// The whole fleet and the NATS server restart mid-run: no job is lost.
func TestFleetRestartLosesNothing(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=3s"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	inProgress := subscribe[contract.State](f, contract.StateSubject(contract.StatusInProgress))
	keys := f.publishJobs("restart", 10, 2, true)
	fleettest.ReadN(t, inProgress, 3, 30*time.Second)
	for _, kind := range []string{"submitter", "poller", "notifier"} {
		for _, p := range f.procs[kind] {
			p.Kill()
		}
	}
	f.NATS.Restart(t)
	f.Redis.Restart(t)
	f.startAll()
	f.expectOneEach(completed, keys, 120*time.Second)
}
