package telemetry_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// Every metric of the fleet (and the Go and process collectors) passes
// promlint, and no label could hold a key or a batch id (unbounded).
func TestMetricsLintCleanWithBoundedLabels(t *testing.T) {
	reg := telemetry.Registry()
	m := telemetry.NewMetrics(reg)
	// One observation each, so every family is gathered.
	m.BatchCreated("/v1/chat/completions")
	m.BatchAdopted()
	m.SubmitError("unavailable")
	m.InvalidRequest("invalid_json")
	m.AdmissionWait()
	m.PollGet("claim")
	m.Swept("openai", nil, 3, time.Now())
	m.Swept("anthropic", errors.New("x"), 0, time.Now())
	m.Transition("completed")
	m.JobCompleted("succeeded")
	m.RetryStarted("server_error")
	m.WebhookAttempt("ok")
	m.Rescue("collect")

	problems, err := testutil.GatherAndLint(reg)
	require.NoError(t, err)
	require.Empty(t, problems, "promlint")

	families, err := reg.Gather()
	require.NoError(t, err)
	unbounded := []string{"key", "idempotency_key", "batch_id", "custom_id", "job", "job_key", "id", "file_id"}
	n := 0
	for _, f := range families {
		for _, metric := range f.GetMetric() {
			for _, l := range metric.GetLabel() {
				require.False(t, slices.Contains(unbounded, l.GetName()), "%s has label %s", f.GetName(), l.GetName())
			}
		}
		if len(f.GetName()) > 11 && f.GetName()[:11] == "batchfleet_" {
			n++
		}
	}
	require.Equal(t, 14, n, "every batchfleet metric gathered")
}
