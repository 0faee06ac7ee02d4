package results_test

import (
	"bytes"
	"fmt"
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
