package contract_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

func TestDecodeItemDefaults(t *testing.T) {
	it, id, err := contract.DecodeItem([]byte(`{"custom_id":"row-1","body":{"model":"gpt-4o-mini","messages":[]}}`))
	require.NoError(t, err)
	require.Equal(t, "row-1", id)
	require.Equal(t, contract.ProviderOpenAI, it.Provider)
	require.Equal(t, contract.DefaultEndpoint, it.Endpoint)
	require.Equal(t, "gpt-4o-mini", it.Model())

	it, _, err = contract.DecodeItem([]byte(`{"custom_id":"c_1","provider":"anthropic","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[]},"metadata":{"row":"7"}}`))
	require.NoError(t, err)
	require.Equal(t, contract.AnthropicEndpoint, it.Endpoint, "anthropic's default endpoint")
	require.Equal(t, map[string]string{"row": "7"}, it.Metadata)
	require.Equal(t, "c_1:item", contract.ItemCompletedMsgID(it.CustomID))
}

func TestDecodeItemRules(t *testing.T) {
	body := `"body":{"model":"m"}`
	cases := []struct {
		name, msg, code, id string
	}{
		{"empty", ``, contract.CodeInvalidJSON, ""},
		{"not an object", `[1]`, contract.CodeInvalidJSON, ""},
		{"no custom_id", `{` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id with a dot", `{"custom_id":"a.b",` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id too long", `{"custom_id":"` + strings.Repeat("x", 65) + `",` + body + `}`, contract.CodeInvalidInput, ""},
		{"custom_id of 64", `{"custom_id":"` + strings.Repeat("x", 64) + `",` + body + `}`, "", strings.Repeat("x", 64)},
		{"wrong type", `{"custom_id":"a","body":{"model":"m"},"metadata":[]}`, contract.CodeInvalidField, "a"},
		{"trailing data", `{"custom_id":"a",` + body + `} {}`, contract.CodeInvalidJSON, ""},
		{"bad provider", `{"custom_id":"a","provider":"x",` + body + `}`, contract.CodeInvalidField, "a"},
		{"bad endpoint", `{"custom_id":"a","endpoint":"/v1/nope",` + body + `}`, contract.CodeInvalidEndpoint, "a"},
		{"anthropic on a chat endpoint", `{"custom_id":"a","provider":"anthropic","endpoint":"/v1/chat/completions",` + body + `}`, contract.CodeInvalidEndpoint, "a"},
		{"body not an object", `{"custom_id":"a","body":"hi"}`, contract.CodeInvalidInput, "a"},
		{"no body", `{"custom_id":"a"}`, contract.CodeInvalidInput, "a"},
		{"no model", `{"custom_id":"a","body":{"messages":[]}}`, contract.CodeInvalidInput, "a"},
		{"reserved metadata", `{"custom_id":"a",` + body + `,"metadata":{"idempotency_key":"x"}}`, contract.CodeInvalidMetadata, "a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, id, err := contract.DecodeItem([]byte(c.msg))
			require.Equal(t, c.id, id, "the custom_id usable for the answer")
			if c.code == "" {
				require.NoError(t, err)
				return
			}
			var ce *contract.Error
			require.True(t, errors.As(err, &ce), "%v", err)
			require.Equal(t, c.code, ce.Code, ce.Message)
		})
	}
}

func TestItemCompletedShape(t *testing.T) {
	ev := contract.ItemCompleted{CustomID: "a", Outcome: contract.OutcomeSucceeded, JobKey: "pack-x", BatchID: "batch_1",
		Response: &contract.ItemResponse{StatusCode: 200, Body: json.RawMessage(`{"id":"r"}`)}, Metadata: map[string]string{}}
	data, err := json.Marshal(ev)
	require.NoError(t, err)
	require.JSONEq(t, `{"custom_id":"a","outcome":"succeeded","response":{"status_code":200,"body":{"id":"r"}},"job_key":"pack-x","batch_id":"batch_1","metadata":{}}`, string(data))
}
