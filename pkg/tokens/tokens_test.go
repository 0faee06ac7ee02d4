package tokens_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"github.com/tiktoken-go/tokenizer"

	"github.com/batchfleet/batchfleet/pkg/tokens"
)

// ids encodes s with enc through the library, for the expected counts.
func ids(t testing.TB, enc tokenizer.Encoding, s string) []uint {
	t.Helper()
	c, err := tokenizer.Get(enc)
	require.NoError(t, err)
	out, _, err := c.Encode(s)
	require.NoError(t, err)
	return out
}

// Published examples: tiktoken's README ("hello world" in cl100k_base) and
// OpenAI's cookbook "How to count tokens with tiktoken" ("tiktoken is
// great!" in both encodings).
func TestPublishedIDs(t *testing.T) {
	require.Equal(t, []uint{15339, 1917}, ids(t, tokenizer.Cl100kBase, "hello world"))
	require.Equal(t, []uint{24912, 2375}, ids(t, tokenizer.O200kBase, "hello world"))
	require.Equal(t, []uint{83, 1609, 5963, 374, 2294, 0}, ids(t, tokenizer.Cl100kBase, "tiktoken is great!"))
	require.Equal(t, []uint{83, 8251, 2488, 382, 2212, 0}, ids(t, tokenizer.O200kBase, "tiktoken is great!"))
}

func TestEncodingFor(t *testing.T) {
	for model, want := range map[string]tokenizer.Encoding{
		"gpt-4o":                                 tokenizer.O200kBase,
		"gpt-4o-mini":                            tokenizer.O200kBase,
		"gpt-4o-2024-08-06":                      tokenizer.O200kBase,
		"gpt-4.1-nano":                           tokenizer.O200kBase,
		"gpt-4.5-preview":                        tokenizer.O200kBase,
		"gpt-5":                                  tokenizer.O200kBase,
		"gpt-5.1-mini":                           tokenizer.O200kBase,
		"gpt-oss-120b":                           tokenizer.O200kBase,
		"chatgpt-4o-latest":                      tokenizer.O200kBase,
		"o1":                                     tokenizer.O200kBase,
		"o1-mini":                                tokenizer.O200kBase,
		"o3-mini-2025-01-31":                     tokenizer.O200kBase,
		"o4-mini":                                tokenizer.O200kBase,
		"ft:gpt-4o-mini-2024-07-18:acme::abc123": tokenizer.O200kBase,
		"gpt-4":                                  tokenizer.Cl100kBase,
		"gpt-4-turbo":                            tokenizer.Cl100kBase,
		"gpt-3.5-turbo-0125":                     tokenizer.Cl100kBase,
		"gpt-3.5-turbo-instruct":                 tokenizer.Cl100kBase,
		"text-embedding-ada-002":                 tokenizer.Cl100kBase,
		"text-embedding-3-small":                 tokenizer.Cl100kBase,
		"ft:gpt-3.5-turbo:acme::x1":              tokenizer.Cl100kBase,
		"davinci-002":                            tokenizer.Cl100kBase,
		"text-davinci-003":                       tokenizer.P50kBase, // the library's table
		"davinci":                                tokenizer.R50kBase,
		"claude-sonnet-4-5":                      "",
		"claude-3-5-haiku-latest":                "",
		"llama-3":                                "",
		"o10-preview":                            "",
		"":                                       "",
	} {
		require.Equal(t, want, tokens.EncodingFor(model), model)
	}
}

// Where the library knows a model, the package agrees with it.
func TestEncodingForAgreesWithLibrary(t *testing.T) {
	for _, m := range []tokenizer.Model{tokenizer.O1, tokenizer.O1Preview, tokenizer.O1Mini,
		tokenizer.O3, tokenizer.O3Mini, tokenizer.O4Mini, tokenizer.GPT5, tokenizer.GPT5Mini,
		tokenizer.GPT5Nano, tokenizer.GPT41, tokenizer.GPT4o, tokenizer.GPT4, tokenizer.GPT35Turbo,
		tokenizer.GPT35, tokenizer.TextEmbeddingAda002, tokenizer.TextDavinci003, tokenizer.CodeDavinci002,
		tokenizer.TextDavinci001, tokenizer.Davinci, tokenizer.TextDavinciEdit001,
		"gpt-4o-mini", "gpt-4.1-mini", "gpt-4-0613", "gpt-3.5-turbo-0125", "chatgpt-4o-latest"} {
		c, err := tokenizer.ForModel(m)
		require.NoError(t, err, m)
		require.Equal(t, tokenizer.Encoding(c.GetName()), tokens.EncodingFor(string(m)), m)
	}
}

func TestHelloWorld(t *testing.T) {
	// An embeddings input is the text alone: "hello world" is 2 tokens in
	// both encodings.
	body := []byte(`{"model":"%s","input":"hello world"}`)
	for _, m := range []string{"gpt-4o-mini", "text-embedding-3-small", "gpt-4"} {
		require.Equal(t, int64(2), tokens.Estimate(m, []byte(fmt.Sprintf(string(body), m))), m)
	}
	require.Equal(t, int64(2), tokens.Estimate("", []byte(`{"model":"text-embedding-3-large","input":"hello world"}`)), "model read from the body")
	require.Equal(t, int64(6), tokens.Estimate("gpt-4o", []byte(`{"model":"gpt-4o","prompt":"tiktoken is great!"}`)))
}

func TestChatTwoMessages(t *testing.T) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[` +
		`{"role":"system","content":"You are terse."},` +
		`{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"text","text":"tiktoken is great!"}]}],` +
		`"max_tokens":5}`)
	content := len(ids(t, tokenizer.O200kBase, "You are terse.")) + 2 + 6
	// per message 3 + its role (1 token each), + 3 for the reply.
	want := int64(content + 2*(3+1) + 3)
	require.Equal(t, int64(4+2+6+11), want, "You are terse. is 4 tokens")
	require.Equal(t, want, tokens.Estimate("gpt-4o-mini", body))
}

// OpenAI's cookbook example (How_to_count_tokens_with_tiktoken.ipynb): the
// API reported 129 prompt tokens for gpt-3.5-turbo-0613 and gpt-4-0613,
// as num_tokens_from_messages counts them; later editions of the notebook
// give 124 for gpt-4o and gpt-4o-mini.
func TestCookbookMessages(t *testing.T) {
	msgs := []map[string]string{
		{"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
		{"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
		{"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
		{"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
		{"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
		{"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."},
	}
	for model, want := range map[string]int64{"gpt-3.5-turbo-0125": 129, "gpt-4-0613": 129, "gpt-4o": 124, "gpt-4o-mini": 124} {
		body, err := json.Marshal(map[string]any{"model": model, "messages": msgs})
		require.NoError(t, err)
		require.Equal(t, want, tokens.Estimate(model, body), model)
	}
}

func TestShapes(t *testing.T) {
	hw := int64(2) // "hello world"
	for name, c := range map[string]struct {
		body string
		want int64
	}{
		"embeddings array":       {`{"model":"text-embedding-3-small","input":["hello world","hello world"]}`, 2 * hw},
		"embeddings token ids":   {`{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]]}`, 5},
		"completions array":      {`{"model":"gpt-3.5-turbo-instruct","prompt":["hello world","tiktoken is great!"]}`, hw + 6},
		"responses string":       {`{"model":"gpt-4.1","input":"hello world"}`, hw},
		"responses instructions": {`{"model":"gpt-4.1","instructions":"hello world","input":"hello world"}`, (3 + 1 + hw) + hw},
		"responses items":        {`{"model":"gpt-5","input":[{"role":"user","content":[{"type":"input_text","text":"hello world"}]}]}`, 3 + 1 + hw + 3},
		"chat null content":      {`{"model":"gpt-4o","messages":[{"role":"assistant","content":null}]}`, 3 + 1 + 3},
		"chat escaped":           {`{"model":"gpt-4o","messages":[{"role":"user","content":"hello\u0020world"}]}`, 3 + 1 + hw + 3},
		"image part by bytes":    {`{"model":"gpt-4o","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`, 3 + 1 + tokens.Bytes(int64(len(`{"type":"image_url","image_url":{"url":"https://x/y.png"}}`))) + 3},
		"no messages: byte rule": {`{"model":"gpt-4o","foo":"hello world"}`, tokens.Bytes(int64(len(`{"model":"gpt-4o","foo":"hello world"}`)))},
		"not json: byte rule":    {`{"model":"gpt-4o","messages":[`, tokens.Bytes(int64(len(`{"model":"gpt-4o","messages":[`)))},
		"messages not array":     {`{"model":"gpt-4o","messages":"x"}`, tokens.Bytes(int64(len(`{"model":"gpt-4o","messages":"x"}`)))},
	} {
		require.Equal(t, c.want, tokens.Estimate("", []byte(c.body)), name)
	}
}

func TestByteRule(t *testing.T) {
	body := []byte(`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"` +
		strings.Repeat("x", 350-len(`{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":""}]}`)) + `"}]}`)
	require.Len(t, body, 350)
	require.Equal(t, int64(110), tokens.Estimate("claude-sonnet-4-5", body), "350 bytes / 3.5 × 1.1")
	require.Equal(t, int64(110), tokens.Estimate("", body), "model read from the body")
	require.Equal(t, int64(110), tokens.Estimate("some-local-model", body))
	for n, want := range map[int64]int64{0: 0, 1: 1, 3: 1, 4: 2, 35: 11, 350: 110, 351: 111} {
		require.Equal(t, want, tokens.Bytes(n), n)
	}
}

// Estimates from many goroutines at once agree (run with -race).
func TestConcurrent(t *testing.T) {
	body := chatBody(1024)
	want := tokens.Estimate("gpt-4o-mini", body)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for range 20 {
				m := []string{"gpt-4o-mini", "gpt-4", "davinci", "claude-3-haiku"}[i%4]
				got := tokens.Estimate(m, body)
				if m == "gpt-4o-mini" && got != want {
					t.Errorf("got %d, want %d", got, want)
				}
			}
		})
	}
	wg.Wait()
}

// chatBody is a chat completions body of about size bytes of English prose.
func chatBody(size int) []byte {
	const prose = "The quarterly report shows revenue grew 12% year over year, driven by strong demand in the enterprise segment. "
	head := `{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a careful analyst. Answer in three sentences."},{"role":"user","content":"`
	tail := `"}],"max_tokens":256,"temperature":0.2}`
	var b strings.Builder
	b.WriteString(head)
	for b.Len()+len(tail) < size {
		b.WriteString(prose[:min(len(prose), size-len(tail)-b.Len())])
	}
	b.WriteString(tail)
	return []byte(b.String())
}

// BenchmarkEstimate estimates a typical 1 KB chat body of English prose
// (MB/s is of body bytes; ns/KB the time per 1,024 body bytes), and a
// 16 KB one; the byte rule for a Claude model is the baseline.
func BenchmarkEstimate(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		body := chatBody(size)
		for _, m := range []string{"gpt-4o-mini", "gpt-4", "claude-sonnet-4-5"} {
			b.Run(fmt.Sprintf("%s/%dKB", m, size>>10), func(b *testing.B) {
				tokens.Estimate(m, body) // the encoder's one-time setup
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					tokens.Estimate(m, body)
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(float64(len(body))/1024), "ns/KB")
			})
		}
	}
}
