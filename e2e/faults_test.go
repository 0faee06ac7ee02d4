package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// The vendor creates the batch and then drops the connection, 30% of the time.
func TestNoDoubleBillingDropAfterCreate(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_DROP_AFTER_CREATE_RATE=0.3", "EMULATOR_SEED=7"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("drop", 20, 3, true)
	evs := f.expectOneEach(completed, keys, 120*time.Second)
	for _, ev := range evs {
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	}
	// Dropped creates are never repeated: each was found at the vendor and adopted.
	require.Equal(t, int64(20), f.stats().CallsByOp[emulator.OpCreate])
	adopted := 0
	for _, l := range f.procs["submitter"][0].Lines() {
		if strings.Contains(l, "the batch exists: adopted") {
			adopted++
		}
	}
	require.Greater(t, adopted, 0, "no create was dropped: the test did not exercise reconciliation")
	t.Logf("%d of 20 creates were dropped after the vendor created the batch; all adopted", adopted)
	f.noMore(completed, "drop-sentinel")
}

// A submitter is SIGKILLed right after Batches.New returned, before it
// recorded the batch: its peer finds the batch at the vendor and adopts it.
func TestNoDoubleBillingKilledBetweenCreateAndRecord(t *testing.T) {
	// The victim may die between another key's create mark and its call:
	// that key waits the create's deadline and margin before its search
	// (2m30s at the defaults), shortened here.
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"VENDOR_CALL_TIMEOUT=5s", "SUBMIT_CREATE_MARGIN=5s"}})
	f.start("poller", 1)
	f.start("notifier", 1)
	victim := f.start("submitter", 1, failpoint.Env+"=submit/after-create=kill@3")[0]
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("kill", 10, 2, true)
	awaitKilled(t, victim, 60*time.Second)
	f.start("submitter", 1)
	f.expectOneEach(completed, keys, 120*time.Second)
	f.noMore(completed, "kill-sentinel")
}

// Redis loses everything twice while submissions are in flight (slow vendor).
func TestNoDoubleBillingRedisLost(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=150ms"}})
	f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("redis", 20, 2, false)
	// Republish every key while Redis is gone, so racing copies meet no lock.
	f.Redis.FlushAll(t)
	for _, k := range keys {
		f.publish(contract.Request{IdempotencyKey: k, Requests: chatRequests(k, 2)}, false)
	}
	f.Redis.Restart(t)
	f.expectOneEach(completed, keys, 180*time.Second)
	f.noMore(completed, "redis-sentinel")
}

// The same key published three times without a message id, the third time
// after its job completed: one batch, one event; the late copy is answered
// from the record.
func TestSameKeyPublishedThreeTimes(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	req := contract.Request{IdempotencyKey: "thrice", Requests: chatRequests("thrice", 3)}
	f.publish(req, false)
	f.publish(req, false)
	f.expectOneEach(completed, []string{"thrice"}, 60*time.Second)
	f.publish(req, false)
	f.procs["submitter"][0].WaitForLine(t, "answered from its record", 30*time.Second)
	f.noMore(completed, "thrice-sentinel")
	require.Equal(t, 1, f.batchesPerKey()["thrice"])
}

// Four submitters race on keys published several times each.
func TestNoDoubleBillingRacingSubmitters(t *testing.T) {
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_LATENCY=50ms"}})
	f.start("submitter", 4)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	var keys []string
	for i := range 15 {
		k := fmt.Sprintf("race-%02d", i)
		keys = append(keys, k)
		req := contract.Request{IdempotencyKey: k, Requests: chatRequests(k, 2)}
		f.publish(req, false)
		f.publish(req, false)
		f.publish(req, true)
	}
	f.expectOneEach(completed, keys, 120*time.Second)
	f.noMore(completed, "race-sentinel")
}

// 429s and 5xx with Retry-After on uploads and creates: every job still
// ends with one batch; a job the vendor never accepts ends failed with the
// vendor's error after its retry budget, not in a hot loop.
func TestVendorPressure(t *testing.T) {
	// A 5xx on create leaves its outcome unknown: the fleet waits out the
	// call's deadline plus SUBMIT_CREATE_MARGIN, then searches, before it
	// creates again; both are shortened here.
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"SUBMIT_MAX_TRIES=3", "VENDOR_CALL_TIMEOUT=2s", "SUBMIT_CREATE_MARGIN=500ms"}})
	f.setFaults(emulator.Faults{RetryAfter: 200 * time.Millisecond, Ops: map[string]emulator.OpFaults{
		emulator.OpUpload: {RateLimitRate: 0.3, ServerErrorRate: 0.1},
		emulator.OpCreate: {RateLimitRate: 0.3, ServerErrorRate: 0.2},
	}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("pressure", 10, 2, true)
	per := map[string]int{}
	var ok, failed int
	for _, ev := range fleettest.ReadN(t, completed, len(keys), 180*time.Second) {
		per[ev.IdempotencyKey]++
		require.Equal(t, 1, per[ev.IdempotencyKey], "second batch.completed for %s", ev.IdempotencyKey)
		switch ev.Outcome {
		case contract.OutcomeSucceeded:
			ok++
			require.Len(t, ev.BatchIDs, 1)
		case contract.OutcomeFailed:
			// The retry budget (3 tries) ran out under 30-50% vendor errors.
			failed++
			require.Equal(t, contract.CodeSubmitFailed, ev.Error.Code, ev.Error.Message)
		default:
			t.Fatalf("%s: outcome %s", ev.IdempotencyKey, ev.Outcome)
		}
	}
	for k, n := range f.batchesPerKey() {
		require.LessOrEqual(t, n, 1, "vendor batches for %s", k)
	}
	require.Greater(t, ok, 0)
	t.Logf("under pressure: %d succeeded, %d failed after 3 tries", ok, failed)

	// Now the vendor refuses every create: the job fails after 3 tries.
	f.setFaults(emulator.Faults{RetryAfter: 100 * time.Millisecond, Ops: map[string]emulator.OpFaults{
		emulator.OpCreate: {RateLimitRate: 1},
	}})
	before := f.stats().CallsByOp[emulator.OpCreate]
	f.publish(contract.Request{IdempotencyKey: "refused", Requests: chatRequests("refused", 1)}, true)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, "refused", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.Equal(t, contract.CodeSubmitFailed, ev.Error.Code)
	require.Contains(t, ev.Error.Message, "429")
	require.Empty(t, ev.BatchIDs)
	require.Equal(t, int64(3), f.stats().CallsByOp[emulator.OpCreate]-before, "exactly SUBMIT_MAX_TRIES creates")
}

// 20 jobs meet a fleet-wide cap of 3 active batches: the vendor never sees
// more than 3 at once and all 20 complete.
func TestAdmissionCap(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"MAX_ACTIVE_BATCHES=3"}})
	f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	keys := f.publishJobs("cap", 20, 2, true)
	evs := f.expectOneEach(completed, keys, 180*time.Second)
	for _, ev := range evs {
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	}
	st := f.stats()
	require.LessOrEqual(t, st.MaxActive, 3, "max batches active at the vendor at once")
	require.Equal(t, 3, st.MaxActive, "the cap was reached (the test exercised it)")
	t.Logf("emulator: %d batches created, max active at once %d", st.BatchesCreated, st.MaxActive)
}

// The vendor refuses batches beyond its enqueued token limit
// (token_limit_exceeded): they are re-queued after a delay, never
// reported failed, and the re-queues do not use up the retry budget.
// With the fleet's own per-model budget set, the vendor never refuses one.
func TestTokenLimit(t *testing.T) {
	for _, fleetBudget := range []bool{false, true} {
		t.Run(fmt.Sprintf("fleet_budget=%v", fleetBudget), func(t *testing.T) {
			env := []string{"TOKEN_LIMIT_REQUEUE_DELAY=300ms", "MAX_RETRY_ATTEMPTS=0"}
			if fleetBudget {
				env = append(env, "ENQUEUED_TOKEN_LIMITS=gpt-4o-mini=15")
			}
			f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_ENQUEUED_TOKEN_LIMIT=15"}, WorkerEnv: env})
			f.start("submitter", 2)
			f.start("poller", 1)
			f.start("notifier", 1)
			completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
			retries := subscribe[contract.Retry](f, contract.SubjectRetry)
			queued := subscribe[contract.State](f, contract.StateSubject(contract.StatusQueued))
			keys := f.publishJobs("tokens", 4, 2, true)
			for _, ev := range fleettest.ReadN(t, completed, len(keys), 120*time.Second) {
				require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, ev.IdempotencyKey)
				require.Equal(t, contract.Counts{Total: 2, Completed: 2}, ev.RequestCounts)
			}
			refused := 0
			for _, b := range f.vendorBatches() {
				if b.Status == emulator.StatusFailed {
					refused++
				}
			}
			if fleetBudget {
				require.Zero(t, refused, "the fleet's budget kept every batch under the vendor's limit")
				require.NotEmpty(t, fleettest.ReadN(t, queued, 1, 5*time.Second), "waits reported as batch.state.queued")
				return
			}
			require.Positive(t, refused, "the vendor refused some batches (the test exercised the limit)")
			for _, r := range fleettest.ReadN(t, retries, refused, 10*time.Second) {
				require.Equal(t, "token_limit_exceeded", r.Reason)
			}
			t.Logf("%d batches refused for the token limit, all re-queued", refused)
		})
	}
}
