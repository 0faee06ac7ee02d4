package e2e

import (
	"bytes"
	"encoding/json"
	"math"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/cli"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// batchfleet runs the operator command against the fleet and returns its
// stdout; a non-zero exit fails the test.
func (f *fleet) batchfleet(args ...string) string {
	f.t.Helper()
	out, errOut, err := f.batchfleetErr(args...)
	require.NoError(f.t, err, "batchfleet %s: %s", strings.Join(args, " "), errOut)
	return out
}

func (f *fleet) batchfleetErr(args ...string) (string, string, error) {
	f.t.Helper()
	cmd := exec.Command(fleettest.BuildBinary(f.t, "cmd/batchfleet"), args...)
	cmd.Env = append(cmd.Environ(), f.env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func decodeJSON[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(s), &v), "-o json must parse: %s", s)
	return v
}

// The operator command against a running fleet: the list filters find
// exactly the jobs of a kind, show lists the state events of a job in the
// order they were published, the report equals the figures computed from
// the run's own batch.completed events, and cancel ends a running job.
func TestOperatorCommands(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms", "MAX_RETRY_ATTEMPTS=1"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	states := subscribe[contract.State](f, contract.SubjectStatePrefix+">")

	want := map[string]string{} // key -> outcome
	for i := range 3 {
		key := "ok-" + string(rune('a'+i))
		f.publish(contract.Request{IdempotencyKey: key, Requests: chatRequests(key, 3+i)}, true)
		want[key] = contract.OutcomeSucceeded
	}
	for i := range 2 {
		key := "part-" + string(rune('a'+i))
		f.publish(contract.Request{IdempotencyKey: key, Requests: items(key, 3, "fail-always", 1+i)}, true)
		want[key] = contract.OutcomePartial
	}
	f.publish(contract.Request{IdempotencyKey: "bad-1", Requests: chatRequests("bad-1-fail-400", 2)}, true)
	want["bad-1"] = contract.OutcomeFailed
	f.publish(contract.Request{IdempotencyKey: "run-1", Requests: items("run-1", 2, "never-finish", 1)}, true)
	// A job of the second provider (contract v1.1) beside the OpenAI ones.
	f.publish(contract.Request{IdempotencyKey: "claude-1", Provider: contract.ProviderAnthropic,
		Requests: []contract.RequestItem{{CustomID: "q1", Body: json.RawMessage(`{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`)}}}, true)
	want["claude-1"] = contract.OutcomeSucceeded

	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	events, _ := f.readOneEach(completed, keys, 120*time.Second)
	per := f.batchesPerKey()
	for _, k := range keys {
		want := 1
		if k == "claude-1" {
			want = 0 // an Anthropic batch carries no metadata: checked by its batch_ids below
		}
		require.Equal(t, want, per[k], "vendor batches for %s", k)
	}
	for k, ev := range events {
		require.Equal(t, want[k], ev.Outcome, k)
	}
	require.Len(t, events["claude-1"].BatchIDs, 1, "one Anthropic batch")

	// jobs ls --status final --outcome partial: exactly the partial jobs.
	page := decodeJSON[ops.Page](t, f.batchfleet("jobs", "ls", "--status", "final", "--outcome", "partial", "-o", "json"))
	var partial []string
	for _, r := range page.Jobs {
		partial = append(partial, r.Key)
		require.Equal(t, "final", r.ListStatus)
	}
	sort.Strings(partial)
	require.Equal(t, []string{"part-a", "part-b"}, partial)
	table := f.batchfleet("jobs", "ls", "--status", "final", "--outcome", "partial")
	require.Contains(t, table, "part-a")
	require.NotContains(t, table, "ok-a")

	// The running job is listed active, with its cost so far.
	require.Eventually(t, func() bool {
		p := decodeJSON[ops.Page](t, f.batchfleet("jobs", "ls", "--status", "active", "-o", "json"))
		return len(p.Jobs) == 1 && p.Jobs[0].Key == "run-1" && p.Jobs[0].Status == contract.StatusInProgress
	}, 30*time.Second, 200*time.Millisecond, "run-1 listed active")

	// jobs show: every batch.state event of the job, in order.
	view := decodeJSON[cli.JobView](t, f.batchfleet("jobs", "show", "part-a", "-o", "json"))
	var recorded []string
	for _, e := range view.Timeline {
		if e.Kind == "state" {
			recorded = append(recorded, e.BatchID+" "+e.To)
		}
	}
	// The published events, up to the last batch's terminal one.
	var published []string
	last := recorded[len(recorded)-1]
	deadline := time.After(10 * time.Second)
	for !slices.Contains(published, last) {
		select {
		case ev := <-states:
			if ev.IdempotencyKey == "part-a" || ev.RetryOf == "part-a" {
				published = append(published, ev.BatchID+" "+ev.To)
			}
		case <-deadline:
			require.Failf(t, "state events published", "want %q among %q", last, published)
		}
	}
	// The timeline holds every published transition, in order; it may
	// hold more: the status the vendor answered the create with, which a
	// poll may never see (validating for 100ms here).
	i := 0
	for _, r := range recorded {
		if i < len(published) && r == published[i] {
			i++
		} else {
			require.True(t, strings.HasSuffix(r, " "+contract.StatusValidating), "unpublished %q in %q (published %q)", r, recorded, published)
		}
	}
	require.Equal(t, len(published), i, "published %q, recorded %q", published, recorded)
	require.Len(t, view.Attempts, 2, "original and one retry")
	require.Equal(t, "final", view.Status)
	text := f.batchfleet("jobs", "show", "part-a")
	for _, s := range []string{"Outcome:   partial", "Timeline:", "retry", "completed"} {
		require.Contains(t, text, s)
	}

	// jobs cancel ends the running job cancelled.
	f.batchfleet("jobs", "cancel", "run-1")
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, "run-1", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeCancelled, ev.Outcome)
	events["run-1"] = ev
	_, errOut, err := f.batchfleetErr("jobs", "cancel", "run-1")
	require.Error(t, err, "cancelling a final job is an error")
	require.Contains(t, errOut, "already final")

	// report: the figures of the run's own batch.completed events.
	r := decodeJSON[ops.Report](t, f.batchfleet("report", "--since", "1h", "-o", "json"))
	exp := expectedReport(events)
	require.Equal(t, exp.Jobs, r.Jobs)
	require.Equal(t, exp.ByOutcome, r.ByOutcome)
	require.Equal(t, exp.Requests, r.Requests)
	require.Equal(t, exp.Usage, r.Usage)
	require.InDelta(t, exp.CostUSD, r.CostUSD, 1e-12)
	require.InDelta(t, exp.AvgSeconds, r.AvgSeconds, 1e-9)
	require.Equal(t, exp.P50Seconds, r.P50Seconds)
	require.Equal(t, exp.P95Seconds, r.P95Seconds)
	require.InDelta(t, exp.CostUSD, r.SyncCostUSD-r.SavingsUSD, 1e-12)
	require.Equal(t, map[string]int{"queued": 0, "submitted": 0, "active": 0}, r.Unfinished)
	// Per model (sorted): the Claude job has its own.
	require.Len(t, r.Models, 2)
	require.Equal(t, "claude-haiku-4-5", r.Models[0].Model)
	require.Equal(t, map[string]int{"succeeded": 1}, r.Models[0].ByOutcome)
	require.Equal(t, "gpt-4o-mini", r.Models[1].Model)
	require.Equal(t, exp.Jobs-1, r.Models[1].Jobs)
	require.Contains(t, f.batchfleet("report", "--since", "1h"), "TOTAL")

	// Bad input: a clear error and a non-zero exit.
	_, errOut, err = f.batchfleetErr("jobs", "ls", "--status", "running")
	require.Error(t, err)
	require.Contains(t, errOut, `unknown status "running"`)
	_, errOut, err = f.batchfleetErr("jobs", "show", "no-such-job")
	require.Error(t, err)
	require.Contains(t, errOut, `no job "no-such-job"`)
}

// expectedReport computes the report's figures from batch.completed events.
func expectedReport(events map[string]contract.Completed) ops.Report {
	var r ops.Report
	r.ByOutcome = map[string]int{}
	var ds []time.Duration
	var sum time.Duration
	for _, ev := range events {
		r.Jobs++
		r.ByOutcome[ev.Outcome]++
		d := ev.CompletedAt.Sub(ev.CreatedAt).Truncate(time.Millisecond) // the report's resolution
		ds, sum = append(ds, d), sum+d
		r.Requests.Total += ev.RequestCounts.Total
		r.Requests.Completed += ev.RequestCounts.Completed
		r.Requests.Failed += ev.RequestCounts.Failed
		if ev.Usage != nil {
			r.Usage.InputTokens += ev.Usage.InputTokens
			r.Usage.OutputTokens += ev.Usage.OutputTokens
			r.Usage.TotalTokens += ev.Usage.TotalTokens
		}
		if ev.CostUSD != nil {
			r.CostUSD += *ev.CostUSD
		}
	}
	slices.Sort(ds)
	r.AvgSeconds = (sum / time.Duration(len(ds))).Seconds()
	rank := func(p float64) float64 { // nearest rank
		return ds[int(math.Ceil(p*float64(len(ds))))-1].Seconds()
	}
	r.P50Seconds, r.P95Seconds = rank(0.5), rank(0.95)
	return r
}
