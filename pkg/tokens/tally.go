package tokens

import (
	"math"
	"math/bits"

	"github.com/tidwall/gjson"
	"github.com/tiktoken-go/tokenizer"
)

// The sample a Tally tokenizes of each encoding's requests: the first
// SampleHead, and of the rest 1 in SampleEvery (the 0-based request i of
// the encoding is tokenized when i < SampleHead or (i - SampleHead) %
// SampleEvery == 0).
const (
	SampleHead  = 32
	SampleEvery = 128
)

// Tally estimates the input tokens of many requests, such as the lines of
// a batch input file, without tokenizing them all: tokenizing costs some
// 30 times more than checking a line's JSON (see Estimate).
//
// A request to a model without an encoding counts by the byte rule, as
// Estimate counts it (cheap, exact per request). The requests of models
// with an encoding are grouped by encoding (an OpenAI batch has one model,
// so in practice one group), and each group is estimated from a sample
// tokenized with Estimate:
//
//   - the head, the first SampleHead requests, is counted exactly;
//   - the rest is sampled systematically, 1 request in SampleEvery (the
//     first request after the head, then every SampleEvery-th), and counts
//     as its body bytes times the sample's tokens per body byte (a ratio
//     estimator: the sample's exact counts plus the other requests' bytes
//     at the sample's rate);
//   - while that sample has fewer than SampleHead requests (a group of
//     fewer than about 4,000), the head's requests stand in for the
//     missing ones: the rate is (T + h·Th) / (B + h·Bh), with T and B the
//     sample's tokens and body bytes, Th and Bh the head's, and
//     h = (SampleHead - sampled) / SampleHead.
//
// So a group of up to SampleHead requests is counted exactly, requests
// that are all alike give exactly n × their count (up to rounding), and a
// large file is estimated from a sample spread evenly along it, which
// follows content that changes along the file (once the sample has
// SampleHead requests, the head's rate no longer weighs in). The sample is fixed by the requests' order, with
// no randomness: the same input always gives the same estimate. Files of
// thousands of varied chat requests come within 1% of the sum of their
// Estimate in the tests. A group of n > SampleHead requests tokenizes
// SampleHead + ceil((n - SampleHead) / SampleEvery) of them.
//
// The zero Tally is ready to use. A Tally is not safe for concurrent use.
type Tally struct {
	byteRule int64
	groups   map[tokenizer.Encoding]*group

	// The last request's model and its group (nil: the byte rule), so
	// that a file of one model looks its encoding up once.
	lastModel string
	last      *group
	seen      bool
}

// group is the tally of one encoding's requests: n of them, the head's
// tokens and bytes, the rest's bytes, and its sample's count, tokens and
// bytes.
type group struct {
	n                         int64
	headTokens, headBytes     int64
	restBytes                 int64
	sampled                   int64
	sampleTokens, sampleBytes int64
}

// Add counts one request: body is its JSON body, sent to model (an empty
// model is read from body.model).
func (t *Tally) Add(model string, body []byte) {
	if model == "" {
		model = gjson.GetBytes(body, "model").Str
	}
	g := t.last
	if !t.seen || model != t.lastModel {
		g = t.groupOf(model)
		t.lastModel, t.last, t.seen = model, g, true
	}
	if g == nil {
		t.byteRule += Bytes(int64(len(body)))
		return
	}
	size := int64(len(body))
	switch {
	case g.n < SampleHead:
		g.headTokens += Estimate(model, body)
		g.headBytes += size
	case (g.n-SampleHead)%SampleEvery == 0:
		g.sampled++
		g.sampleTokens += Estimate(model, body)
		g.sampleBytes += size
		g.restBytes += size
	default:
		g.restBytes += size
	}
	g.n++
}

// groupOf returns the group of model's encoding, or nil for the byte rule.
func (t *Tally) groupOf(model string) *group {
	enc := EncodingFor(model)
	if enc == "" || codecOf(enc) == nil {
		return nil
	}
	g := t.groups[enc]
	if g == nil {
		if t.groups == nil {
			t.groups = make(map[tokenizer.Encoding]*group)
		}
		g = &group{}
		t.groups[enc] = g
	}
	return g
}

// Tokens returns the estimate of the requests added so far.
func (t *Tally) Tokens() int64 {
	n := t.byteRule
	for _, g := range t.groups {
		n += g.estimate()
	}
	return n
}

// estimate is the head's tokens plus round(restBytes × (T + h·Th) /
// (B + h·Bh)), with h = (SampleHead - sampled) / SampleHead (see Tally).
func (g *group) estimate() int64 {
	if g.restBytes == 0 {
		return g.headTokens + g.sampleTokens
	}
	// Scaled by SampleHead to keep to integers: num / den is the rate.
	h := uint64(max(0, SampleHead-g.sampled))
	num := uint64(g.sampleTokens)*SampleHead + uint64(g.headTokens)*h
	den := uint64(g.sampleBytes)*SampleHead + uint64(g.headBytes)*h
	if den == 0 {
		return g.headTokens + g.sampleTokens
	}
	return sat(g.headTokens, mulDiv(num, uint64(g.restBytes), den))
}

// mulDiv is round(a × b / c) (half up) with a 128-bit product, saturated
// at math.MaxInt64; c > 0.
func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	lo, carry := bits.Add64(lo, c/2, 0)
	hi += carry
	if hi >= c { // the quotient needs more than 64 bits
		return math.MaxInt64
	}
	q, _ := bits.Div64(hi, lo, c)
	return min(q, math.MaxInt64)
}

// sat is a + b saturated at math.MaxInt64 (a, b >= 0, b <= math.MaxInt64).
func sat(a int64, b uint64) int64 {
	if b > uint64(math.MaxInt64-a) {
		return math.MaxInt64
	}
	return a + int64(b)
}
