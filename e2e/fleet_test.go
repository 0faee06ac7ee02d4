package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// TestFleetEndToEnd: 20 jobs of 5 requests through the three binaries end
// as exactly 20 batch.completed events, succeeded 5/5/0, one vendor batch each.
func TestFleetEndToEnd(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	metricsAddr := ln.Addr().String()
	require.NoError(t, ln.Close())
	f.start("submitter", 1, "METRICS_ADDR="+metricsAddr)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	done := subscribe[contract.State](f, contract.StateSubject(contract.StatusCompleted))

	const jobs, per = 20, 5
	for i := range jobs {
		key := fmt.Sprintf("e2e-%02d", i)
		f.publish(contract.Request{
			IdempotencyKey: key, Metadata: map[string]string{"job": key},
			Requests: chatRequests(key, per),
		}, true)
	}
	evs := fleettest.ReadN(t, completed, jobs, 90*time.Second)
	seen := map[string]bool{}
	for _, ev := range evs {
		require.False(t, seen[ev.IdempotencyKey], "second batch.completed for %s", ev.IdempotencyKey)
		seen[ev.IdempotencyKey] = true
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, ev.IdempotencyKey)
		if d := cmp.Diff(contract.Counts{Total: per, Completed: per, Failed: 0}, ev.RequestCounts); d != "" {
			t.Fatalf("%s counts (-want +got):\n%s", ev.IdempotencyKey, d)
		}
		require.Len(t, ev.BatchIDs, 1)
		require.Equal(t, map[string]string{"job": ev.IdempotencyKey}, ev.Metadata)
		require.Len(t, ev.OutputFileIDs, 1)
		require.NotNil(t, ev.Results)
		require.Equal(t, per, ev.Results.Lines)
	}
	per1 := f.batchesPerKey()
	require.Len(t, per1, jobs)
	for k, n := range per1 {
		require.Equal(t, 1, n, "vendor batches for %s", k)
	}
	// One batch.state.completed per batch, coming from the status before it.
	batches := map[string]bool{}
	for _, st := range fleettest.ReadN(t, done, jobs, 10*time.Second) {
		require.False(t, batches[st.BatchID], "second state.completed for %s", st.BatchID)
		batches[st.BatchID] = true
		require.Equal(t, contract.StatusCompleted, st.To)
		require.NotEqual(t, contract.StatusCompleted, st.From)
	}
	// The submitter's metrics and health endpoints.
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Contains(t, string(body), `batchfleet_submit_batches_created_total{endpoint="/v1/chat/completions"} 20`)
	resp, err = http.Get("http://" + metricsAddr + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	select {
	case ev := <-completed:
		t.Fatalf("unexpected extra batch.completed: %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
}
