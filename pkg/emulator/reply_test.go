package emulator_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"
)

// TestReplyBytes: ReplyBytes pads the reply text of every generating
// endpoint to at least that many bytes, the same text for the same
// custom_id; 0 keeps the short reply.
func TestReplyBytes(t *testing.T) {
	t.Parallel()
	const size = 3000
	padded := fast()
	padded.ReplyBytes = size
	short := start(t, fast())
	long := start(t, padded)

	// texts runs one request per endpoint and returns its reply texts.
	texts := func(t *testing.T, h harness) map[string][]string {
		t.Helper()
		got := map[string][]string{}
		for _, tc := range []struct {
			endpoint openai.BatchNewParamsEndpoint
			body     string
			text     func(raw []byte) []string
		}{
			{openai.BatchNewParamsEndpointV1ChatCompletions, `{"model":"gpt-4o","n":2,"messages":[{"role":"user","content":"Hi"}]}`, func(raw []byte) []string {
				var r openai.ChatCompletion
				require.NoError(t, json.Unmarshal(raw, &r))
				require.Len(t, r.Choices, 2)
				return []string{r.Choices[0].Message.Content, r.Choices[1].Message.Content}
			}},
			{openai.BatchNewParamsEndpointV1Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Once"}`, func(raw []byte) []string {
				var r openai.Completion
				require.NoError(t, json.Unmarshal(raw, &r))
				return []string{r.Choices[0].Text}
			}},
			{openai.BatchNewParamsEndpointV1Responses, `{"model":"gpt-4.1","input":"Tell me a joke"}`, func(raw []byte) []string {
				var r responses.Response
				require.NoError(t, json.Unmarshal(raw, &r))
				return []string{r.OutputText()}
			}},
		} {
			line := fmt.Sprintf(`{"custom_id":"req-pad","method":"POST","url":%q,"body":%s}`, tc.endpoint, tc.body)
			seen := h.await(t, h.create(t, h.upload(t, line), tc.endpoint, nil).ID, openai.BatchStatusCompleted)
			out := h.content(t, seen[len(seen)-1].OutputFileID)
			require.Len(t, out, 1)
			got[string(tc.endpoint)] = tc.text(out[0].Response.Body)
		}
		return got
	}

	plain := texts(t, short)
	first, again := texts(t, long), texts(t, long)
	require.Equal(t, first, again, "padding is deterministic")
	for endpoint, replies := range first {
		for i, text := range replies {
			require.GreaterOrEqual(t, len(text), size, endpoint)
			require.Less(t, len(text), size+100, "padded to about ReplyBytes, not far beyond")
			require.True(t, strings.HasPrefix(text, plain[endpoint][i]), "%s: padding follows the short reply %q", endpoint, plain[endpoint][i])
			require.Less(t, len(plain[endpoint][i]), 100, endpoint)
			require.Contains(t, text, "req-pad")
		}
	}
}
