package tokens

import (
	"strings"
	"sync"

	"github.com/tidwall/gjson"
	"github.com/tiktoken-go/tokenizer"
)

// Per OpenAI's cookbook (num_tokens_from_messages): every message costs
// 3 tokens besides its fields' text, a name 1 more, and every reply is
// primed with 3.
const (
	perMessage = 3
	perName    = 1
	perReply   = 3
)

// Bytes is the byte rule: ceil(n / 3.5 × 1.1), the estimate for n bytes of
// a request to a model without a known tokenizer.
func Bytes(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return (n*11 + 34) / 35
}

// Estimate returns an estimate of the input tokens of body, a request body
// (JSON: the object with "model" and "messages", "input", "prompt", ...)
// sent to model. An empty model is read from body.model. OpenAI models are
// tokenized with their encoding, others are counted by the byte rule (see
// the package documentation).
//
// It is safe for concurrent use. Its cost, from BenchmarkEstimate (a
// chat body of English prose, one core): for an OpenAI model about
// 100,000 ns per KB of body with o200k_base and 85,000 ns per KB with
// cl100k_base (~100 µs for a 1 KB request, ~1.6 ms for 16 KB; linear in
// the text's size), and ~1,100 allocations a KB; for other models ~5 ns a
// body whatever its size (the byte rule does not read it). To estimate
// many requests, such as a batch input file, use a Tally.
func Estimate(model string, body []byte) int64 {
	if model == "" {
		model = gjson.GetBytes(body, "model").Str
	}
	enc := EncodingFor(model)
	if enc == "" {
		return Bytes(int64(len(body)))
	}
	c := codecOf(enc)
	if c == nil || !gjson.ValidBytes(body) {
		return Bytes(int64(len(body)))
	}
	root := gjson.ParseBytes(body)
	if !root.IsObject() {
		return Bytes(int64(len(body)))
	}
	var n int64
	known := false
	root.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "messages":
			if v.IsArray() {
				known = true
				n += messages(c, v) + perReply
			}
		case "input":
			if v.Type == gjson.String || v.IsArray() {
				known = true
				n += inputs(c, v)
			}
		case "prompt":
			if v.Type == gjson.String || v.IsArray() {
				known = true
				n += inputs(c, v)
			}
		case "instructions":
			if v.Type == gjson.String {
				n += perMessage + count(c, "system") + count(c, v.Str)
			}
		case "tools", "functions":
			if v.IsArray() {
				n += count(c, v.Raw)
			}
		}
		return true
	})
	if !known {
		return Bytes(int64(len(body)))
	}
	return n
}

// messages counts a chat messages array.
func messages(c tokenizer.Codec, v gjson.Result) int64 {
	var n int64
	v.ForEach(func(_, m gjson.Result) bool {
		n += message(c, m)
		return true
	})
	return n
}

// message counts one chat message (or responses input item): 3 tokens and
// the text of its fields.
func message(c tokenizer.Codec, m gjson.Result) int64 {
	if !m.IsObject() {
		return perMessage + text(c, m)
	}
	n := int64(perMessage)
	m.ForEach(func(k, v gjson.Result) bool {
		switch {
		case k.Str == "content":
			n += content(c, v)
		case v.Type == gjson.String:
			n += count(c, v.Str)
			if k.Str == "name" {
				n += perName
			}
		case v.Type == gjson.Null:
		default: // tool_calls, function_call, audio, ...: their JSON
			n += count(c, v.Raw)
		}
		return true
	})
	return n
}

// content counts a message's content: a string, or an array of parts of
// which text parts count their text and others (images, audio, files)
// their JSON by the byte rule.
func content(c tokenizer.Codec, v gjson.Result) int64 {
	if !v.IsArray() {
		return text(c, v)
	}
	var n int64
	v.ForEach(func(_, p gjson.Result) bool {
		switch {
		case p.Type == gjson.String:
			n += count(c, p.Str)
		case p.IsObject():
			if t := p.Get("text"); t.Type == gjson.String {
				n += count(c, t.Str)
			} else if r := p.Get("refusal"); r.Type == gjson.String {
				n += count(c, r.Str)
			} else {
				n += Bytes(int64(len(p.Raw)))
			}
		default:
			n += Bytes(int64(len(p.Raw)))
		}
		return true
	})
	return n
}

// inputs counts an embeddings or completions input, or a responses input:
// a string, a token array, or an array of strings, token arrays or
// (responses) items.
func inputs(c tokenizer.Codec, v gjson.Result) int64 {
	if !v.IsArray() {
		return text(c, v)
	}
	var n int64
	items := false
	v.ForEach(func(_, e gjson.Result) bool {
		switch {
		case e.Type == gjson.Number:
			n++ // a token id
		case e.IsObject():
			items = true
			n += message(c, e)
		case e.IsArray():
			n += inputs(c, e)
		default:
			n += text(c, e)
		}
		return true
	})
	if items {
		n += perReply
	}
	return n
}

// text counts a string value, or the JSON of another.
func text(c tokenizer.Codec, v gjson.Result) int64 {
	switch v.Type {
	case gjson.String:
		return count(c, v.Str)
	case gjson.Null:
		return 0
	}
	return count(c, v.Raw)
}

// count tokenizes s; should the tokenizer fail, s counts by the byte rule.
func count(c tokenizer.Codec, s string) int64 {
	if s == "" {
		return 0
	}
	k, err := c.Count(s)
	if err != nil {
		return Bytes(int64(len(s)))
	}
	return int64(k)
}

// prefixRules map model-name prefixes to encodings, the first match
// winning (so gpt-4o before gpt-4). They follow tiktoken's model table and
// cover names github.com/tiktoken-go/tokenizer does not know (gpt-5.1,
// gpt-4.5, text-embedding-3-*, ft:gpt-4o-*, ...).
var prefixRules = []struct {
	prefix string
	enc    tokenizer.Encoding
}{
	{"gpt-4o", tokenizer.O200kBase},
	{"gpt-4.1", tokenizer.O200kBase},
	{"gpt-4.5", tokenizer.O200kBase},
	{"gpt-4", tokenizer.Cl100kBase},
	{"gpt-3.5", tokenizer.Cl100kBase},
	{"gpt-35", tokenizer.Cl100kBase},
	{"gpt-", tokenizer.O200kBase}, // gpt-5*, gpt-oss-*, and later
	{"chatgpt-", tokenizer.O200kBase},
	{"text-embedding-", tokenizer.Cl100kBase},
	{"davinci-002", tokenizer.Cl100kBase},
	{"babbage-002", tokenizer.Cl100kBase},
}

// oSeries are the o-series families: the name itself or name-<suffix>.
var oSeries = []string{"o1", "o3", "o4"}

// libraryModels caches the encodings the tokenizer library gives models
// that prefixRules and oSeries do not match (only models it knows are
// stored: a bounded set).
var libraryModels sync.Map // model -> tokenizer.Encoding

// EncodingFor returns the tiktoken encoding Estimate uses for model
// ("o200k_base", "cl100k_base", ...), or "" when model is not an OpenAI
// model that has one and the byte rule applies. A fine-tuned model
// (ft:<base>:<org>:...) has its base model's encoding.
func EncodingFor(model string) tokenizer.Encoding {
	base := model
	if rest, ok := strings.CutPrefix(base, "ft:"); ok {
		base, _, _ = strings.Cut(rest, ":")
	}
	if strings.HasPrefix(base, "claude-") {
		return "" // not looked up in the library's table, which iterates a map
	}
	for _, r := range prefixRules {
		if strings.HasPrefix(base, r.prefix) {
			return r.enc
		}
	}
	for _, o := range oSeries {
		if base == o || strings.HasPrefix(base, o+"-") {
			return tokenizer.O200kBase
		}
	}
	if base == "" {
		return ""
	}
	if e, ok := libraryModels.Load(base); ok {
		return e.(tokenizer.Encoding)
	}
	c, err := tokenizer.ForModel(tokenizer.Model(base))
	if err != nil {
		return ""
	}
	e := tokenizer.Encoding(c.GetName())
	if _, ok := codecs[e]; !ok {
		return ""
	}
	libraryModels.Store(base, e)
	return e
}

// lazyCodec is one encoding's codec, made on first use and then shared
// (a codec is safe for concurrent use: its vocabulary is read only and
// its regexp pools its matchers).
type lazyCodec struct {
	once sync.Once
	c    tokenizer.Codec
}

var codecs = map[tokenizer.Encoding]*lazyCodec{
	tokenizer.O200kBase:  {},
	tokenizer.Cl100kBase: {},
	tokenizer.P50kBase:   {},
	tokenizer.P50kEdit:   {},
	tokenizer.R50kBase:   {},
}

// codecOf returns enc's shared codec, or nil if the library has none.
func codecOf(enc tokenizer.Encoding) tokenizer.Codec {
	l, ok := codecs[enc]
	if !ok {
		return nil
	}
	l.once.Do(func() {
		c, err := tokenizer.Get(enc)
		if err == nil {
			l.c = c
		}
	})
	return l.c
}
