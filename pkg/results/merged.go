package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Result summarises the result kept for one custom_id: the attempt it came
// from (0 = the original batch, n = the n-th retry batch), its outcome and,
// for a failure, its reason (Line.Reason). Bodies are not kept: the merged
// results file is written by streaming the lines again (Merged.Merge).
type Result struct {
	Attempt    int
	Outcome    Outcome
	Reason     string
	StatusCode int
}

// Merged holds the final result per original custom_id across a job's
// attempts. The zero value is ready to use. It is not safe for concurrent
// use.
//
// Precedence, whatever the order lines are added in: a success always wins
// over a failure; among failures the latest attempt wins (the same attempt:
// the first added); among successes the earliest attempt wins (the same
// attempt: the first added).
//
// Memory is about 150 bytes per custom_id whatever the size of the
// requests and responses: bodies are read for their model, usage and error
// code, then dropped.
type Merged struct {
	byID      map[string]*entry
	completed int
	failed    int

	kept   map[string]Usage  // by model, over kept successes
	billed map[billKey]Usage // by attempt and model, over every successful line added
	intern map[string]string // model names and reasons, shared by every entry
}

type billKey struct {
	attempt int
	model   string
}

type entry struct {
	attempt    int32
	statusCode int16
	outcome    Outcome
	written    bool // Merge wrote this custom_id's line
	reason     string
	model      string
	usage      Usage
}

func (e *entry) result() Result {
	return Result{Attempt: int(e.attempt), Outcome: e.outcome, Reason: e.reason, StatusCode: int(e.statusCode)}
}

func (m *Merged) init() {
	if m.byID == nil {
		m.byID = make(map[string]*entry)
		m.kept = make(map[string]Usage)
		m.billed = make(map[billKey]Usage)
		m.intern = make(map[string]string)
	}
}

func (m *Merged) interned(s string) string {
	if v, ok := m.intern[s]; ok {
		return v
	}
	if len(m.intern) < 1024 {
		m.intern[s] = s
	}
	return s
}

// Add records line from the given attempt (0 = original batch) and reports
// whether it is now the kept result of its custom_id. Every successful line
// is billed to its attempt, even when another success for its custom_id is
// kept.
func (m *Merged) Add(attempt int, line Line) bool {
	m.init()
	e := &entry{attempt: int32(attempt), statusCode: int16(line.StatusCode), outcome: line.Outcome()}
	if e.outcome == Succeeded {
		model, usage := line.meta()
		e.model, e.usage = m.interned(model), usage
		k := billKey{attempt, e.model}
		m.billed[k] = m.billed[k].Add(usage)
	} else {
		e.reason = m.interned(line.Reason())
	}
	return m.put(line.CustomID, e)
}

// put keeps e for id if it wins over what is kept.
func (m *Merged) put(id string, e *entry) bool {
	cur, ok := m.byID[id]
	if !ok {
		m.byID[id] = e
		m.count(e, +1)
		return true
	}
	a := e.attempt
	win := cur.outcome != Succeeded && e.outcome == Succeeded ||
		cur.outcome == Succeeded && e.outcome == Succeeded && a < cur.attempt ||
		cur.outcome != Succeeded && e.outcome != Succeeded && a > cur.attempt
	if win {
		m.count(cur, -1)
		m.byID[id] = e
		m.count(e, +1)
	}
	return win
}

// count adds (sign +1) or removes (sign -1) e from the counts and kept usage.
func (m *Merged) count(e *entry, sign int) {
	if e.outcome != Succeeded {
		m.failed += sign
		return
	}
	m.completed += sign
	s := int64(sign)
	u := m.kept[e.model]
	u.InputTokens += s * e.usage.InputTokens
	u.OutputTokens += s * e.usage.OutputTokens
	u.TotalTokens += s * e.usage.TotalTokens
	if u == (Usage{}) {
		delete(m.kept, e.model)
	} else {
		m.kept[e.model] = u
	}
}

// AddFile scans an output or error file of the given attempt into m.
func (m *Merged) AddFile(attempt int, r io.Reader) error {
	return Scan(r, func(l Line) error {
		m.Add(attempt, l)
		return nil
	})
}

// Len is the number of custom_ids with a result.
func (m *Merged) Len() int { return len(m.byID) }

// Get returns the result kept for customID.
func (m *Merged) Get(customID string) (Result, bool) {
	e, ok := m.byID[customID]
	if !ok {
		return Result{}, false
	}
	return e.result(), true
}

// Counts returns how many custom_ids have a kept success (completed) and a
// kept failure (failed). Custom_ids without any line are in neither: see
// Pending.
func (m *Merged) Counts() (completed, failed int) { return m.completed, m.failed }

// Pending returns the custom_ids of all (in their order) that have no result
// at all, e.g. requests a failed or cancelled batch never reported.
func (m *Merged) Pending(all []string) []string {
	var out []string
	for _, id := range all {
		if _, ok := m.byID[id]; !ok {
			out = append(out, id)
		}
	}
	return out
}

// Failed returns the custom_ids whose kept result is a failure, sorted; with
// retryableOnly, only those whose failure is Retryable (the input of a retry
// batch).
func (m *Merged) Failed(retryableOnly bool) []string {
	var out []string
	for id, e := range m.byID {
		if e.outcome == Permanent && !retryableOnly || e.outcome == Retryable {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// Usage returns the usage summed over the kept successes (one per
// custom_id) and the billed usage: every successful line of every attempt
// added, which is what the vendor charges and may exceed kept when a
// custom_id succeeded twice.
func (m *Merged) Usage() (kept, billed Usage) {
	for _, u := range m.kept {
		kept = kept.Add(u)
	}
	for _, u := range m.billed {
		billed = billed.Add(u)
	}
	return kept, billed
}

// UsageByModel is Usage split by body.model ("" for bodies without one).
// The maps are copies.
func (m *Merged) UsageByModel() (kept, billed map[string]Usage) {
	billed = map[string]Usage{}
	for k, u := range m.billed {
		billed[k.model] = billed[k.model].Add(u)
	}
	return maps.Clone(m.kept), billed
}

// BilledByModel is the billed usage of the lines added for one attempt,
// by model (a copy).
func (m *Merged) BilledByModel(attempt int) map[string]Usage {
	out := map[string]Usage{}
	for k, u := range m.billed {
		if k.attempt == attempt {
			out[k.model] = out[k.model].Add(u)
		}
	}
	return out
}

// Cost estimates the cost of the billed usage with p. known is false when a
// billed model is not in p; usd then counts only the known models.
func (m *Merged) Cost(p PriceTable) (usd float64, known bool) {
	_, billed := m.UsageByModel()
	return p.CostByModel(billed)
}

// CostByModel estimates the cost of usage by model with p. known is false
// when a model is not in p; usd then counts only the known models.
func (p PriceTable) CostByModel(usage map[string]Usage) (usd float64, known bool) {
	known = true
	for _, model := range slices.Sorted(maps.Keys(usage)) { // sorted: a stable float sum
		c, ok := p.Cost(model, usage[model])
		usd += c
		known = known && ok
	}
	return usd, known
}

// Statuses of a merged results line.
const (
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// record is one line of the merged results file.
type record struct {
	CustomID       string          `json:"custom_id"`
	Status         string          `json:"status"`
	Attempt        int             `json:"attempt"`
	StatusCode     int             `json:"status_code"`
	Body           json.RawMessage `json:"body,omitempty"`
	Error          *LineError      `json:"error,omitempty"`
	Reason         string          `json:"reason,omitempty"`
	BatchRequestID string          `json:"batch_request_id,omitempty"`
	RequestID      string          `json:"request_id,omitempty"`
}

func recordOf(attempt int, l Line) record {
	r := record{
		CustomID: l.CustomID, Status: StatusSucceeded, Attempt: attempt, StatusCode: l.StatusCode,
		Body: l.Body, Error: l.Error, BatchRequestID: l.ID, RequestID: l.RequestID,
	}
	if l.Outcome() != Succeeded {
		r.Status, r.Reason = StatusFailed, l.Reason()
	}
	return r
}

// line checks a record and returns it as a Line.
func (r *record) line() (Line, error) {
	l := Line{ID: r.BatchRequestID, CustomID: r.CustomID, StatusCode: r.StatusCode,
		RequestID: r.RequestID, Body: compactBody(r.Body), Error: r.Error}
	switch {
	case l.CustomID == "":
		return l, fmt.Errorf("%w: missing custom_id", ErrInvalidLine)
	case l.StatusCode != 0 && (l.StatusCode < 100 || l.StatusCode > 599):
		return l, fmt.Errorf("%w: custom_id %q: invalid status_code %d", ErrInvalidLine, l.CustomID, l.StatusCode)
	case l.StatusCode == 0 && l.Error == nil:
		return l, fmt.Errorf("%w: custom_id %q: neither response nor error", ErrInvalidLine, l.CustomID)
	case l.StatusCode == 0 && l.Body != nil:
		return l, fmt.Errorf("%w: custom_id %q: body without status_code", ErrInvalidLine, l.CustomID)
	}
	if want := (l.Outcome() == Succeeded); r.Status != StatusSucceeded && r.Status != StatusFailed ||
		want != (r.Status == StatusSucceeded) {
		return l, fmt.Errorf("%w: custom_id %q: status %q does not match the line", ErrInvalidLine, l.CustomID, r.Status)
	}
	return l, nil
}

// Writer writes merged results lines:
//
//	{"custom_id","status":"succeeded"|"failed","attempt","status_code","body","error","reason","batch_request_id","request_id"}
//
// status_code is 0 and body absent when the request got no response; body
// is the response body (for failures, the vendor's error body); error is the
// line's error object (e.g. batch_expired) when it had one; reason is
// Line.Reason for failures. Call Flush at the end.
//
// Lines are assembled by hand, the body copied as it is (ParseLine checked
// and compacted it): the same bytes encoding/json would write, without
// scanning every body again.
type Writer struct {
	bw  *bufio.Writer
	buf []byte
	n   int
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, 64<<10)}
}

// Write writes l as a result of the given attempt.
func (w *Writer) Write(attempt int, l Line) error {
	return w.write(recordOf(attempt, l))
}

func (w *Writer) write(r record) error {
	b := append(w.buf[:0], `{"custom_id":`...)
	b = appendString(b, r.CustomID)
	b = append(b, `,"status":`...)
	b = appendString(b, r.Status)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(r.Attempt), 10)
	b = append(b, `,"status_code":`...)
	b = strconv.AppendInt(b, int64(r.StatusCode), 10)
	if len(r.Body) > 0 {
		b = append(append(b, `,"body":`...), r.Body...)
	}
	if r.Error != nil {
		e, err := marshalNoEscape(r.Error)
		if err != nil {
			return fmt.Errorf("write result %q: %w", r.CustomID, err)
		}
		b = append(append(b, `,"error":`...), e...)
	}
	for _, f := range [...]struct{ name, v string }{
		{`,"reason":`, r.Reason}, {`,"batch_request_id":`, r.BatchRequestID}, {`,"request_id":`, r.RequestID},
	} {
		if f.v != "" {
			b = appendString(append(b, f.name...), f.v)
		}
	}
	b = append(b, "}\n"...)
	w.buf = b
	return w.raw(r.CustomID, b)
}

// raw writes one complete line.
func (w *Writer) raw(id string, line []byte) error {
	if _, err := w.bw.Write(line); err != nil {
		return fmt.Errorf("write result %q: %w", id, err)
	}
	w.n++
	return nil
}

// appendString appends s as a JSON string the way encoding/json writes it
// (without HTML escaping): plain printable ASCII directly, anything else
// through the encoder.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			q, err := marshalNoEscape(s)
			if err != nil { // a string always marshals
				panic(err)
			}
			return append(b, q...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// Flush writes what is buffered and returns the number of lines written.
func (w *Writer) Flush() (int, error) {
	if err := w.bw.Flush(); err != nil {
		return w.n, fmt.Errorf("write results: %w", err)
	}
	return w.n, nil
}

// readRecords calls fn with each checked line of a merged results file.
func readRecords(r io.Reader, fn func(attempt int, l Line) error) error {
	return ScanLines(r, func(_ int, b []byte) error {
		rec, err := decodeRecord(b)
		if err != nil {
			return err
		}
		l, err := rec.line()
		if err != nil {
			return err
		}
		return fn(rec.Attempt, l)
	})
}

// decodeRecord decodes one line of a merged results file as
// json.Unmarshal into a record would, in one gjson pass over the line's
// top-level object. Whatever the fast path does not handle exactly like
// encoding/json (invalid JSON, a value that is not an object, a type
// mismatch, a non-integer number, an escaped, non-ASCII or case-variant
// key, very deep nesting, ...) goes through json.Unmarshal instead.
func decodeRecord(b []byte) (record, error) {
	if rec, ok := decodeRecordFast(b); ok {
		return rec, nil
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%w: not a JSON object: %w", ErrInvalidLine, err)
	}
	return rec, nil
}

// maxJSONDepth is encoding/json's nesting limit: a line with more opening
// brackets than this may be too deep for it.
const maxJSONDepth = 10000

// decodeRecordFast is decodeRecord's gjson path; ok is false when the line
// must go through json.Unmarshal. The record does not alias b.
func decodeRecordFast(b []byte) (rec record, ok bool) {
	if !gjson.ValidBytes(b) {
		return rec, false
	}
	if len(b) > maxJSONDepth && bytes.Count(b, []byte{'{'})+bytes.Count(b, []byte{'['}) > maxJSONDepth {
		return rec, false
	}
	v := gjson.ParseBytes(b)
	if !v.IsObject() {
		return rec, false
	}
	ok = true
	v.ForEach(func(key, val gjson.Result) bool {
		switch plainKey(key) {
		case "custom_id":
			ok = setString(&rec.CustomID, val)
		case "status":
			ok = setString(&rec.Status, val)
		case "attempt":
			ok = setInt(&rec.Attempt, val)
		case "status_code":
			ok = setInt(&rec.StatusCode, val)
		case "body":
			// json.RawMessage gets the value's bytes, "null" included.
			rec.Body = append(rec.Body[:0], val.Raw...)
		case "error":
			ok = setLineError(&rec.Error, val)
		case "reason":
			ok = setString(&rec.Reason, val)
		case "batch_request_id":
			ok = setString(&rec.BatchRequestID, val)
		case "request_id":
			ok = setString(&rec.RequestID, val)
		default:
			ok = unknownKey(key, "custom_id", "status", "attempt", "status_code", "body",
				"error", "reason", "batch_request_id", "request_id")
		}
		return ok
	})
	return rec, ok
}

// plainKey is key's name when it has no escapes ("" otherwise, which no
// field matches and unknownKey rejects).
func plainKey(key gjson.Result) string {
	if len(key.Raw) != len(key.Str)+2 {
		return ""
	}
	return key.Str
}

// unknownKey reports whether a key that is no exact field name can be
// ignored: encoding/json matches names case-insensitively (with Unicode
// folding), so an escaped or non-ASCII key, or one that folds to a field
// name, is left to it.
func unknownKey(key gjson.Result, names ...string) bool {
	if !plainASCII(key) {
		return false
	}
	for _, n := range names {
		if strings.EqualFold(key.Str, n) {
			return false
		}
	}
	return true
}

// plainASCII reports whether a JSON string is ASCII without escapes: its
// decoding is its raw text, whoever decodes it.
func plainASCII(v gjson.Result) bool {
	if len(v.Raw) != len(v.Str)+2 {
		return false // escaped
	}
	for i := 0; i < len(v.Str); i++ {
		if v.Str[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// setString decodes a JSON string into *s as encoding/json does: null
// leaves it unchanged; ok is false for another type or a string whose
// decoding gjson might do differently (escapes, non-ASCII).
func setString(s *string, v gjson.Result) bool {
	switch v.Type {
	case gjson.Null:
		return true
	case gjson.String:
		if !plainASCII(v) {
			return false
		}
		*s = strings.Clone(v.Str) // do not keep the whole line alive
		return true
	}
	return false
}

// setInt decodes a JSON integer into *n as encoding/json does: null leaves
// it unchanged; ok is false for another type, a fraction or exponent, or
// an int overflow.
func setInt(n *int, v gjson.Result) bool {
	switch v.Type {
	case gjson.Null:
		return true
	case gjson.Number:
		i, err := strconv.ParseInt(v.Raw, 10, strconv.IntSize)
		if err != nil {
			return false
		}
		*n = int(i)
		return true
	}
	return false
}

// setLineError decodes a JSON object into *e as encoding/json does: null
// sets it to nil; an object is decoded into the LineError *e points to,
// a new one if nil.
func setLineError(e **LineError, v gjson.Result) bool {
	switch {
	case v.Type == gjson.Null:
		*e = nil
		return true
	case !v.IsObject():
		return false
	}
	le := *e
	if le == nil {
		le = new(LineError)
	}
	ok := true
	v.ForEach(func(key, val gjson.Result) bool {
		switch plainKey(key) {
		case "code":
			ok = setString(&le.Code, val)
		case "message":
			ok = setString(&le.Message, val)
		default:
			ok = unknownKey(key, "code", "message")
		}
		return ok
	})
	*e = le
	return ok
}

// ScanMerged calls fn with each checked line of a merged results file, in
// file order, with the attempt it came from; it stops at fn's first error.
func ScanMerged(r io.Reader, fn func(attempt int, l Line) error) error {
	return readRecords(r, fn)
}

// ReadMerged reads a merged results file (written by a Writer or Merge).
// The billed usage of the returned Merged is its kept usage (the other
// attempts' lines are not in the file). Lines are checked: a custom_id
// twice, a status that does not match the line, or a line with neither
// response nor error is an error.
func ReadMerged(r io.Reader) (*Merged, error) {
	m := &Merged{}
	return m, m.AddMerged(r, math.MaxInt32)
}

// AddMerged adds the lines of a merged results file whose attempt is
// below below (the lines of a later attempt are skipped: its own files are
// added again).
func (m *Merged) AddMerged(r io.Reader, below int) error {
	seen := make(map[string]struct{})
	err := readRecords(r, func(attempt int, l Line) error {
		if _, dup := seen[l.CustomID]; dup {
			return fmt.Errorf("%w: custom_id %q twice", ErrInvalidLine, l.CustomID)
		}
		seen[l.CustomID] = struct{}{}
		if attempt < below {
			m.Add(attempt, l)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read merged results: %w", err)
	}
	return nil
}

// Merge writes the merged results to w by streaming merged results files
// (sources, e.g. the previous merged results and an attempt's lines, in
// the order their lines were added to m): of each custom_id it writes the
// line m keeps, once. It fails if a kept result is in none of the
// sources. It returns the number of lines written; m remembers what it
// wrote, so call it once per Merged.
func (m *Merged) Merge(w io.Writer, sources ...io.Reader) (int, error) {
	out := NewWriter(w)
	for i, src := range sources {
		// The sources are the fleet's own files: only custom_id and
		// attempt are looked up, and kept lines are copied as they are.
		err := ScanLines(src, func(_ int, b []byte) error {
			f := gjson.GetManyBytes(b, "custom_id", "attempt")
			if f[0].Type != gjson.String || f[1].Type != gjson.Number {
				return fmt.Errorf("%w: not a merged results line", ErrInvalidLine)
			}
			e, ok := m.byID[f[0].Str]
			if !ok || e.written || int64(e.attempt) != f[1].Int() {
				return nil
			}
			e.written = true
			line := append(bytes.TrimRight(b, "\r\n"), '\n')
			return out.raw(f[0].Str, line)
		})
		if err != nil {
			return out.n, fmt.Errorf("merge results source %d: %w", i, err)
		}
	}
	n, err := out.Flush()
	if err != nil {
		return n, err
	}
	if n != len(m.byID) {
		return n, fmt.Errorf("merge results: %d of %d kept results found in the sources", n, len(m.byID))
	}
	return n, nil
}
