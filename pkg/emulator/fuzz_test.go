package emulator

import (
	"encoding/json"
	"testing"
)

// FuzzParseInput: any input file either fails with errors or yields
// requests with unique custom_ids and one model, whose bodies round-trip.
func FuzzParseInput(f *testing.F) {
	f.Add([]byte(line("a", "m") + "\n" + line("b", "m") + "\n"))
	f.Add([]byte(`{"custom_id":`))
	f.Add([]byte("\n\n"))
	f.Add([]byte(line("a", "m") + "\r\n" + line("a", "m")))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := parseInput(data, "/v1/chat/completions")
		if in.errs != nil {
			if len(in.reqs) != 0 || len(in.errs) > maxReportedErrors {
				t.Fatalf("failed input with %d requests, %d errors", len(in.reqs), len(in.errs))
			}
			return
		}
		if len(in.reqs) == 0 || len(in.reqs) > MaxRequestsPerBatch {
			t.Fatalf("valid input with %d requests", len(in.reqs))
		}
		seen := map[string]bool{}
		for _, r := range in.reqs {
			if seen[r.customID] || r.body["model"] != in.model || r.promptTokens < 1 {
				t.Fatalf("bad request %+v (model %q)", r, in.model)
			}
			seen[r.customID] = true
			b, err := json.Marshal(r.body)
			if err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(b, &back); err != nil || back["model"] != in.model {
				t.Fatalf("body does not round-trip: %s", b)
			}
		}
	})
}
