package contract_test

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// benchItem is a typical ~300-byte batch.items message.
var benchItem = []byte(`{"custom_id":"item-00001","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Summarise the following paragraph in one sentence: the quick brown fox jumps over the lazy dog while the cat watches from the fence, unimpressed."}],"max_tokens":64},"metadata":{"team":"eval"}}`)

func BenchmarkDecodeItem(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchItem)))
	for b.Loop() {
		if _, _, err := contract.DecodeItem(benchItem); err != nil {
			b.Fatal(err)
		}
	}
}
