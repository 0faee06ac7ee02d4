package results_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func TestOutcome(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		line   string
		want   results.Outcome
		reason string
	}{
		{"200", okLine("a", 1, 1), results.Succeeded, ""},
		{"201 empty body", `{"custom_id":"a","response":{"status_code":201,"body":null}}`, results.Succeeded, ""},
		{"500 server_error type", failLine("a", 500, "server_error", ""), results.Retryable, "server_error"},
		{"503", failLine("a", 503, "server_error", ""), results.Retryable, "server_error"},
		{"502 without body", `{"custom_id":"a","response":{"status_code":502,"body":null}}`, results.Retryable, "http_502"},
		{"429 rate limit", failLine("a", 429, "requests", "rate_limit_exceeded"), results.Retryable, "rate_limit_exceeded"},
		{"429 tokens", failLine("a", 429, "tokens", ""), results.Retryable, "tokens"},
		{"408", failLine("a", 408, "timeout", ""), results.Retryable, "timeout"},
		{"400 invalid request", failLine("a", 400, "invalid_request_error", "invalid_value"), results.Permanent, "invalid_value"},
		{"400 type only", failLine("a", 400, "invalid_request_error", ""), results.Permanent, "invalid_request_error"},
		{"401", failLine("a", 401, "invalid_request_error", "invalid_api_key"), results.Permanent, "invalid_api_key"},
		{"404 model", failLine("a", 404, "invalid_request_error", "model_not_found"), results.Permanent, "model_not_found"},
		{"409 unknown 4xx", `{"custom_id":"a","response":{"status_code":409,"body":"oops"}}`, results.Permanent, "http_409"},
		{"4xx with a retryable-looking code", failLine("a", 400, "invalid_request_error", "timeout"), results.Permanent, "timeout"},
		{"batch_expired", errLine("a", "batch_expired"), results.Retryable, "batch_expired"},
		{"timeout", errLine("a", "timeout"), results.Retryable, "timeout"},
		{"request_timeout", errLine("a", "request_timeout"), results.Retryable, "request_timeout"},
		{"server_error", errLine("a", "server_error"), results.Retryable, "server_error"},
		{"rate_limit_exceeded", errLine("a", "rate_limit_exceeded"), results.Retryable, "rate_limit_exceeded"},
		{"batch_cancelled", errLine("a", "batch_cancelled"), results.Permanent, "batch_cancelled"},
		{"invalid_request", errLine("a", "invalid_request"), results.Permanent, "invalid_request"},
		{"unknown code", errLine("a", "something_new"), results.Permanent, "something_new"},
		{"empty error", `{"custom_id":"a","error":{}}`, results.Permanent, "unknown"},
		{"2xx with error object", `{"custom_id":"a","response":{"status_code":200,"body":{}},"error":{"code":"batch_expired","message":"m"}}`, results.Retryable, "batch_expired"},
		{"non-JSON-shaped error code", `{"custom_id":"a","response":{"status_code":400,"body":{"error":{"code":42}}}}`, results.Permanent, "http_400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := results.ParseLine([]byte(tt.line))
			require.NoError(t, err)
			require.Equal(t, tt.want, l.Outcome(), "outcome")
			require.Equal(t, tt.reason, l.Reason(), "reason")
		})
	}
}

func TestMessage(t *testing.T) {
	t.Parallel()
	l, err := results.ParseLine([]byte(errLine("a", "batch_expired")))
	require.NoError(t, err)
	require.Equal(t, "not run", l.Message())
	l, err = results.ParseLine([]byte(failLine("a", 500, "server_error", "")))
	require.NoError(t, err)
	require.Equal(t, "failed", l.Message())
	l, err = results.ParseLine([]byte(okLine("a", 1, 1)))
	require.NoError(t, err)
	require.Empty(t, l.Message())
}

func TestOutcomeString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "succeeded", results.Succeeded.String())
	require.Equal(t, "retryable", results.Retryable.String())
	require.Equal(t, "permanent", results.Permanent.String())
	require.Equal(t, "Outcome(0)", results.Outcome(0).String())
}

func TestUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		body  string
		want  results.Usage
		model string
	}{
		{
			"chat completions",
			`{"object":"chat.completion","model":"gpt-4o-mini-2024-07-18","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42,"prompt_tokens_details":{"cached_tokens":0}}}`,
			results.Usage{InputTokens: 12, OutputTokens: 30, TotalTokens: 42}, "gpt-4o-mini-2024-07-18",
		},
		{
			"completions",
			`{"object":"text_completion","model":"gpt-3.5-turbo-instruct","usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}`,
			results.Usage{InputTokens: 5, OutputTokens: 7, TotalTokens: 12}, "gpt-3.5-turbo-instruct",
		},
		{
			"embeddings",
			`{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}`,
			results.Usage{InputTokens: 8, TotalTokens: 8}, "text-embedding-3-small",
		},
		{
			"responses",
			`{"object":"response","model":"gpt-4.1-mini","usage":{"input_tokens":20,"output_tokens":9,"total_tokens":29,"output_tokens_details":{"reasoning_tokens":0}}}`,
			results.Usage{InputTokens: 20, OutputTokens: 9, TotalTokens: 29}, "gpt-4.1-mini",
		},
		{
			"no total",
			`{"model":"m","usage":{"input_tokens":2,"output_tokens":3}}`,
			results.Usage{InputTokens: 2, OutputTokens: 3, TotalTokens: 5}, "m",
		},
		{"no usage", `{"model":"m"}`, results.Usage{}, "m"},
		{"usage of a wrong shape", `{"model":"m","usage":"lots"}`, results.Usage{}, "m"},
		{"body not an object", `[1]`, results.Usage{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			l, err := results.ParseLine([]byte(`{"custom_id":"a","response":{"status_code":200,"body":` + tt.body + `}}`))
			require.NoError(t, err)
			require.Equal(t, tt.want, l.Usage())
			require.Equal(t, tt.model, l.Model())
		})
	}
	l, err := results.ParseLine([]byte(errLine("a", "batch_expired")))
	require.NoError(t, err)
	require.Zero(t, l.Usage())
}
