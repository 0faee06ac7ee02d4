package intake_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/intake"
)

const chat = "/v1/chat/completions"

func inputLine(id, url, model string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":%q,"body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`, id, url, model)
}

func TestCheckAccepts(t *testing.T) {
	var b strings.Builder
	for i := range 3 {
		b.WriteString(inputLine(fmt.Sprint("r", i), chat, "gpt-4o-mini") + "\n")
	}
	b.WriteString("\n  \n") // blank lines are skipped
	sum, err := intake.Check(strings.NewReader(b.String()), chat)
	require.NoError(t, err)
	require.Equal(t, 3, sum.Lines)
	require.Equal(t, "gpt-4o-mini", sum.Model)
	require.Equal(t, int64(b.Len()), sum.Bytes)
	require.Positive(t, sum.BodyBytes)

	// Without a final newline, and with lines longer than the reader's buffer.
	long := fmt.Sprintf(`{"custom_id":"x","method":"POST","url":%q,"body":{"model":"m","prompt":%q}}`, chat, strings.Repeat("p", 200<<10))
	sum, err = intake.Check(strings.NewReader(long+"\n"+inputLine("y", chat, "m")), chat)
	require.NoError(t, err)
	require.Equal(t, 2, sum.Lines)
}

func TestCheckRules(t *testing.T) {
	ok := inputLine("a", chat, "m")
	cases := []struct {
		name, file, code, msg string
	}{
		{"empty", "", contract.CodeInvalidInput, "no requests"},
		{"not json", ok + "\nnope\n", contract.CodeInvalidInput, "line 2: not a JSON object"},
		{"missing custom_id", `{"method":"POST","url":"` + chat + `","body":{"model":"m"}}`, contract.CodeInvalidInput, "line 1: custom_id is required"},
		{"custom_id not string", `{"custom_id":5,"method":"POST","url":"` + chat + `","body":{"model":"m"}}`, contract.CodeInvalidInput, "line 1: custom_id has the wrong type"},
		{"method", `{"custom_id":"a","method":"GET","url":"` + chat + `","body":{"model":"m"}}`, contract.CodeInvalidInput, `line 1: method must be "POST"`},
		{"bad url", ok + "\n" + inputLine("b", "/v1/embeddings", "m"), contract.CodeInvalidInput, `line 2: url must be the job's endpoint "/v1/chat/completions", got "/v1/embeddings"`},
		{"body not object", `{"custom_id":"a","method":"POST","url":"` + chat + `","body":"x"}`, contract.CodeInvalidInput, "line 1: body has the wrong type"},
		{"no body", `{"custom_id":"a","method":"POST","url":"` + chat + `"}`, contract.CodeInvalidInput, "line 1: body must be a JSON object"},
		{"no model", `{"custom_id":"a","method":"POST","url":"` + chat + `","body":{}}`, contract.CodeInvalidInput, "line 1: body.model is required"},
		{"two models", ok + "\n\n" + inputLine("b", chat, "other"), contract.CodeInvalidInput, `line 3: body.model "other" differs from "m"`},
		{"duplicate", ok + "\n" + ok, contract.CodeDuplicateCustomID, `line 2: custom_id "a" is not unique`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := intake.Check(strings.NewReader(c.file), chat)
			var ce *contract.Error
			require.True(t, errors.As(err, &ce), "%v", err)
			require.Equal(t, c.code, ce.Code, ce.Message)
			require.Contains(t, ce.Message, c.msg)
			require.ErrorIs(t, err, contract.ErrInvalidRequest)
		})
	}
}

func TestCheckLimits(t *testing.T) {
	var b strings.Builder
	for i := range contract.MaxRequests + 1 {
		fmt.Fprintf(&b, `{"custom_id":"%d","method":"POST","url":"%s","body":{"model":"m"}}`+"\n", i, chat)
	}
	_, err := intake.Check(strings.NewReader(b.String()), chat)
	require.ErrorContains(t, err, fmt.Sprintf("line %d: the file has more than 50000 requests", contract.MaxRequests+1))

	big := fmt.Sprintf(`{"custom_id":"a","method":"POST","url":"%s","body":{"model":"m","p":"%s"}}`, chat, strings.Repeat("x", intake.MaxBytes))
	_, err = intake.Check(strings.NewReader(big), chat)
	require.ErrorContains(t, err, "larger than 209715200 bytes")
}

func TestCheckReadError(t *testing.T) {
	boom := errors.New("boom")
	_, err := intake.Check(iotest.ErrReader(boom), chat)
	require.ErrorIs(t, err, boom)
	require.NotErrorIs(t, err, contract.ErrInvalidRequest)
}

// BenchmarkCheck checks 5,000 lines of ~2 KB chat requests.
func BenchmarkCheck(b *testing.B) {
	var buf strings.Builder
	content := strings.Repeat("lorem ipsum ", 165)
	for i := range 5000 {
		fmt.Fprintf(&buf, `{"custom_id":"r%d","method":"POST","url":%q,"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}],"max_tokens":500}}`+"\n", i, chat, content)
	}
	file := buf.String()
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		if _, err := intake.Check(strings.NewReader(file), chat); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckForAnthropic(t *testing.T) {
	const msgs = "/v1/messages"
	// Models may differ within an Anthropic batch; the first is reported.
	file := inputLine("a-1", msgs, "claude-haiku-4-5") + "\n" + inputLine("a_2", msgs, "claude-sonnet-4-5") + "\n"
	sum, err := intake.CheckFor(strings.NewReader(file), contract.ProviderAnthropic, msgs)
	require.NoError(t, err)
	require.Equal(t, 2, sum.Lines)
	require.Equal(t, "claude-haiku-4-5", sum.Model)
	// The same file by OpenAI's rules: one model per file.
	_, err = intake.CheckFor(strings.NewReader(file), contract.ProviderOpenAI, msgs)
	var ce *contract.Error
	require.ErrorAs(t, err, &ce)
	require.Contains(t, ce.Message, "one model per file")

	// A custom_id Anthropic refuses, named with its line.
	bad := inputLine("ok", msgs, "claude-haiku-4-5") + "\n" + inputLine("not ok!", msgs, "claude-haiku-4-5") + "\n"
	_, err = intake.CheckFor(strings.NewReader(bad), contract.ProviderAnthropic, msgs)
	require.ErrorAs(t, err, &ce)
	require.Equal(t, contract.CodeInvalidInput, ce.Code)
	require.Contains(t, ce.Message, `line 2: custom_id "not ok!"`)
	// OpenAI takes it.
	_, err = intake.CheckFor(strings.NewReader(strings.ReplaceAll(bad, "claude-haiku-4-5", "gpt-4o-mini")), contract.ProviderOpenAI, msgs)
	require.NoError(t, err)
}
