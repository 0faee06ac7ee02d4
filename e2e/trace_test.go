package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// span is the part of a console-exported span (stdouttrace) the test reads.
type span struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
}

// One job followed from batch.requests to batch.completed across the
// three worker processes: the producer's trace context (traceparent in the
// message's headers) is carried through every hand-off, so the submitter's,
// the poller's and the notifier's spans for the job, the vendor calls among
// them, share its trace id; and their log lines about it carry it too.
func TestTraceFollowsAJobAcrossProcesses(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"OTEL_TRACES_EXPORTER=console", "OTEL_BSP_SCHEDULE_DELAY=100"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	req := contract.Request{IdempotencyKey: "traced-1", Requests: chatRequests("traced-1", 2)}
	data, err := json.Marshal(req)
	require.NoError(t, err)
	msg := &nats.Msg{Subject: contract.SubjectRequests, Data: data, Header: nats.Header{
		"traceparent": []string{"00-" + traceID + "-00f067aa0ba902b7-01"}, "Nats-Msg-Id": []string{req.IdempotencyKey}}}
	_, err = f.JS.PublishMsg(t.Context(), msg)
	require.NoError(t, err)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, "traced-1", ev.IdempotencyKey)

	// Spans are exported in batches every 100ms: wait for the notifier's
	// publish of batch.completed to show up.
	want := map[string][]string{
		// evalsha: the lock script's Redis command (redisotel).
		"submitter": {"process batch.requests", "kv create batch_jobs", "lock acquire", "evalsha", "object put batch_inputs",
			"openai POST /v1/files", "openai POST /v1/batches", "kv update batch_jobs", "publish batchfleet.poll"},
		// The claim's poll, or the List sweep applying the change in the
		// job's trace (kept on the poll record), publishes the states.
		"poller":   {"process batchfleet.poll", "kv update batch_polls", "publish batch.state.completed", "publish batchfleet.final"},
		"notifier": {"process batchfleet.final", "openai GET /v1/files/{id}/content", "object put batch_results", "publish batch.completed"},
	}
	spansOf := func(kind string) map[string]string { // name -> trace id
		out := map[string]string{}
		for _, p := range f.procs[kind] {
			for _, l := range p.Lines() {
				if !strings.HasPrefix(l, `{"Name":`) {
					continue
				}
				var s span
				if json.Unmarshal([]byte(l), &s) == nil && s.SpanContext.TraceID == traceID {
					out[s.Name] = s.SpanContext.TraceID
				}
			}
		}
		return out
	}
	require.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for kind, names := range want {
			got := spansOf(kind)
			for _, n := range names {
				if _, ok := got[n]; !ok {
					return false
				}
			}
		}
		return true
	}, 20*time.Second, 100*time.Millisecond, "every worker's spans of the job in trace %s", traceID)

	// Redis commands are spans too (redisotel), without their statements,
	// which would hold keys and lock tokens.
	for kind, ps := range f.procs {
		for _, p := range ps {
			for _, l := range p.Lines() {
				if strings.HasPrefix(l, `{"Name":`) {
					require.NotContains(t, l, `db.statement`, kind)
					require.NotContains(t, l, `db.query.text`, kind)
				}
			}
		}
	}
	// The log lines about the job carry the trace id.
	f.mu.Lock()
	defer f.mu.Unlock()
	for kind, msg := range map[string]string{"submitter": "vendor batch created", "poller": "state change", "notifier": "job completed"} {
		found := false
		for _, p := range f.procs[kind] {
			for _, l := range p.Lines() {
				if strings.Contains(l, `"message":"`+msg+`"`) && strings.Contains(l, `"idempotency_key":"traced-1"`) {
					require.Contains(t, l, `"trace_id":"`+traceID+`"`, "%s: %s", kind, l)
					found = true
				}
			}
		}
		require.True(t, found, "%s logged %q", kind, msg)
	}
}
