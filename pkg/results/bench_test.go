package results_test

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func BenchmarkMergeFile(b *testing.B) {
	const n = 10_000
	var buf bytes.Buffer
	for i := range n {
		buf.WriteString(okLine(fmt.Sprintf("req-%05d", i), 10, 5))
		buf.WriteByte('\n')
	}
	file := buf.Bytes()
	b.SetBytes(int64(len(file)))
	b.ResetTimer()
	for b.Loop() {
		var m results.Merged
		if err := m.AddFile(0, bytes.NewReader(file)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)*n/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkStreamAttempt is the notifier's pass over an output file:
// parse each line, keep its outcome in a Merged, write its merged-results
// line. 5,000 lines with 2 KB replies (50,000 in the fleet's benchmark).
func BenchmarkStreamAttempt(b *testing.B) {
	const n = 5_000
	reply := strings.Repeat("lorem ipsum ", 170)
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, `{"id":"batch_req_%d","custom_id":"req-%05d","response":{"status_code":200,"request_id":"req_%d","body":{"id":"chatcmpl-1","object":"chat.completion","created":1733212800,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":%q,"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":500,"total_tokens":512},"service_tier":"default","system_fingerprint":"fp_x"}},"error":null}`+"\n", i, i, i, reply)
	}
	file := buf.Bytes()
	b.SetBytes(int64(len(file)))
	for b.Loop() {
		var m results.Merged
		w := results.NewWriter(io.Discard)
		if err := results.Scan(bytes.NewReader(file), func(l results.Line) error {
			m.Add(0, l)
			return w.Write(0, l)
		}); err != nil {
			b.Fatal(err)
		}
		if _, err := w.Flush(); err != nil {
			b.Fatal(err)
		}
	}
}
