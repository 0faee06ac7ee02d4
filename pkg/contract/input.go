package contract

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// MaxInputBytes is the largest batch input file the vendor takes (OpenAI:
// 200 MB).
const MaxInputBytes = 200 << 20

// BucketIntake is the JetStream object store bucket producers put large
// batch inputs in (contract v1.1, "Large inputs"); input_object names an
// object there.
const BucketIntake = "batch_intake"

// InputSummary describes a batch input file that CheckInput accepted.
type InputSummary struct {
	// Lines is the number of requests.
	Lines int
	// Bytes is the file's size.
	Bytes int64
	// Model is body.model, the same on every line.
	Model string
	// BodyBytes sums the request bodies' sizes (for token estimates).
	BodyBytes int64
}

// inputLineHead is what CheckInput decodes of a line: the body is only
// looked into for its model, so a line costs one pass of the decoder.
type inputLineHead struct {
	CustomID *string `json:"custom_id"`
	Method   *string `json:"method"`
	URL      *string `json:"url"`
	Body     *struct {
		Model *string `json:"model"`
	} `json:"body"`
}

// CheckInput reads an OpenAI batch input file (JSONL) line by line and
// checks the rules the vendor applies, so a bad file fails at intake with
// a clear error instead of as a failed vendor batch: every line a JSON
// object {"custom_id","method":"POST","url":endpoint,"body":{...,"model"}},
// custom_id unique, one model for the whole file, 1..MaxRequests lines and
// at most MaxInputBytes. Blank lines are skipped.
//
// It holds one line and the set of custom_ids in memory, never the file.
// A rule broken is a *Error (CodeInvalidInput, or CodeDuplicateCustomID)
// whose message names the 1-based line number and the rule; a read error
// is returned wrapped as it is.
func CheckInput(r io.Reader, endpoint string) (InputSummary, error) {
	var sum InputSummary
	seen := make(map[string]struct{})
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte
	for n := 1; ; n++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], b...)
			for errors.Is(err, bufio.ErrBufferFull) && int64(len(long)) <= MaxInputBytes {
				b, err = br.ReadSlice('\n')
				long = append(long, b...)
			}
			b = long
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
			return sum, fmt.Errorf("read input line %d: %w", n, err)
		}
		sum.Bytes += int64(len(b))
		if sum.Bytes > MaxInputBytes {
			return sum, Errorf(CodeInvalidInput, "line %d: the file is larger than %d bytes, the vendor's limit", n, MaxInputBytes)
		}
		if line := bytes.TrimSpace(b); len(line) > 0 {
			if sum.Lines == MaxRequests {
				return sum, Errorf(CodeInvalidInput, "line %d: the file has more than %d requests, the vendor's limit", n, MaxRequests)
			}
			if cerr := sum.add(n, line, endpoint, seen); cerr != nil {
				return sum, cerr
			}
		}
		if err != nil { // io.EOF
			break
		}
		if cap(long) > 1<<20 {
			long = nil
		}
	}
	if sum.Lines == 0 {
		return sum, Errorf(CodeInvalidInput, "the file has no requests")
	}
	return sum, nil
}

// add checks one non-blank line and counts it.
func (s *InputSummary) add(n int, line []byte, endpoint string, seen map[string]struct{}) *Error {
	var h inputLineHead
	if err := json.Unmarshal(line, &h); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return Errorf(CodeInvalidInput, "line %d: %s has the wrong type (%s)", n, te.Field, te.Value)
		}
		return Errorf(CodeInvalidInput, "line %d: not a JSON object: %v", n, err)
	}
	switch {
	case h.CustomID == nil || *h.CustomID == "":
		return Errorf(CodeInvalidInput, "line %d: custom_id is required", n)
	case h.Method == nil || *h.Method != "POST":
		return Errorf(CodeInvalidInput, "line %d: method must be \"POST\"", n)
	case h.URL == nil || *h.URL != endpoint:
		got := "missing"
		if h.URL != nil {
			got = fmt.Sprintf("%q", *h.URL)
		}
		return Errorf(CodeInvalidInput, "line %d: url must be the job's endpoint %q, got %s", n, endpoint, got)
	case h.Body == nil:
		return Errorf(CodeInvalidInput, "line %d: body must be a JSON object", n)
	case h.Body.Model == nil || *h.Body.Model == "":
		return Errorf(CodeInvalidInput, "line %d: body.model is required", n)
	case s.Model != "" && *h.Body.Model != s.Model:
		return Errorf(CodeInvalidInput, "line %d: body.model %q differs from %q: one model per file", n, *h.Body.Model, s.Model)
	}
	if _, dup := seen[*h.CustomID]; dup {
		return Errorf(CodeDuplicateCustomID, "line %d: custom_id %q is not unique", n, *h.CustomID)
	}
	seen[*h.CustomID] = struct{}{}
	s.Model = *h.Body.Model
	s.Lines++
	if i := bytes.Index(line, []byte(`"body"`)); i >= 0 {
		s.BodyBytes += int64(len(line) - i) // about the body's size; for estimates only
	}
	return nil
}
