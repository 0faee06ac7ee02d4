package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// Each test kills a worker between a record write and the hand-off that
// must follow it; the redelivered message must re-drive the hand-off
// instead of reading the record as proof that it happened.

// The notifier dies after recording a retry attempt, before handing it to
// the submitters: the redelivered final hand-off hands it off again.
func TestRetryRecordedThenKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms"}})
	f.start("submitter", 1)
	f.start("poller", 1)
	victim := f.start("notifier", 1, failpoint.Env+"=notify/after-retry-recorded=kill")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	f.publish(contract.Request{IdempotencyKey: "redrive-retry", Requests: items("redrive-retry", 2, "fail-once", 2)}, true)
	awaitKilled(t, victim, 90*time.Second)
	f.start("notifier", 1)
	ev := fleettest.ReadN(t, completed, 1, 120*time.Second)[0]
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%+v", ev)
	require.Len(t, ev.BatchIDs, 2)
	r := fleettest.ReadN(t, retries, 1, 10*time.Second)[0]
	require.Equal(t, "redrive-retry:retry-1", r.IdempotencyKey)
	require.Equal(t, 2, r.FailedCount)
	f.noMore(completed, "redrive-retry-sentinel")
}

// The submitter dies after recording an attempt abandoned (the vendor
// refused the create: an input file that does not exist), before freeing
// its slot and handing the job to the notifiers.
func TestAbandonRecordedThenKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"MAX_ACTIVE_BATCHES=1"}})
	f.start("poller", 1)
	f.start("notifier", 1)
	victim := f.start("submitter", 1, failpoint.Env+"=submit/after-abandon-recorded=kill")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "redrive-abandon", InputFileID: "file-nobody-uploaded"}, true)
	awaitKilled(t, victim, 90*time.Second)
	f.start("submitter", 1)
	ev := fleettest.ReadN(t, completed, 1, 120*time.Second)[0]
	require.Equal(t, "redrive-abandon", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.NotNil(t, ev.Error)
	require.Equal(t, contract.CodeVendorRejected, ev.Error.Code)
	// The slot went too: with a cap of one, the next job runs.
	f.noMore(completed, "redrive-abandon-sentinel")
}

// The submitter dies after recording an invalid request's failed job,
// before handing it to the notifiers.
func TestRejectRecordedThenKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.start("poller", 1)
	f.start("notifier", 1)
	victim := f.start("submitter", 1, failpoint.Env+"=submit/after-reject-recorded=kill")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publishRaw(contract.SubjectRequests, []byte(`{"idempotency_key":"redrive-reject","endpoint":"/v1/nope","requests":[{"custom_id":"a","body":{}}]}`), "")
	awaitKilled(t, victim, 90*time.Second)
	f.start("submitter", 1)
	ev := fleettest.ReadN(t, completed, 1, 120*time.Second)[0]
	require.Equal(t, "redrive-reject", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.Equal(t, contract.CodeInvalidEndpoint, ev.Error.Code)
	f.noMore(completed, "redrive-reject-sentinel")
}

// The notifier dies right after recording an attempt final: its
// admission slot must not stay taken (with a cap of one, every later job
// would wait forever).
func TestAdmissionSlotFreedWhenNotifierKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"MAX_ACTIVE_BATCHES=1"}})
	f.start("submitter", 1)
	f.start("poller", 1)
	victim := f.start("notifier", 1, failpoint.Env+"=notify/after-attempt-final=kill")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("slot", 3, 1, true)
	awaitKilled(t, victim, 90*time.Second)
	f.start("notifier", 1)
	f.expectOneEach(completed, keys, 120*time.Second)
	f.noMore(completed, "slot-sentinel")
}

// A submitter stalls (as in a GC or VM pause) right after writing its
// create mark, Redis loses its lock, and a peer takes the republished key:
// the peer waits out the create's fixed deadline plus the margin, finds
// nothing and creates; the stalled submitter, waking after its deadline,
// must not create a second batch.
func TestStalledCreateMarkNoSecondBatch(t *testing.T) {
	// The input file stays, so a late second create would succeed.
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"VENDOR_CALL_TIMEOUT=1s", "SUBMIT_CREATE_MARGIN=300ms", "DELETE_INPUT_FILES=false"}})
	f.start("poller", 1)
	f.start("notifier", 1)
	stalled := f.start("submitter", 1, failpoint.Env+"=submit/after-create-mark=sleep6s")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	req := contract.Request{IdempotencyKey: "stall", Requests: chatRequests("stall", 2)}
	f.publish(req, true)
	stalled.WaitForLine(t, "failpoint submit/after-create-mark: sleeping", 30*time.Second)
	f.Redis.FlushAll(t)
	f.start("submitter", 1)
	f.publish(req, false) // a republish reaches the peer
	stalled.WaitForLine(t, "failpoint submit/after-create-mark: woke up", 30*time.Second)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	require.Len(t, ev.BatchIDs, 1)
	f.noMore(completed, "stall-sentinel")
	require.Equal(t, 1, f.batchesPerKey()["stall"], "vendor batches for the stalled key")
}

// A cancel arrives while the job's batch is being created, and the
// vendor fails the cancel calls for a while: the batch's claim sends the
// cancel again until the vendor takes it, and the job ends cancelled
// (the batch would otherwise run until it expires).
func TestCancelRacingCreateIsRetried(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.start("poller", 1)
	f.start("notifier", 1)
	sub := f.start("submitter", 1, failpoint.Env+"=submit/after-create=sleep3s")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "cancel-race", Requests: items("cancel-race", 1, "never-finish", 1)}, true)
	sub.WaitForLine(t, "failpoint submit/after-create: sleeping", 30*time.Second)
	f.setFaults(emulator.Faults{Ops: map[string]emulator.OpFaults{emulator.OpCancel: {ServerErrorRate: 1}}})
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"cancel-race"}`), "")
	sub.WaitForLine(t, "cancel batch created during cancellation", 30*time.Second)
	fleettest.WaitFor(t, 30*time.Second, func() bool { return f.stats().CallsByOp[emulator.OpCancel] >= 2 },
		"the cancel was sent again after it failed")
	f.setFaults(emulator.Faults{})
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeCancelled, ev.Outcome)
	require.Len(t, ev.BatchIDs, 1)
}

// GETs slower than the claim's lease: the claim is held (InProgress)
// through the whole call, so no other poller takes the batch meanwhile
// and no two GETs of a batch overlap.
func TestClaimHeldThroughSlowGet(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=3s"},
		WorkerEnv: []string{"POLL_LEASE=2s", "POLL_SWEEP_INTERVAL=0", "VENDOR_CALL_TIMEOUT=10s"}})
	f.start("submitter", 1)
	f.start("notifier", 1)
	f.start("poller", 2)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("slow-get", 3, 1, true)
	f.expectOneEach(completed, keys, 120*time.Second)
	gets := f.assertNoOverlappingGets()
	t.Logf("%d GETs of 3s under a 2s lease, none overlapping", gets)
}

// The vendor creates the batch but drops the answer, and its List fails
// for a while, so the search for the batch fails too: the job must not
// end failed (its batch exists and bills) but search again until the
// vendor answers, then adopt the batch.
func TestUnresolvedCreateIsNeverAbandoned(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"SUBMIT_MAX_TRIES=1", "VENDOR_CALL_TIMEOUT=2s", "SUBMIT_CREATE_MARGIN=500ms"}})
	f.setFaults(emulator.Faults{DropAfterCreateRate: 1, Ops: map[string]emulator.OpFaults{emulator.OpList: {ServerErrorRate: 1}}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "unresolved", Requests: chatRequests("unresolved", 2)}, true)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		s := f.stats()
		return s.CallsByOp[emulator.OpCreate] >= 1 && s.CallsByOp[emulator.OpList] >= 3
	}, "the create was dropped and the searches failed")
	select {
	case ev := <-completed:
		t.Fatalf("the job ended while its create was unresolved: %s %+v", ev.Outcome, ev.Error)
	case <-time.After(5 * time.Second): // the window in which the old code gave up
	}
	f.setFaults(emulator.Faults{})
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%+v", ev.Error)
	require.Len(t, ev.BatchIDs, 1)
	require.Equal(t, map[string]int{"unresolved": 1}, f.batchesPerKey())
}
