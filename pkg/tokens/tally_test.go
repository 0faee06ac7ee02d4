package tokens

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// chat is a gpt-4o-mini chat body with one user message of text.
func chat(model, text string) []byte {
	return fmt.Appendf(nil, `{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, text)
}

// Up to SampleHead requests of an encoding are counted exactly; then
// the first request after them and every SampleEvery-th are tokenized.
func TestTallySample(t *testing.T) {
	var tl Tally
	var exact int64
	for i := range SampleHead {
		b := chat("gpt-4o-mini", strings.Repeat("word ", i+1))
		exact += Estimate("gpt-4o-mini", b)
		tl.Add("gpt-4o-mini", b)
	}
	require.Equal(t, exact, tl.Tokens())
	const n = 10_000
	for i := SampleHead; i < n; i++ {
		tl.Add("gpt-4o-mini", chat("gpt-4o-mini", strings.Repeat("word ", i%97+1)))
	}
	require.Len(t, tl.groups, 1)
	g := tl.groups["o200k_base"]
	require.EqualValues(t, n, g.n)
	require.EqualValues(t, (n-SampleHead+SampleEvery-1)/SampleEvery, g.sampled)
	require.Less(t, g.headBytes+g.sampleBytes, g.restBytes/30, "about 1 in %d bytes tokenized", SampleEvery)
}

// Models of one encoding share a sample; models without one add their
// byte rule exactly; an empty model is read from the body.
func TestTallyModels(t *testing.T) {
	var tl Tally
	require.Zero(t, tl.Tokens(), "the zero Tally")
	a, b := chat("gpt-4o", "hello world"), chat("gpt-4.1-mini", "tiktoken is great!")
	c, d := chat("claude-sonnet-4-5", "hello world"), chat("llama-3", "hello world")
	e := chat("gpt-4", "hello world")
	for _, x := range [][]byte{a, c, b, d, e} {
		tl.Add("", x)
	}
	require.Len(t, tl.groups, 2, "o200k_base and cl100k_base")
	want := Estimate("", a) + Estimate("", b) + Estimate("", e) + Bytes(int64(len(c))) + Bytes(int64(len(d)))
	require.Equal(t, want, tl.Tokens())
	require.Equal(t, int64(2+7)+(6+7)+(2+7)+Bytes(int64(len(c)))+Bytes(int64(len(d))), tl.Tokens())
}

// Content that changes along the file (English, then CJK and numbers,
// then code) is followed by the systematic sample.
func TestTallyDrift(t *testing.T) {
	parts := []string{
		"The quarterly report shows revenue grew year over year, driven by demand. ",
		"東京のデータ分析 2024年5月1日 3.14159 12345 67890 분석 결과 ",
		"func main() { for i := 0; i < 10; i++ { fmt.Println(i) } } ",
	}
	var tl Tally
	var exact int64
	for i := range 6000 {
		p := parts[i*len(parts)/6000]
		b := chat("gpt-4o-mini", strings.Repeat(p, 1+i%13))
		exact += Estimate("gpt-4o-mini", b)
		tl.Add("gpt-4o-mini", b)
	}
	off := float64(tl.Tokens()-exact) / float64(exact)
	t.Logf("sampled %d, exact %d (%+.2f%%)", tl.Tokens(), exact, 100*off)
	require.InDelta(t, 0, off, 0.05)
}

// The group's estimate: the head exactly, the rest at the sample's rate,
// topped up with the head's while the sample is small; rounded half up
// and saturated.
func TestGroupEstimate(t *testing.T) {
	for _, c := range []struct {
		g    group
		want int64
	}{
		{group{headTokens: 7, headBytes: 30}, 7},
		// The sample is SampleHead requests: the head is not in the rate.
		{group{headTokens: 100, headBytes: 300, sampled: SampleHead, sampleTokens: 64, sampleBytes: 320, restBytes: 1000}, 100 + 200},
		{group{headTokens: 100, headBytes: 300, sampled: 2 * SampleHead, sampleTokens: 10, sampleBytes: 30, restBytes: 100}, 100 + 33}, // 33.3
		{group{headTokens: 100, headBytes: 300, sampled: 2 * SampleHead, sampleTokens: 10, sampleBytes: 80, restBytes: 100}, 100 + 13}, // 12.5 up
		{group{headTokens: 100, headBytes: 400, sampled: SampleHead, sampleTokens: 1 << 30, sampleBytes: 1 << 20, restBytes: 1 << 40}, 100 + 1<<50},
		// Half the sample is missing: the head weighs half: (10 + 100/2) / (100 + 400/2) = 0.2.
		{group{headTokens: 100, headBytes: 400, sampled: SampleHead / 2, sampleTokens: 10, sampleBytes: 100, restBytes: 1000}, 100 + 200},
		// One request in the sample: the head weighs (SampleHead-1)/SampleHead:
		// 100 × (20·32 + 320·31) / (100·32 + 3200·31) = 10.3.
		{group{headTokens: 320, headBytes: 3200, sampled: 1, sampleTokens: 20, sampleBytes: 100, restBytes: 100}, 320 + 10},
		{group{headTokens: 1, headBytes: 1, sampled: SampleHead, sampleTokens: 2, sampleBytes: 1, restBytes: math.MaxInt64}, math.MaxInt64},
		{group{headTokens: math.MaxInt64 - 1, headBytes: 1, sampled: SampleHead, sampleTokens: 2, sampleBytes: 1, restBytes: 2}, math.MaxInt64},
	} {
		require.Equal(t, c.want, c.g.estimate(), "%+v", c.g)
	}
}
