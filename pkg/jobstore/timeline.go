package jobstore

import (
	"fmt"
	"time"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Timeline event kinds.
const (
	EventCreated   = "created"   // the job record was created
	EventSubmitted = "submitted" // a vendor batch was created for an attempt
	EventState     = "state"     // an attempt's vendor status moved (From -> To)
	EventProgress  = "progress"  // an attempt's request counts moved within a status
	EventEnded     = "ended"     // an attempt's batch reached a terminal status and its results were merged
	EventAbandoned = "abandoned" // an attempt was given up before it had a batch
	EventRetry     = "retry"     // a retry batch of the failed requests was started
	EventRequeue   = "requeue"   // the whole attempt was queued again (vendor token limit)
	EventCancel    = "cancel"    // a cancel was requested
	EventWarning   = "warning"   // a soft or hard timeout warning
	EventFinal     = "final"     // the outcome was decided
	EventCompleted = "completed" // batch.completed was published
)

// maxTimeline bounds a record's timeline: past it, the oldest events but
// the first are dropped (progress events go first).
const maxTimeline = 100

// Event is one entry of a job's timeline, recorded in the same
// compare-and-set that made the change it describes.
type Event struct {
	At      time.Time        `json:"at"`
	Kind    string           `json:"kind"`
	Attempt int              `json:"attempt"`
	BatchID string           `json:"batch_id,omitempty"`
	From    string           `json:"from,omitempty"`
	To      string           `json:"to,omitempty"`
	Counts  *contract.Counts `json:"request_counts,omitempty"`
	Detail  string           `json:"detail,omitempty"`
}

// seen is what a record looked like when it was read or last written: the
// base its next write is compared with for the timeline and the index.
type seen struct {
	indexKey  string
	entry     string // signature of the index entry (see entrySig)
	final     bool
	completed bool
	cancel    bool
	attempts  map[string]attemptSeen
}

type attemptSeen struct {
	state, status string
	counts        contract.Counts
}

func snapshot(j *Job) *seen {
	s := &seen{indexKey: IndexKey(j), entry: entrySig(EntryOf(j)), final: j.Final, completed: j.Completed, cancel: j.CancelRequested,
		attempts: make(map[string]attemptSeen, len(j.Attempts))}
	for _, a := range j.Attempts {
		s.attempts[a.Key] = attemptSeen{state: a.State, status: a.Status, counts: a.Counts}
	}
	return s
}

// changes lists the timeline events between what was seen and j.
func changes(prev *seen, j *Job, now time.Time) []Event {
	if prev == nil {
		prev = &seen{}
	}
	var evs []Event
	for i := range j.Attempts {
		a := &j.Attempts[i]
		p, known := prev.attempts[a.Key]
		if !known && a.N > 0 {
			kind, detail := EventRetry, fmt.Sprintf("%d requests", a.Count)
			if a.Requeue {
				kind = EventRequeue
			}
			if a.Reason != "" {
				detail += ", reason " + a.Reason
			}
			evs = append(evs, Event{At: now, Kind: kind, Attempt: a.N, Detail: detail})
		}
		var status []Event
		if a.Status != p.status && a.Status != "" {
			c := a.Counts
			status = append(status, Event{At: now, Kind: EventState, Attempt: a.N, BatchID: a.BatchID, From: p.status, To: a.Status, Counts: &c})
		} else if a.Counts != p.counts && a.State == AttemptSubmitted && known {
			c := a.Counts
			status = append(status, Event{At: now, Kind: EventProgress, Attempt: a.N, BatchID: a.BatchID, To: a.Status, Counts: &c})
		}
		if a.State == p.state {
			evs = append(evs, status...)
			continue
		}
		switch a.State {
		case AttemptSubmitted: // the batch exists, then it has a status
			evs = append(evs, Event{At: now, Kind: EventSubmitted, Attempt: a.N, BatchID: a.BatchID, Detail: fmt.Sprintf("%d requests", a.Count)})
			evs = append(evs, status...)
		default: // the batch's last status, then its end
			evs = append(evs, status...)
		}
		switch a.State {
		case AttemptFinal:
			c := a.Counts
			ev := Event{At: now, Kind: EventEnded, Attempt: a.N, BatchID: a.BatchID, To: a.Status, Counts: &c}
			if a.Error != nil {
				ev.Detail = a.Error.Code + ": " + a.Error.Message
			}
			evs = append(evs, ev)
		case AttemptAbandoned:
			ev := Event{At: now, Kind: EventAbandoned, Attempt: a.N}
			if a.Error != nil {
				ev.Detail = a.Error.Code + ": " + a.Error.Message
			}
			evs = append(evs, ev)
		}
	}
	if j.CancelRequested && !prev.cancel {
		evs = append(evs, Event{At: now, Kind: EventCancel})
	}
	if j.Final && !prev.final {
		ev := Event{At: now, Kind: EventFinal, To: j.Outcome}
		if j.Error != nil {
			ev.Detail = j.Error.Code + ": " + j.Error.Message
		}
		c := j.Counts
		ev.Counts = &c
		evs = append(evs, ev)
	}
	if j.Completed && !prev.completed {
		evs = append(evs, Event{At: now, Kind: EventCompleted, To: j.Outcome})
	}
	return evs
}

// trimTimeline keeps the first event and the newest ones within
// maxTimeline, dropping progress events before any other.
func trimTimeline(tl []Event) []Event {
	if len(tl) <= maxTimeline {
		return tl
	}
	out := make([]Event, 0, len(tl))
	drop := len(tl) - maxTimeline
	for i, e := range tl {
		if drop > 0 && i > 0 && e.Kind == EventProgress {
			drop--
			continue
		}
		out = append(out, e)
	}
	if drop > 0 {
		out = append(out[:1], out[1+drop:]...)
	}
	return out
}

// Note appends an event the record's fields do not show (a timeout
// warning) to the timeline; it is written with the record's next write.
func (j *Job) Note(e Event) {
	j.Timeline = append(j.Timeline, e)
}
