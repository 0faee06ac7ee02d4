package e2e

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// A fleet without ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL refuses an
// anthropic job clearly (dead letter, failed batch.completed) and sends
// it nowhere; its OpenAI jobs run as before.
func TestAnthropicNotConfigured(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	off := []string{"ANTHROPIC_API_KEY=", "ANTHROPIC_BASE_URL="}
	f.start("submitter", 1, off...)
	f.start("poller", 1, off...)
	f.start("notifier", 1, off...)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "claude-off", Provider: contract.ProviderAnthropic,
		Requests: []contract.RequestItem{{CustomID: "q1", Body: json.RawMessage(`{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}`)}}}, true)
	f.publish(contract.Request{IdempotencyKey: "gpt-on", Requests: chatRequests("gpt-on", 2)}, true)
	events, _ := f.readOneEach(completed, []string{"claude-off", "gpt-on"}, 60*time.Second)
	require.Equal(t, contract.OutcomeFailed, events["claude-off"].Outcome)
	require.Equal(t, contract.CodeProviderUnavailable, events["claude-off"].Error.Code)
	require.Contains(t, events["claude-off"].Error.Message, "ANTHROPIC_API_KEY")
	require.Equal(t, []string{}, events["claude-off"].BatchIDs)
	require.Equal(t, contract.OutcomeSucceeded, events["gpt-on"].Outcome)
	fleettest.WaitFor(t, 10*time.Second, func() bool {
		l, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
		return err == nil && len(l) == 1
	}, "the anthropic job dead-lettered")
	letters, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
	require.NoError(t, err)
	require.Equal(t, contract.CodeProviderUnavailable, letters[0].Headers[contract.HeaderErrorCode][0])
	var anthropicBatches struct {
		Data []json.RawMessage `json:"data"`
	}
	f.adminGet("/_emulator/batches?provider=anthropic", &anthropicBatches)
	require.Empty(t, anthropicBatches.Data, "nothing sent to the vendor")
}
