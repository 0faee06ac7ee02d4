package webhook_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/webhook"
)

func TestEnvelope(t *testing.T) {
	t.Parallel()
	ts := time.Date(2025, 6, 1, 14, 0, 0, 123456789, time.FixedZone("CEST", 2*3600))
	env, err := webhook.NewEnvelope(webhook.TypeBatchRetry, ts, map[string]any{"idempotency_key": "k:retry-1", "attempt": 1})
	require.NoError(t, err)
	b, err := json.Marshal(env)
	require.NoError(t, err)
	want := `{"type":"batch.retry","timestamp":"2025-06-01T12:00:00Z","data":{"attempt":1,"idempotency_key":"k:retry-1"}}`
	require.Equal(t, want, string(b))

	var back webhook.Envelope
	require.NoError(t, json.Unmarshal(b, &back))
	wantBack := webhook.Envelope{Type: webhook.TypeBatchRetry, Timestamp: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC),
		Data: json.RawMessage(`{"attempt":1,"idempotency_key":"k:retry-1"}`)}
	if diff := cmp.Diff(wantBack, back); diff != "" {
		t.Fatalf("unmarshal (-want +got):\n%s", diff)
	}

	b, err = json.Marshal(webhook.Envelope{Type: webhook.TypeBatchCompleted, Timestamp: time.Unix(0, 0)})
	require.NoError(t, err)
	require.Equal(t, `{"type":"batch.completed","timestamp":"1970-01-01T00:00:00Z","data":null}`, string(b))

	require.Error(t, json.Unmarshal([]byte(`{"type":"x","timestamp":"yesterday","data":{}}`), &back))
	_, err = webhook.NewEnvelope("x", ts, func() {})
	require.Error(t, err)
}
