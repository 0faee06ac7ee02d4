package intake_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/tokens"
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

// EstTokens estimates each line with its own model's tokenizer (or the
// byte rule), no longer body bytes / 4.
func TestCheckEstTokens(t *testing.T) {
	const hello = `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`
	text := strings.Repeat("hello world ", 100)
	file := fmt.Sprintf(hello, "a", "gpt-4o-mini", "hello world") + "\n" + fmt.Sprintf(hello, "b", "gpt-4o-mini", text) + "\n"
	sum, err := intake.Check(strings.NewReader(file), chat)
	require.NoError(t, err)
	// "hello world" is 2 tokens, the long text 200 ("hello", " world",
	// then " hello", " world", ... and a trailing " "): 201; each line adds
	// 3 + 1 (role) + 3 (reply).
	require.Equal(t, int64((2+7)+(201+7)), sum.EstTokens)
	require.Less(t, sum.EstTokens, (sum.BodyBytes+3)/4, "English text is more than 4 bytes a token")

	// Anthropic lines: any models, each by the byte rule, ceil(bytes/3.5 × 1.1).
	const claude = `{"custom_id":%q,"method":"POST","url":"/v1/messages","body":{"model":%q,"max_tokens":16,"messages":[{"role":"user","content":%q}]}}`
	file = fmt.Sprintf(claude, "a", "claude-sonnet-4-5", text) + "\n" + fmt.Sprintf(claude, "b", "claude-haiku-4-5", "hi") + "\n"
	sum, err = intake.CheckFor(strings.NewReader(file), contract.ProviderAnthropic, "/v1/messages")
	require.NoError(t, err)
	var want, bodies int64
	for _, l := range strings.Split(strings.TrimSpace(file), "\n") {
		body := l[strings.Index(l, `"body":`)+len(`"body":`) : len(l)-1]
		bodies += int64(len(body))
		want += (int64(len(body))*11 + 34) / 35
	}
	require.Equal(t, bodies, sum.BodyBytes)
	require.Equal(t, want, sum.EstTokens)
	require.Greater(t, sum.EstTokens, (sum.BodyBytes+3)/4, "the byte rule is 3.5 bytes a token with a 10% margin")
}

// variedFile is a chat file of n requests of varied shape and length
// (1-4 messages, optional system message and name, 1-160 words of
// English, numbers, punctuation and some non-Latin text), from a fixed
// seed, and the bodies of its lines.
func variedFile(n int, model string) (string, [][]byte) {
	words := strings.Fields("the quarterly report shows revenue grew year over year driven by strong demand " +
		"in enterprise segment please summarize following contract clause and list obligations of each party " +
		"translate into French Müller café naïve résumé 東京 データ 분석 json {\"k\": [1, 2]} x=3; y<=4 ok? yes! " +
		"function main() { return 42 } 2024-05-01 3.14159 $1,299.00 https://example.com/a/b?c=d #tag @user")
	rng := rand.New(rand.NewPCG(14, 3))
	var b strings.Builder
	bodies := make([][]byte, 0, n)
	for i := range n {
		var msgs []map[string]string
		if rng.IntN(3) == 0 {
			msgs = append(msgs, map[string]string{"role": "system", "content": "You are a careful assistant."})
		}
		for range 1 + rng.IntN(4) {
			k := 1 + rng.IntN(160)
			if rng.IntN(10) == 0 {
				k = 1 + rng.IntN(5) // some very short requests
			}
			ws := make([]string, k)
			for j := range ws {
				ws[j] = words[rng.IntN(len(words))]
			}
			m := map[string]string{"role": "user", "content": strings.Join(ws, " ")}
			if rng.IntN(8) == 0 {
				m["name"] = "analyst"
			}
			msgs = append(msgs, m)
		}
		body, err := json.Marshal(map[string]any{"model": model, "messages": msgs, "max_tokens": 1 + rng.IntN(1000)})
		if err != nil {
			panic(err)
		}
		bodies = append(bodies, body)
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":%q,"body":%s}`+"\n", i, chat, body)
	}
	return b.String(), bodies
}

// A file of many varied requests: the estimate from the sample (the first
// 32 lines and 1 in 128 after) is within 5% of the sum of each line's
// tokens.Estimate.
func TestCheckEstTokensSampled(t *testing.T) {
	for _, model := range []string{"gpt-4o-mini", "gpt-4"} {
		file, bodies := variedFile(2000, model)
		var exact, byteRule int64
		for _, b := range bodies {
			exact += tokens.Estimate(model, b)
			byteRule += tokens.Bytes(int64(len(b)))
		}
		sum, err := intake.Check(strings.NewReader(file), chat)
		require.NoError(t, err)
		require.Equal(t, 2000, sum.Lines)
		off := float64(sum.EstTokens-exact) / float64(exact)
		t.Logf("%s: sampled %d, exact %d (%+.2f%%); byte rule %d", model, sum.EstTokens, exact, 100*off, byteRule)
		require.InDelta(t, 0, off, 0.05, "sampled %d, exact %d", sum.EstTokens, exact)
		require.NotEqual(t, exact, sum.EstTokens, "2,000 lines are not all tokenized")

		// The same lines under a Claude model count by the byte rule, exactly.
		claude := strings.ReplaceAll(file, `"model":"`+model+`"`, `"model":"claude-sonnet-4-5"`)
		sum, err = intake.CheckFor(strings.NewReader(claude), contract.ProviderAnthropic, chat)
		require.NoError(t, err)
		var want int64
		for _, b := range bodies {
			want += tokens.Bytes(int64(len(b)) + int64(len("claude-sonnet-4-5")-len(model)))
		}
		require.Equal(t, want, sum.EstTokens)
	}
}

// A file whose requests are all the same is estimated as exactly n times
// one request's tokens, however many of them the sample skips.
func TestCheckEstTokensIdentical(t *testing.T) {
	_, bodies := variedFile(1, "gpt-4o-mini")
	body := bodies[0]
	one := tokens.Estimate("gpt-4o-mini", body)
	for _, n := range []int{1, 31, 32, 33, 100, 1000, 5001} {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":%q,"body":%s}`+"\n", i, chat, body)
		}
		sum, err := intake.Check(strings.NewReader(b.String()), chat)
		require.NoError(t, err)
		require.Equal(t, int64(n)*one, sum.EstTokens, "%d lines", n)
	}
}
