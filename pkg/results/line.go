package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// ErrInvalidLine matches every error ParseLine returns for a line that is
// not an output or error file line.
var ErrInvalidLine = errors.New("results: invalid line")

// Line is one line of an output or error file.
//
// StatusCode is 0 exactly when the line has no response (response: null);
// Body is then nil too. Body is the response body, compacted.
type Line struct {
	ID         string          // the vendor's request id, "batch_req_..."
	CustomID   string          // the caller's custom_id
	StatusCode int             // response.status_code; 0 when response is null
	RequestID  string          // response.request_id
	Body       json.RawMessage // response.body; nil when absent or null
	Error      *LineError      // the line's error object; nil when null
}

// LineError is the error object of a line whose request did not run, e.g.
// {"code":"batch_expired","message":"..."}.
type LineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type wireLine struct {
	ID       string        `json:"id"`
	CustomID string        `json:"custom_id"`
	Response *wireResponse `json:"response"`
	Error    *LineError    `json:"error"`
}

type wireResponse struct {
	StatusCode *int            `json:"status_code"`
	RequestID  string          `json:"request_id"`
	Body       json.RawMessage `json:"body"`
}

// ParseLine parses one line of an output or error file. Unknown fields are
// ignored. It fails (with an error matching ErrInvalidLine) when the line is
// not a JSON object, has no custom_id, has neither a response nor an error,
// or has a response without a status code in 100..599.
//
// The returned Line does not alias data.
func ParseLine(data []byte) (Line, error) {
	var w wireLine
	if err := json.Unmarshal(data, &w); err != nil {
		return Line{}, fmt.Errorf("%w: not a JSON object: %w", ErrInvalidLine, err)
	}
	if w.CustomID == "" {
		return Line{}, fmt.Errorf("%w: missing custom_id", ErrInvalidLine)
	}
	if w.Response == nil && w.Error == nil {
		return Line{}, fmt.Errorf("%w: custom_id %q: neither response nor error", ErrInvalidLine, w.CustomID)
	}
	l := Line{ID: w.ID, CustomID: w.CustomID, Error: w.Error}
	if r := w.Response; r != nil {
		if r.StatusCode == nil || *r.StatusCode < 100 || *r.StatusCode > 599 {
			return Line{}, fmt.Errorf("%w: custom_id %q: response without a valid status_code", ErrInvalidLine, w.CustomID)
		}
		l.StatusCode = *r.StatusCode
		l.RequestID = r.RequestID
		l.Body = compactBody(r.Body)
	}
	return l, nil
}

// compactBody returns b without insignificant whitespace, nil for null.
// b is valid JSON (json.Unmarshal checked it).
func compactBody(b json.RawMessage) json.RawMessage {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	if !spaceOutsideStrings(b) {
		return b // already compact: the common case
	}
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	if buf.String() == "null" {
		return nil
	}
	return bytes.Clone(buf.Bytes())
}

// spaceOutsideStrings reports whether b (valid JSON) has insignificant
// whitespace: a space, tab or line break outside its strings.
func spaceOutsideStrings(b []byte) bool {
	in := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case in && c == '\\':
			i++ // skip the escaped character
		case c == '"':
			in = !in
		case !in && (c == ' ' || c == '\t' || c == '\r' || c == '\n'):
			return true
		}
	}
	return false
}

// MarshalJSON writes the line in the vendor's shape, so ParseLine reads it
// back to an equal Line.
func (l Line) MarshalJSON() ([]byte, error) {
	w := wireLine{ID: l.ID, CustomID: l.CustomID, Error: l.Error}
	if l.StatusCode != 0 {
		sc := l.StatusCode
		w.Response = &wireResponse{StatusCode: &sc, RequestID: l.RequestID, Body: l.Body}
		if w.Response.Body == nil {
			w.Response.Body = json.RawMessage("null")
		}
	}
	return marshalNoEscape(w)
}

// marshalNoEscape marshals v without HTML escaping (bodies keep their bytes)
// and without the encoder's trailing newline.
func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Scan reads an output or error file line by line and calls fn with each
// parsed line. Blank lines are skipped. It stops at the first parse error or
// error from fn, returned as "line N: ..." (N counts from 1) and wrapping the
// cause, so errors.Is works.
//
// Lines may be of any length: Scan reads with a bufio.Reader, not a
// bufio.Scanner and its token limit, and holds one line at a time, so a
// 200 MB file costs its longest line in memory, not its size. fn owns the
// Line it receives.
func Scan(r io.Reader, fn func(Line) error) error {
	return ScanLines(r, func(n int, b []byte) error {
		l, err := ParseLine(b)
		if err != nil {
			return err
		}
		return fn(l)
	})
}

// ScanLines calls fn with each non-blank line of r (its terminator
// included) and its 1-based number; b is only valid during the call. It
// reads lines of any length holding one at a time, and stops at the first
// error of fn, returned as "line N: ..." wrapping it. Every JSONL reader
// of the fleet (input checks, output files, merged results) goes through
// it.
func ScanLines(r io.Reader, fn func(n int, b []byte) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var long []byte // accumulates lines longer than the reader's buffer
	for n := 1; ; n++ {
		b, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long[:0], b...)
			for errors.Is(err, bufio.ErrBufferFull) {
				b, err = br.ReadSlice('\n')
				long = append(long, b...)
			}
			b = long
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("line %d: read: %w", n, err)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if ferr := fn(n, b); ferr != nil {
				return fmt.Errorf("line %d: %w", n, ferr)
			}
		}
		if err != nil { // io.EOF
			return nil
		}
		if cap(long) > 1<<20 {
			long = nil // do not keep one huge line's buffer for the whole file
		}
	}
}
