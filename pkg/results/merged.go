package results

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
)

// Result is the result kept for one custom_id: the line and the attempt it
// came from (0 = the original batch, n = the n-th retry batch).
type Result struct {
	Attempt int
	Line    Line
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
// Memory is about 200 bytes per custom_id plus the kept response bodies
// (compacted): 50,000 chat completions take some tens of MB. Bodies of
// replaced results are released.
type Merged struct {
	byID      map[string]*entry
	completed int
	failed    int

	kept      map[string]Usage    // by model, over kept successes
	billed    map[string]Usage    // by model, over every successful line added
	billedIDs map[string]struct{} // line ids already billed
}

type entry struct {
	Result
	outcome Outcome
	model   string
	usage   Usage
}

// Add records line from the given attempt (0 = original batch).
//
// Every successful line is billed once (lines are told apart by their vendor
// id, so adding the same file twice does not bill twice), even when another
// success for its custom_id is kept.
func (m *Merged) Add(attempt int, line Line) {
	if m.byID == nil {
		m.byID = make(map[string]*entry)
		m.kept = make(map[string]Usage)
		m.billed = make(map[string]Usage)
		m.billedIDs = make(map[string]struct{})
	}
	e := &entry{Result: Result{Attempt: attempt, Line: line}, outcome: line.Outcome()}
	if e.outcome == Succeeded {
		e.model, e.usage = line.meta()
		m.bill(line.ID, e.model, e.usage)
	}
	cur, ok := m.byID[line.CustomID]
	if !ok {
		m.byID[line.CustomID] = e
		m.count(e, +1)
		return
	}
	ok = cur.outcome != Succeeded && e.outcome == Succeeded ||
		cur.outcome == Succeeded && e.outcome == Succeeded && attempt < cur.Attempt ||
		cur.outcome != Succeeded && e.outcome != Succeeded && attempt > cur.Attempt
	if ok {
		m.count(cur, -1)
		m.byID[line.CustomID] = e
		m.count(e, +1)
	}
}

func (m *Merged) bill(id, model string, u Usage) {
	if id != "" {
		if _, dup := m.billedIDs[id]; dup {
			return
		}
		m.billedIDs[id] = struct{}{}
	}
	m.billed[model] = m.billed[model].Add(u)
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
	return e.Result, true
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
	return maps.Clone(m.kept), maps.Clone(m.billed)
}

// Cost estimates the cost of the billed usage with p. known is false when a
// billed model is not in p; usd then counts only the known models.
func (m *Merged) Cost(p PriceTable) (usd float64, known bool) {
	known = true
	for _, model := range slices.Sorted(maps.Keys(m.billed)) { // sorted: a stable float sum
		c, ok := p.Cost(model, m.billed[model])
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

// WriteJSONL writes the merged results, one line per custom_id sorted by
// custom_id:
//
//	{"custom_id","status":"succeeded"|"failed","attempt","status_code","body","error","reason","batch_request_id","request_id"}
//
// status_code is 0 and body absent when the request got no response; body
// is the response body (for failures, the vendor's error body); error is the
// line's error object (e.g. batch_expired) when it had one; reason is
// Line.Reason for failures. It returns the number of lines written.
func (m *Merged) WriteJSONL(w io.Writer) (int, error) {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	ids := slices.Sorted(maps.Keys(m.byID))
	for i, id := range ids {
		e := m.byID[id]
		r := record{
			CustomID: id, Status: StatusSucceeded, Attempt: e.Attempt, StatusCode: e.Line.StatusCode,
			Body: e.Line.Body, Error: e.Line.Error, BatchRequestID: e.Line.ID, RequestID: e.Line.RequestID,
		}
		if e.outcome != Succeeded {
			r.Status, r.Reason = StatusFailed, e.Line.Reason()
		}
		if err := enc.Encode(r); err != nil {
			return i, fmt.Errorf("write result %q: %w", id, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return len(ids), fmt.Errorf("write results: %w", err)
	}
	return len(ids), nil
}

// ReadMerged reads a file written by WriteJSONL. The billed usage of the
// returned Merged is its kept usage (the other attempts' lines are not in
// the file). Lines are checked: a custom_id twice, a status that does not
// match the line, or a line with neither response nor error is an error.
func ReadMerged(r io.Reader) (*Merged, error) {
	m := &Merged{}
	err := scanLines(r, func(_ int, b []byte) error {
		var rec record
		if err := json.Unmarshal(b, &rec); err != nil {
			return fmt.Errorf("%w: not a JSON object: %w", ErrInvalidLine, err)
		}
		l := Line{ID: rec.BatchRequestID, CustomID: rec.CustomID, StatusCode: rec.StatusCode,
			RequestID: rec.RequestID, Body: compactBody(rec.Body), Error: rec.Error}
		switch {
		case l.CustomID == "":
			return fmt.Errorf("%w: missing custom_id", ErrInvalidLine)
		case l.StatusCode != 0 && (l.StatusCode < 100 || l.StatusCode > 599):
			return fmt.Errorf("%w: custom_id %q: invalid status_code %d", ErrInvalidLine, l.CustomID, l.StatusCode)
		case l.StatusCode == 0 && l.Error == nil:
			return fmt.Errorf("%w: custom_id %q: neither response nor error", ErrInvalidLine, l.CustomID)
		case l.StatusCode == 0 && l.Body != nil:
			return fmt.Errorf("%w: custom_id %q: body without status_code", ErrInvalidLine, l.CustomID)
		}
		if _, dup := m.byID[l.CustomID]; dup {
			return fmt.Errorf("%w: custom_id %q twice", ErrInvalidLine, l.CustomID)
		}
		if want := (l.Outcome() == Succeeded); rec.Status != StatusSucceeded && rec.Status != StatusFailed ||
			want != (rec.Status == StatusSucceeded) {
			return fmt.Errorf("%w: custom_id %q: status %q does not match the line", ErrInvalidLine, l.CustomID, rec.Status)
		}
		m.Add(rec.Attempt, l)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read merged results: %w", err)
	}
	return m, nil
}
