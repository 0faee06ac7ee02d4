package results

import (
	"strings"
	"testing"
)

// benchRecordLine is a typical succeeded line of a merged results file.
var benchRecordLine = []byte(`{"custom_id":"it-00001","status":"succeeded","attempt":0,"status_code":200,` +
	`"body":{"id":"chatcmpl-x","object":"chat.completion","created":1733212800,"model":"gpt-4o-mini-2024-07-18",` +
	`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("lorem ipsum ", 25) + `","refusal":null},` +
	`"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":20,"total_tokens":32},` +
	`"service_tier":"default","system_fingerprint":"fp_x"},"batch_request_id":"batch_req_1","request_id":"req_1"}` + "\n")

func BenchmarkDecodeRecord(b *testing.B) {
	b.SetBytes(int64(len(benchRecordLine)))
	b.ReportAllocs()
	for b.Loop() {
		rec, err := decodeRecord(benchRecordLine)
		if err != nil || rec.CustomID != "it-00001" || len(rec.Body) == 0 {
			b.Fatal(rec, err)
		}
	}
}
