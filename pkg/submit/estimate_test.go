package submit

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/tokens"
)

// estimate counts each line's body with that line's model: tokenized for
// an OpenAI model, by the byte rule for a Claude one; not bytes / 4.
func TestEstimate(t *testing.T) {
	openai := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}`
	claude := `{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hello world"}]}`
	data := []byte(`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":` + openai + "}\n" +
		"not json\n" +
		`{"custom_id":"b","method":"POST","url":"/v1/messages","body":` + claude + "}\n")
	model, est := estimate(data)
	require.Equal(t, "gpt-4o-mini", model, "the first line's")
	require.Equal(t, int64(2+3+1+3)+tokens.Bytes(int64(len(claude))), est)
	require.Equal(t, int64(9+31), est)
	require.NotEqual(t, int64(len(openai)+len(claude)+3)/4, est, "bytes / 4 was %d", (len(openai)+len(claude)+3)/4)

	model, est = estimate(nil)
	require.Empty(t, model)
	require.Zero(t, est)
}

// For a file of many requests, estimate agrees with intake's estimate of
// the same file (the same sample, tokens.Tally).
func TestEstimateAsIntake(t *testing.T) {
	var b strings.Builder
	for i := range 1000 {
		text := strings.Repeat(fmt.Sprintf("request %d asks about item %d. ", i, i*i), 1+i%17)
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}}`+"\n", i, text)
	}
	sum, err := intake.Check(strings.NewReader(b.String()), "/v1/chat/completions")
	require.NoError(t, err)
	model, est := estimate([]byte(b.String()))
	require.Equal(t, "gpt-4o-mini", model)
	require.Equal(t, sum.EstTokens, est)
}
