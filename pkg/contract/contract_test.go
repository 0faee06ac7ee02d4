package contract_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

func TestDecodeRules(t *testing.T) {
	body := `{"model":"m","messages":[]}`
	many := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			fmt.Fprintf(&b, `"k%d":"v"`, i)
		}
		return b.String()
	}
	cases := []struct {
		name, msg, code, key string
	}{
		{"empty", ``, contract.CodeInvalidJSON, ""},
		{"not json", `nope`, contract.CodeInvalidJSON, ""},
		{"array", `[1]`, contract.CodeInvalidJSON, ""},
		{"missing key", `{"requests":[{"custom_id":"a","body":` + body + `}]}`, contract.CodeMissingKey, ""},
		{"bad key chars", `{"idempotency_key":"a b","requests":[{"custom_id":"a","body":` + body + `}]}`, contract.CodeInvalidKey, ""},
		{"key too long", `{"idempotency_key":"` + strings.Repeat("k", 129) + `","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidKey, ""},
		{"reserved retry suffix", `{"idempotency_key":"k:retry-1","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidKey, ""},
		{"key wrong type", `{"idempotency_key":5}`, contract.CodeInvalidField, ""},
		{"bad endpoint", `{"idempotency_key":"k","endpoint":"/v1/x","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidEndpoint, "k"},
		{"bad window", `{"idempotency_key":"k","completion_window":"1h","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidField, "k"},
		{"reserved metadata", `{"idempotency_key":"k","metadata":{"retry_of":"x"},"requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidMetadata, "k"},
		{"too much metadata", `{"idempotency_key":"k","metadata":{` + many(15) + `},"requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidMetadata, "k"},
		{"metadata not strings", `{"idempotency_key":"k","metadata":{"a":1},"requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidField, "k"},
		{"neither input", `{"idempotency_key":"k"}`, contract.CodeInvalidInput, "k"},
		{"both inputs", `{"idempotency_key":"k","input_file_id":"file-1","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidInput, "k"},
		{"object and file", `{"idempotency_key":"k","input_file_id":"file-1","input_object":"o"}`, contract.CodeInvalidInput, "k"},
		{"object and requests", `{"idempotency_key":"k","input_object":"o","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidInput, "k"},
		{"object name too long", `{"idempotency_key":"k","input_object":"` + strings.Repeat("o", 1025) + `"}`, contract.CodeInvalidInput, "k"},
		{"empty requests", `{"idempotency_key":"k","requests":[]}`, contract.CodeInvalidInput, "k"},
		{"missing custom_id", `{"idempotency_key":"k","requests":[{"body":{}}]}`, contract.CodeInvalidInput, "k"},
		{"duplicate custom_id", `{"idempotency_key":"k","requests":[{"custom_id":"a","body":{}},{"custom_id":"a","body":{}}]}`, contract.CodeDuplicateCustomID, "k"},
		{"body not object", `{"idempotency_key":"k","requests":[{"custom_id":"a","body":"x"}]}`, contract.CodeInvalidInput, "k"},
		{"truncated", `{"idempotency_key":"k","requests":[{"custom_id":"a","bo`, contract.CodeInvalidJSON, ""},
		{"unknown provider", `{"idempotency_key":"k","provider":"gemini","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidField, "k"},
		{"anthropic endpoint", `{"idempotency_key":"k","provider":"anthropic","endpoint":"/v1/chat/completions","requests":[{"custom_id":"a","body":{}}]}`, contract.CodeInvalidEndpoint, "k"},
		{"anthropic custom_id", `{"idempotency_key":"k","provider":"anthropic","requests":[{"custom_id":"a.b","body":{}}]}`, contract.CodeInvalidInput, "k"},
		{"anthropic custom_id too long", `{"idempotency_key":"k","provider":"anthropic","requests":[{"custom_id":"` + strings.Repeat("a", 65) + `","body":{}}]}`, contract.CodeInvalidInput, "k"},
		{"anthropic input_file_id", `{"idempotency_key":"k","provider":"anthropic","input_file_id":"file-1"}`, contract.CodeInvalidInput, "k"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, key, err := contract.Decode([]byte(c.msg))
			require.Error(t, err)
			var ce *contract.Error
			require.True(t, errors.As(err, &ce), "%T", err)
			require.Equal(t, c.code, ce.Code, ce.Message)
			require.ErrorIs(t, err, contract.ErrInvalidRequest)
			require.Equal(t, c.key, key)
		})
	}
}

func TestDecodeDefaults(t *testing.T) {
	req, key, err := contract.Decode([]byte(`{"idempotency_key":"job.1:a-b_c","requests":[{"custom_id":"a","body":{"model":"m"}}],"future_field":1}`))
	require.NoError(t, err)
	require.Equal(t, "job.1:a-b_c", key)
	require.Equal(t, contract.DefaultEndpoint, req.Endpoint)
	require.Equal(t, "24h", req.CompletionWindow)
	jsonl, err := req.JSONL()
	require.NoError(t, err)
	require.Equal(t, `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`+"\n", string(jsonl))

	req, _, err = contract.Decode([]byte(`{"idempotency_key":"k","input_file_id":"file-abc","endpoint":"/v1/embeddings"}`))
	require.NoError(t, err)
	require.Equal(t, "file-abc", req.InputFileID)
	require.Equal(t, contract.ProviderOpenAI, req.Provider, "the default provider")

	req, _, err = contract.Decode([]byte(`{"idempotency_key":"k","provider":"anthropic","requests":[{"custom_id":"req_1-a","params_are_body":0,"body":{"model":"claude","max_tokens":5,"messages":[]}}]}`))
	require.NoError(t, err)
	require.Equal(t, contract.AnthropicEndpoint, req.Endpoint, "an anthropic job's default endpoint")
}

func TestRetryKeys(t *testing.T) {
	require.Equal(t, "k:retry-2", contract.RetryKey("k", 2))
	for in, want := range map[string]struct {
		k string
		n int
	}{
		"k": {"k", 0}, "k:retry-1": {"k", 1}, "a:retry-1:retry-12": {"a:retry-1", 12},
		"k:retry-": {"k:retry-", 0}, "k:retry-01": {"k:retry-01", 0}, "k:retry-x": {"k:retry-x", 0},
	} {
		k, n := contract.SplitRetryKey(in)
		require.Equal(t, want.k, k, in)
		require.Equal(t, want.n, n, in)
	}
	require.False(t, contract.ValidKey("k:retry-3"))
	require.True(t, contract.ValidKey("k:retry"))
}

// Every message type survives a JSON round trip unchanged.
func TestEventRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	cost := 0.0125
	for _, v := range []any{
		&contract.Completed{IdempotencyKey: "k", Outcome: contract.OutcomePartial, BatchIDs: []string{"b1", "b2"},
			RequestCounts: contract.Counts{Total: 6, Completed: 4, Failed: 2}, Metadata: map[string]string{"a": "b"},
			Results: &contract.ResultsRef{Store: "s", Bucket: "b", Object: "k", Lines: 6}, Error: &contract.Error{Code: "c", Message: "m"},
			OutputFileIDs: []string{"f1"}, ErrorFileIDs: []string{"f2"}, Attempts: 2, Usage: &contract.Usage{InputTokens: 1, OutputTokens: 2, TotalTokens: 3},
			CostUSD: &cost, CreatedAt: at, CompletedAt: at.Add(time.Hour)},
		&contract.Retry{IdempotencyKey: "k:retry-1", RetryOf: "k", FailedCount: 2, Attempt: 1, Reason: "server_error", At: at},
		&contract.State{IdempotencyKey: "k", BatchID: "b", From: "validating", To: "in_progress", RequestCounts: contract.Counts{Total: 5}, At: at},
		&contract.Progress{IdempotencyKey: "k", BatchID: "b", Status: "in_progress", RequestCounts: contract.Counts{Total: 5, Completed: 2}, At: at},
		&contract.Warning{IdempotencyKey: "k", BatchID: "b", Kind: contract.WarningHardTimeout, Action: "cancel", AgeSeconds: 1, At: at},
		&contract.Cancel{IdempotencyKey: "k"},
		&contract.Request{IdempotencyKey: "k", Endpoint: "/v1/embeddings", CompletionWindow: "24h", Metadata: map[string]string{"x": "y"},
			Requests: []contract.RequestItem{{CustomID: "a", Body: json.RawMessage(`{"model":"m"}`)}}},
	} {
		data, err := json.Marshal(v)
		require.NoError(t, err)
		back := newOf(v)
		require.NoError(t, json.Unmarshal(data, back))
		if d := cmp.Diff(v, back); d != "" {
			t.Fatalf("%T round trip (-want +got):\n%s", v, d)
		}
	}
}

func newOf(v any) any {
	switch v.(type) {
	case *contract.Completed:
		return &contract.Completed{}
	case *contract.Retry:
		return &contract.Retry{}
	case *contract.State:
		return &contract.State{}
	case *contract.Progress:
		return &contract.Progress{}
	case *contract.Warning:
		return &contract.Warning{}
	case *contract.Cancel:
		return &contract.Cancel{}
	case *contract.Request:
		return &contract.Request{}
	}
	panic(fmt.Sprintf("%T", v))
}

// The completed event always carries batch_ids and metadata, even empty.
func TestCompletedRequiredFields(t *testing.T) {
	data, err := json.Marshal(contract.Completed{IdempotencyKey: "k", Outcome: "failed", BatchIDs: []string{}, Metadata: map[string]string{}})
	require.NoError(t, err)
	var m map[string]any
	require.NoError(t, json.Unmarshal(data, &m))
	for _, f := range []string{"idempotency_key", "outcome", "batch_ids", "request_counts", "metadata"} {
		require.Contains(t, m, f)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"idempotency_key":"k","requests":[{"custom_id":"a","body":{"model":"m"}}]}`))
	f.Add([]byte(`{"idempotency_key":"k","input_file_id":"f"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, key, err := contract.Decode(data)
		if err != nil {
			var ce *contract.Error
			if !errors.As(err, &ce) || ce.Code == "" {
				t.Fatalf("error without a code: %v", err)
			}
			if key != "" && !contract.ValidKey(key) {
				t.Fatalf("returned invalid key %q", key)
			}
			return
		}
		out, err := json.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := contract.Decode(out)
		if err != nil {
			t.Fatalf("valid request does not decode again: %v", err)
		}
		out2, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		// Compare encodings: json.Marshal may escape a raw body differently
		// from its producer ("&" as \u0026) without changing its meaning.
		if d := cmp.Diff(string(out), string(out2)); d != "" {
			t.Fatalf("round trip (-first +second):\n%s", d)
		}
	})
}

func ExampleDecode() {
	_, key, err := contract.Decode([]byte(`{"idempotency_key":"nightly-eval-42","requests":[]}`))
	fmt.Println(key, err)
	// Output: nightly-eval-42 invalid_input: requests must hold 1..50000 items, got 0
}
