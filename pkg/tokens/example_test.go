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
