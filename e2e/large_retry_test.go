package e2e

import (
	"bufio"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// TestPartialRetryAtScale runs a 50,000-request job (the vendor's maximum)
// where 5% of the requests fail once: the job ends succeeded after one
// retry batch of exactly those 2,500 requests, and the merged results
// hold one line per request.
func TestPartialRetryAtScale(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)

	const n, every = contract.MaxRequests, 20
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriter(pw)
		for i := range n {
			id := fmt.Sprintf("scale-%d", i)
			if i%every == 0 {
				id = fmt.Sprintf("scale-%s-%d", emulator.TriggerFailOnce, i)
			}
			fmt.Fprintf(bw, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"request %d"}]}}`+"\n", id, i)
		}
		_ = pw.CloseWithError(bw.Flush())
	}()
	ctx := t.Context()
	start := time.Now()
	require.NoError(t, ops.PutIntake(ctx, f.JS, "scale-input", pr))
	f.publish(contract.Request{IdempotencyKey: "scale", InputObject: "scale-input"}, true)
	t.Logf("input put and published in %v", time.Since(start))

	ev := fleettest.ReadN(t, completed, 1, 10*time.Minute)[0]
	t.Logf("batch.completed %v after the publish", time.Since(start))
	require.Equal(t, "scale", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%+v", ev)
	require.Equal(t, contract.Counts{Total: n, Completed: n}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2)
	require.Equal(t, n, ev.Results.Lines)

	r := fleettest.ReadN(t, retries, 1, time.Minute)[0]
	require.Equal(t, contract.Retry{IdempotencyKey: "scale:retry-1", RetryOf: "scale", FailedCount: n / every,
		Attempt: 1, Reason: r.Reason, At: r.At}, r)
	require.Equal(t, "server_error", r.Reason)
	for _, b := range f.vendorBatches() {
		if b.Metadata[contract.MetaIdempotencyKey] == "scale:retry-1" {
			require.EqualValues(t, n/every, b.RequestCounts.Total, "the retry batch holds only the failed requests")
		}
	}
	per := f.resultLines("scale")
	require.Len(t, per, n)
	for id, c := range per {
		require.Equal(t, 1, c, "custom_id %s", id)
	}
	require.Equal(t, map[string]int{"scale": 1, "scale:retry-1": 1}, f.batchesPerKey())
}
