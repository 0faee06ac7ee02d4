package tokens_test

import (
	"fmt"

	"github.com/batchfleet/batchfleet/pkg/tokens"
)

func ExampleEstimate() {
	chat := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}`)
	// 2 tokens of text, 3 + 1 (the role) for the message, 3 for the reply.
	fmt.Println(tokens.Estimate("gpt-4o-mini", chat))

	embed := []byte(`{"model":"text-embedding-3-small","input":["hello world","tiktoken is great!"]}`)
	fmt.Println(tokens.Estimate("text-embedding-3-small", embed))

	// No tokenizer for Claude: ceil(bytes / 3.5 × 1.1).
	claude := []byte(`{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hello world"}]}`)
	fmt.Println(len(claude), tokens.Estimate("claude-sonnet-4-5", claude))

	fmt.Println(tokens.EncodingFor("gpt-4o-mini"), tokens.EncodingFor("gpt-4"), tokens.EncodingFor("claude-sonnet-4-5") == "")
	// Output:
	// 9
	// 8
	// 98 31
	// o200k_base cl100k_base true
}

func ExampleTally() {
	// 10,000 requests alike: 110 of them are tokenized (the first 32, then
	// 1 in 128), and the estimate is 10,000 times one's count.
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello world"}]}`)
	var t tokens.Tally
	for range 10_000 {
		t.Add("gpt-4o-mini", body)
	}
	fmt.Println(tokens.Estimate("gpt-4o-mini", body), t.Tokens())
	// Output:
	// 9 90000
}
