package pack

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

func TestPackKeyIsAValidJobKey(t *testing.T) {
	for _, model := range []string{"gpt-4o-mini", "claude-sonnet-4-5", "ft:gpt-4o:org:x:abc", strings.Repeat("m", 200), "a/b c"} {
		g := Group{Provider: contract.ProviderOpenAI, Endpoint: contract.DefaultEndpoint, Model: model}
		key := g.PackKey(18446744073709551615)
		require.True(t, contract.ValidKey(key), key)
		require.True(t, strings.HasPrefix(key, contract.PackKeyPrefix), key)
	}
	a := Group{Provider: "openai", Endpoint: "/v1/chat/completions", Model: "gpt-4o"}
	b := Group{Provider: "openai", Endpoint: "/v1/responses", Model: "gpt-4o"}
	require.NotEqual(t, a.ID(), b.ID(), "groups differ by endpoint")
	require.Equal(t, a.ID(), Group{Provider: "openai", Endpoint: "/v1/chat/completions", Model: "gpt-4o"}.ID(), "stable")
}

func TestInputLineCompactsTheBody(t *testing.T) {
	it := contract.Item{CustomID: "r-1", Endpoint: "/v1/chat/completions",
		Body: json.RawMessage("{\n  \"model\": \"gpt-4o-mini\",\n  \"messages\": [ {\"role\": \"user\", \"content\": \"a\\nb\"} ]\n}")}
	line, err := inputLine(&it)
	require.NoError(t, err)
	require.NotContains(t, string(line), "\n", "one JSONL line")
	var l struct {
		CustomID string          `json:"custom_id"`
		Method   string          `json:"method"`
		URL      string          `json:"url"`
		Body     json.RawMessage `json:"body"`
	}
	require.NoError(t, json.Unmarshal(line, &l))
	require.Equal(t, "r-1", l.CustomID)
	require.Equal(t, "POST", l.Method)
	require.Equal(t, "/v1/chat/completions", l.URL)
	require.JSONEq(t, string(it.Body), string(l.Body))

	_, err = inputLine(&contract.Item{CustomID: "x", Body: json.RawMessage("{\"model\":\n")})
	require.Error(t, err)
	line, err = inputLine(&contract.Item{CustomID: "x", Endpoint: "/v1/embeddings", Body: json.RawMessage(` {"model":"m"} `)})
	require.NoError(t, err)
	require.Equal(t, `{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"model":"m"}}`, string(line))
}

func TestLimits(t *testing.T) {
	c := Config{TokenLimits: map[string]int64{"gpt-4o": 1000, "*": 50}}
	l := c.limitsFor(Group{Provider: "openai", Model: "gpt-4o"})
	require.Equal(t, limits{requests: contract.MaxRequests, bytes: 200<<20 - byteMargin, tokens: 1000}, l)
	l = c.limitsFor(Group{Provider: "openai", Model: "other"})
	require.EqualValues(t, 50, l.tokens, "the * budget")
	l = c.limitsFor(Group{Provider: contract.ProviderAnthropic, Model: "claude"})
	require.Equal(t, contract.MaxAnthropicRequests, l.requests)
	c = Config{MaxRequests: 2500, MaxBytes: 4096}
	l = c.limitsFor(Group{Provider: "openai", Model: "gpt-4o"})
	require.Equal(t, limits{requests: 2500, bytes: 4096}, l)
	c = Config{MaxRequests: 10_000_000}
	require.Equal(t, contract.MaxRequests, c.limitsFor(Group{Provider: "openai"}).requests, "capped at the vendor's bound")

	require.ErrorContains(t, Config{MaxAge: 500 * time.Millisecond}.Validate(), "PACK_MAX_AGE")
	require.NoError(t, Config{MaxAge: time.Second}.Validate())
	require.ErrorContains(t, Config{MaxRequests: -1}.Validate(), "PACK_MAX_REQUESTS")
}

func TestByteEstimate(t *testing.T) {
	require.EqualValues(t, 0, ByteEstimate("x", nil))
	require.EqualValues(t, 1, ByteEstimate("x", []byte("a")))
	require.EqualValues(t, 315, ByteEstimate("x", make([]byte, 1002)), "ceil(1002 / 3.5 x 1.1) = ceil(314.91)")
	require.EqualValues(t, 11, ByteEstimate("x", make([]byte, 35)), "exact")
}
