package results_test

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/batchfleet/batchfleet/pkg/results"
)

// FuzzParseLine: every input is either rejected with ErrInvalidLine or
// parses to a Line that marshals and parses back to the same Line, and
// classifying it never panics.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{
		okLine("a", 1, 2),
		failLine("b", 500, "server_error", ""),
		failLine("c", 400, "invalid_request_error", "invalid_value"),
		errLine("d", "batch_expired"),
		`{"custom_id":"e","response":{"status_code":200,"body":{"s":"<\u2028>"}}}`,
		`{"custom_id":"f","response":{"status_code":200,"body":null},"error":{}}`,
		`{"custom_id":"g","response":{"status_code":200,"body":{"usage":"x"}}}`,
		`{}`, `null`, `[]`, `"x"`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := results.ParseLine(data)
		if err != nil {
			if !errors.Is(err, results.ErrInvalidLine) {
				t.Fatalf("error %v does not match ErrInvalidLine", err)
			}
			return
		}
		_ = l.Outcome()
		_ = l.Reason()
		_ = l.Usage()
		b, err := l.MarshalJSON()
		if err != nil {
			t.Fatalf("marshal %#v: %v", l, err)
		}
		l2, err := results.ParseLine(b)
		if err != nil {
			t.Fatalf("parse own output %s: %v", b, err)
		}
		if diff := cmp.Diff(l, l2); diff != "" {
			t.Fatalf("round trip of %q via %s (-want +got):\n%s", data, b, diff)
		}
	})
}
