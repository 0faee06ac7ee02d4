package jobstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// BucketIndex holds one small Entry per job under a key that names its
// state, so that listing the jobs in a state, or the report of a time
// window, reads only those entries and never the whole jobs bucket.
const BucketIndex = "batch_index"

// Job states, as listed (the index's partitions).
const (
	// StateQueued: no vendor batch yet (waiting for a submitter, admission,
	// the create rate or a retry's backoff).
	StateQueued = "queued"
	// StateSubmitted: the newest attempt's batch exists and has not started
	// running (validating).
	StateSubmitted = "submitted"
	// StateActive: the newest attempt's batch runs (in_progress, finalizing,
	// cancelling), or it ended and the next step is being decided.
	StateActive = "active"
	// StateEnding: the outcome is recorded, batch.completed is not yet
	// published. Listed as final.
	StateEnding = "ending"
	// StateFinal: the outcome is recorded and batch.completed published.
	StateFinal = "final"
)

// OpenStates are the index partitions of unfinished jobs, read whole by
// lists, the report and the rescuer (their size is the fleet's backlog,
// not its history).
var OpenStates = []string{StateQueued, StateSubmitted, StateActive, StateEnding}

// StateOf is the index state of a record.
func StateOf(j *Job) string {
	if j.Final {
		if j.Completed {
			return StateFinal
		}
		return StateEnding
	}
	a := j.Last()
	if a == nil {
		return StateQueued
	}
	switch a.State {
	case AttemptSubmitted:
		switch a.Status {
		case "", contract.StatusValidating:
			return StateSubmitted
		}
		return StateActive
	case AttemptFinal:
		return StateActive
	}
	return StateQueued
}

// hourLayout names the hour partitions of final entries.
const hourLayout = "2006010215"

// IndexKey is the index key of a record: "<state>.<kv key>" for open
// states, "final.<YYYYMMDDHH of FinishedAt, UTC>.<kv key>" for final ones
// (partitioned by hour so a list or report of a window reads that window).
func IndexKey(j *Job) string {
	st := StateOf(j)
	if st != StateFinal {
		return st + "." + KVKey(j.Key)
	}
	return StateFinal + "." + finishedAt(j).UTC().Format(hourLayout) + "." + KVKey(j.Key)
}

func finishedAt(j *Job) time.Time {
	if !j.FinishedAt.IsZero() {
		return j.FinishedAt
	}
	return j.UpdatedAt
}

// Entry is a job's index entry: what lists, the report and the dashboard
// show without reading the record.
type Entry struct {
	Key     string `json:"key"`
	State   string `json:"state"`
	Status  string `json:"status,omitempty"` // vendor status of the newest attempt
	Outcome string `json:"outcome,omitempty"`
	Model   string `json:"model,omitempty"`
	// Total is the number of original requests; Done how many have an
	// answer so far (succeeded or failed for good, plus the running
	// attempt's completed and failed).
	Total    int             `json:"total"`
	Done     int             `json:"done"`
	Counts   contract.Counts `json:"request_counts"`
	Attempts int             `json:"attempts"`
	BatchID  string          `json:"batch_id,omitempty"` // newest
	// EstTokens estimates the job's input tokens (0 when unknown).
	EstTokens  int64           `json:"est_tokens,omitempty"`
	Usage      *contract.Usage `json:"usage,omitempty"`
	CostUSD    *float64        `json:"cost_usd,omitempty"`
	ErrorCode  string          `json:"error_code,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	UpdatedAt  time.Time       `json:"updated_at"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	// Rev is the record's revision this entry was made from.
	Rev uint64 `json:"rev"`
}

// Duration is how long a final job took from its record's creation to its
// outcome (batch.completed's completed_at - created_at).
func (e *Entry) Duration() time.Duration {
	if e.FinishedAt.IsZero() {
		return 0
	}
	return e.FinishedAt.Sub(e.CreatedAt)
}

// EntryOf summarises a record.
func EntryOf(j *Job) Entry {
	e := Entry{Key: j.Key, State: StateOf(j), Outcome: j.Outcome, Total: j.Total, Attempts: len(j.Attempts),
		Usage: j.Usage, CostUSD: j.CostUSD, CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt, FinishedAt: j.FinishedAt, Rev: j.Revision}
	if j.Error != nil {
		e.ErrorCode = j.Error.Code
	}
	if j.Final {
		e.Counts, e.Done = j.Counts, j.Counts.Completed+j.Counts.Failed
	}
	for i, a := range j.Attempts {
		e.Model = cmp.Or(e.Model, a.Model)
		if i == 0 {
			e.EstTokens = a.EstTokens
		}
		if a.BatchID != "" {
			e.BatchID = a.BatchID
		}
		if j.Final {
			continue
		}
		last := i == len(j.Attempts)-1
		switch {
		case last:
			e.Status, e.Counts = a.Status, a.Counts
			e.Done += a.Counts.Completed + a.Counts.Failed
		case a.State == AttemptFinal:
			// Earlier attempts: their successes are answers; their
			// failures are being retried by a later attempt.
			e.Done += a.Counts.Completed
		}
	}
	if e.Total > 0 {
		e.Done = min(e.Done, e.Total)
	}
	return e
}

// index maintains the batch_index bucket next to the jobs bucket.
type index struct {
	kv    jetstream.KeyValue
	hours sync.Map // hour partitions this process has marked
}

const hourMarker = "hour."

// sync makes the index agree with j, just written at j.Revision: it puts
// j's entry, then removes the entry under the key the record had before
// (unless a later write put it there again). A writer that dies between
// the record and the index leaves a stale open entry, which readers check
// against the record and the rescuer repairs.
//
// prev and cur are what the record looked like before and after the write
// (snapshots; nil when there is no earlier one): an entry the write does
// not change is not rewritten.
func (x *index) sync(ctx context.Context, prev, cur *seen, j *Job) error {
	key := IndexKey(j)
	e := EntryOf(j)
	prevKey := ""
	if prev != nil {
		prevKey = prev.indexKey
		if cur != nil && prevKey == cur.indexKey && prev.entry == cur.entry {
			return nil // the entry would not change
		}
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode index entry %q: %w", j.Key, err)
	}
	if e.State == StateFinal {
		hour := strings.SplitN(key, ".", 3)[1]
		if _, ok := x.hours.Load(hour); !ok {
			if _, err := x.kv.Put(ctx, hourMarker+hour, nil); err != nil {
				return fmt.Errorf("mark index hour %s: %w", hour, err)
			}
			x.hours.Store(hour, true)
		}
	}
	if _, err := x.kv.Put(ctx, key, data); err != nil {
		return fmt.Errorf("put index entry %q: %w", key, err)
	}
	if prevKey == "" || prevKey == key {
		return nil
	}
	return x.drop(ctx, prevKey, j.Revision)
}

// entrySig is what an entry says, without the revision and the time it
// was made from: a write that leaves it unchanged does not rewrite it.
func entrySig(e Entry) string {
	e.Rev, e.UpdatedAt = 0, time.Time{}
	data, _ := json.Marshal(e)
	return string(data)
}

// drop removes the entry at key if it was made from a record revision
// before rev (a later write may have put it back).
func (x *index) drop(ctx context.Context, key string, rev uint64) error {
	old, err := x.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get index entry %q: %w", key, err)
	}
	var e Entry
	if json.Unmarshal(old.Value(), &e) == nil && e.Rev >= rev {
		return nil
	}
	err = x.kv.Delete(ctx, key, jetstream.LastRevision(old.Revision()))
	if err != nil && !IsWrongRevision(err) {
		return fmt.Errorf("delete index entry %q: %w", key, err)
	}
	return nil
}

// IndexedEntry is an index entry with the index key it is stored under.
type IndexedEntry struct {
	Entry
	IndexKey string `json:"-"`
}

// scan reads the entries under a key filter ("queued.>") with one ordered
// consumer of the last value per key.
func (x *index) scan(ctx context.Context, filter string, fn func(IndexedEntry) error) (int, error) {
	w, err := x.kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("read index %s: %w", filter, err)
	}
	defer func() { _ = w.Stop() }()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n, ctx.Err()
		case u, ok := <-w.Updates():
			if !ok {
				return n, fmt.Errorf("read index %s: watcher stopped", filter)
			}
			if u == nil { // initial values done
				return n, nil
			}
			n++
			var e Entry
			if err := json.Unmarshal(u.Value(), &e); err != nil {
				continue // not an entry (a marker); never written by this package under a state
			}
			if err := fn(IndexedEntry{Entry: e, IndexKey: u.Key()}); err != nil {
				return n, err
			}
		}
	}
}

// Scan calls fn with every index entry of state (one of OpenStates, or
// StateFinal for every hour partition at or after since; since is ignored
// for open states). It returns how many entries it read.
func (s *Store) Scan(ctx context.Context, state string, since time.Time, fn func(IndexedEntry) error) (int, error) {
	if state != StateFinal {
		if !slices.Contains(OpenStates, state) {
			return 0, fmt.Errorf("unknown job state %q", state)
		}
		return s.index.scan(ctx, state+".>", fn)
	}
	hours, err := s.FinalHours(ctx, since)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, h := range hours {
		n, err := s.index.scan(ctx, StateFinal+"."+h.UTC().Format(hourLayout)+".>", fn)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// FinalHours lists the hour partitions of final entries at or after since
// (truncated to its hour), newest first.
func (s *Store) FinalHours(ctx context.Context, since time.Time) ([]time.Time, error) {
	var hours []time.Time
	from := since.UTC().Truncate(time.Hour)
	lister, err := s.index.kv.ListKeysFiltered(ctx, hourMarker+"*")
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("list index hours: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for k := range lister.Keys() {
		h, err := time.Parse(hourLayout, strings.TrimPrefix(k, hourMarker))
		if err == nil && !h.Before(from) {
			hours = append(hours, h)
		}
	}
	slices.SortFunc(hours, func(a, b time.Time) int { return b.Compare(a) })
	return hours, nil
}

// ScanHour calls fn with the final entries of one hour partition.
func (s *Store) ScanHour(ctx context.Context, hour time.Time, fn func(IndexedEntry) error) (int, error) {
	return s.index.scan(ctx, StateFinal+"."+hour.UTC().Format(hourLayout)+".>", fn)
}

// Reindex makes the index agree with the record as stored now: it puts the
// record's entry and removes one under a stale key (staleKey, if given,
// and the record's other open states). Readers call it for an entry whose
// record disagrees; the rescuer for every open entry it visits; `batchfleet
// index rebuild` for every record.
func (s *Store) Reindex(ctx context.Context, j *Job, staleKey string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.index.sync(ctx, nil, nil, j); err != nil {
		return err
	}
	key := IndexKey(j)
	for _, st := range OpenStates {
		if k := st + "." + KVKey(j.Key); k != key {
			if err := s.index.drop(ctx, k, j.Revision+1); err != nil {
				return err
			}
		}
	}
	if staleKey != "" && staleKey != key {
		return s.index.drop(ctx, staleKey, j.Revision+1)
	}
	return nil
}

// DropIndex removes an index entry whose record no longer exists.
func (s *Store) DropIndex(ctx context.Context, indexKey string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.index.kv.Delete(ctx, indexKey); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("delete index entry %q: %w", indexKey, err)
	}
	return nil
}

// orphanGrace is how old an open entry without a record must be before it
// is dropped: Create writes the entry just before the record.
const orphanGrace = time.Minute

// EachOpen calls fn once with the record of every unfinished job (every
// job with an open index entry), reading only those: the work the fleet
// has in hand, however long its history. On the way it repairs the index:
// an entry whose record moved on is rewritten, one whose record is gone
// (and older than a minute) is dropped. It stops at the first error of fn.
func (s *Store) EachOpen(ctx context.Context, fn func(*Job) error) error {
	seen := map[string]bool{}
	for _, st := range OpenStates {
		var entries []IndexedEntry
		if _, err := s.index.scan(ctx, st+".>", func(e IndexedEntry) error {
			entries = append(entries, e)
			return nil
		}); err != nil {
			return err
		}
		for _, e := range entries {
			j, err := s.Get(ctx, e.Key)
			if errors.Is(err, ErrNotFound) {
				if s.now().Sub(e.UpdatedAt) > orphanGrace {
					if err := s.DropIndex(ctx, e.IndexKey); err != nil {
						return err
					}
				}
				continue
			}
			if err != nil {
				return err
			}
			if IndexKey(j) != e.IndexKey || entrySig(EntryOf(j)) != entrySig(e.Entry) {
				if err := s.Reindex(ctx, j, e.IndexKey); err != nil {
					return err
				}
			}
			if seen[j.Key] || StateOf(j) == StateFinal {
				continue
			}
			seen[j.Key] = true
			if err := fn(j); err != nil {
				return err
			}
		}
	}
	return nil
}

// Watch sends the job's record each time it is written, starting with the
// current one, until ctx is done (then the channel closes). A job not yet
// created is sent once it is.
func (s *Store) Watch(ctx context.Context, key string) (<-chan *Job, error) {
	w, err := s.jobs.Watch(ctx, KVKey(key), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("watch job %q: %w", key, err)
	}
	out := make(chan *Job, 1)
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case u, ok := <-w.Updates():
				if !ok {
					return
				}
				if u == nil {
					continue
				}
				var j Job
				if json.Unmarshal(u.Value(), &j) != nil {
					continue
				}
				j.Revision = u.Revision()
				select {
				case out <- &j:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
