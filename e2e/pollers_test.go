package e2e

import (
	"net"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
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
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=6s", "EMULATOR_LATENCY=20ms"}})
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
		WorkerEnv:   []string{"POLL_INITIAL_INTERVAL=20s", "POLL_MAX_INTERVAL=60s"},
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
