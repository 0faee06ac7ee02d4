package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// purgeFinals drops every hand-off to the notifiers, as an operator's
// mistake or a stream restored from an old backup would: only the
// rescuer, reading the job records, can finish those jobs.
func (f *fleet) purgeFinals() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := f.JS.Stream(ctx, stream.Work)
	require.NoError(f.t, err)
	require.NoError(f.t, s.Purge(ctx, jetstream.WithPurgeSubject(stream.SubjectFinal)))
}

// Two jobs lose their hand-off to the notifiers: one after its batch
// ended (never collected), one after its outcome was recorded (never
// published). The rescuer finds both in the job records and re-drives
// them; each completes once.
func TestRescuerFinishesJobsWhoseHandOffWasLost(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RESCUE_INTERVAL=500ms", "RESCUE_AFTER=2s"}})
	f.start("submitter", 1)
	f.start("poller", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	finalStates := subscribe[contract.State](f, contract.StateSubject(contract.StatusCompleted))

	// 1: a notifier records the outcome and dies before publishing it.
	victim := f.start("notifier", 1, failpoint.Env+"=notify/after-attempt-final=kill")[0]
	f.publish(contract.Request{IdempotencyKey: "rescue-complete", Requests: chatRequests("rescue-complete", 2)}, true)
	awaitKilled(t, victim, 90*time.Second)
	// 2: a batch ends while no notifier runs.
	f.publish(contract.Request{IdempotencyKey: "rescue-collect", Requests: chatRequests("rescue-collect", 2)}, true)
	fleettest.ReadN(t, finalStates, 2, 60*time.Second)
	// The poll record says final only once the hand-off is published.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := jobstore.Open(ctx, f.JS, jobstore.Settings{})
	require.NoError(t, err)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		for _, b := range f.vendorBatches() {
			if b.Metadata[contract.MetaIdempotencyKey] == "rescue-collect" {
				st, err := store.GetPoll(ctx, b.ID)
				return err == nil && st.Final
			}
		}
		return false
	}, "rescue-collect handed to the notifiers")
	f.purgeFinals()

	rescuer := f.start("notifier", 1)[0]
	got := map[string]int{}
	for _, ev := range fleettest.ReadN(t, completed, 2, 60*time.Second) {
		got[ev.IdempotencyKey]++
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, ev.IdempotencyKey)
	}
	require.Equal(t, map[string]int{"rescue-complete": 1, "rescue-collect": 1}, got)
	rescuer.WaitForLine(t, `"what":"complete","idempotency_key":"rescue-complete"`, 5*time.Second)
	rescuer.WaitForLine(t, `"what":"collect","idempotency_key":"rescue-collect"`, 5*time.Second)
	f.noMore(completed, "rescue-sentinel")
}
