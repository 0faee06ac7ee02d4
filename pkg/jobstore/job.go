package jobstore

import (
	"time"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Attempt states.
const (
	// AttemptPending: no vendor batch yet; the submitters will create one.
	AttemptPending = "pending"
	// AttemptSubmitted: the vendor batch exists (BatchID) and is being polled.
	AttemptSubmitted = "submitted"
	// AttemptFinal: the vendor batch reached a terminal status and its
	// results were merged.
	AttemptFinal = "final"
	// AttemptAbandoned: the attempt was never submitted (cancelled, or
	// submission was impossible).
	AttemptAbandoned = "abandoned"
)

// Attempt is one vendor batch of a job: the original (N=0) or a retry.
type Attempt struct {
	N   int    `json:"n"`
	Key string `json:"key"` // the vendor idempotency key: the job key or <key>:retry-N
	// State is one of the Attempt* constants.
	State string `json:"state"`
	// Count is the number of requests in this attempt.
	Count int `json:"count"`
	// Model and EstTokens estimate the attempt's enqueued input tokens
	// (for the per-model token budget); unknown for producer input files.
	Model     string `json:"model,omitempty"`
	EstTokens int64  `json:"est_tokens,omitempty"`
	// InputObject names the attempt's JSONL in the batch_inputs object store
	// ("" when the producer gave an input_file_id).
	InputObject string `json:"input_object,omitempty"`
	// InputBucket is the object store bucket of InputObject: "" for
	// batch_inputs, batch_intake for the producer's own input_object.
	InputBucket string `json:"input_bucket,omitempty"`
	// InputFileID is the vendor file the batch was or will be created from.
	InputFileID string `json:"input_file_id,omitempty"`
	// UploadedFile is true when the fleet uploaded InputFileID (and may delete it).
	UploadedFile bool `json:"uploaded_file,omitempty"`
	// CreateStartedAt is set, by compare-and-set, right before a create call
	// whose outcome may be unknown, and cleared when the vendor said it
	// created nothing. While set and no BatchID is recorded, a batch may
	// exist at the vendor: it is searched for before any new create.
	CreateStartedAt time.Time `json:"create_started_at,omitzero"`
	// CreateDeadline is the create call's deadline, fixed before the mark
	// is written (the call cannot run past it). Peers wait for it plus a
	// margin before they search and create again.
	CreateDeadline time.Time `json:"create_deadline,omitzero"`
	// SubmitErrors counts failed submission tries (for the retry budget).
	SubmitErrors int `json:"submit_errors,omitempty"`
	// NotBefore delays the submission of a retry batch (backoff).
	NotBefore time.Time `json:"not_before,omitzero"`
	// Admitted is true while the attempt holds an admission slot.
	Admitted bool `json:"admitted,omitempty"`
	// Requeue marks an attempt that re-runs the whole previous attempt
	// because the vendor refused it for its enqueued token limit; it does
	// not count against MAX_RETRY_ATTEMPTS.
	Requeue bool `json:"requeue,omitempty"`
	// Reason is why a retry attempt was started: the dominant error code
	// of the requests it retries (its batch.retry reason).
	Reason string `json:"reason,omitempty"`
	// TimedOut is set when the poller cancelled the batch at its hard
	// timeout with action "retry": its unrun requests are retryable.
	TimedOut bool `json:"timed_out,omitempty"`

	// PollHandedOff is set once the batch's poll claim is published, so a
	// key republished after the duplicate window never creates a second claim.
	PollHandedOff bool `json:"poll_handed_off,omitempty"`

	// Duplicates are vendor batches of this attempt that the fleet
	// cancelled: created by a create whose answer was lost, found only
	// once they could be told apart (Anthropic: by the job tag in their
	// results). They are listed in batch_ids, never polled or merged.
	Duplicates []string `json:"duplicates,omitempty"`

	BatchID      string          `json:"batch_id,omitempty"`
	Status       string          `json:"status,omitempty"` // last vendor status seen
	SubmittedAt  time.Time       `json:"submitted_at,omitzero"`
	FinishedAt   time.Time       `json:"finished_at,omitzero"`
	OutputFileID string          `json:"output_file_id,omitempty"`
	ErrorFileID  string          `json:"error_file_id,omitempty"`
	Counts       contract.Counts `json:"request_counts"`
	Error        *contract.Error `json:"error,omitempty"`
	// Billed is the usage of the attempt's successful lines by model: what
	// the vendor charges for this batch (set when its results are merged).
	Billed map[string]contract.Usage `json:"billed,omitempty"`
}

// Bucket is the object store bucket of the attempt's InputObject.
func (a *Attempt) Bucket() string {
	if a.InputBucket != "" {
		return a.InputBucket
	}
	return BucketInputs
}

// Job is the durable record of one original idempotency key.
type Job struct {
	Key              string            `json:"key"`
	Endpoint         string            `json:"endpoint"`
	CompletionWindow string            `json:"completion_window"`
	Metadata         map[string]string `json:"metadata"`
	// Provider is the job's vendor: "" or contract.ProviderOpenAI, or
	// contract.ProviderAnthropic.
	Provider string `json:"provider,omitempty"`
	// Total is the number of original requests (0 until known for input_file_id jobs).
	Total    int       `json:"total"`
	Attempts []Attempt `json:"attempts"`

	CancelRequested bool `json:"cancel_requested,omitempty"`

	// Final is set once the outcome is decided; Completed once the
	// batch.completed event is published.
	Final       bool                 `json:"final,omitempty"`
	Outcome     string               `json:"outcome,omitempty"`
	Counts      contract.Counts      `json:"request_counts"`
	Error       *contract.Error      `json:"error,omitempty"`
	Results     *contract.ResultsRef `json:"results,omitempty"`
	Usage       *contract.Usage      `json:"usage,omitempty"`
	CostUSD     *float64             `json:"cost_usd,omitempty"`
	Completed   bool                 `json:"completed,omitempty"`
	CreatedAt   time.Time            `json:"created_at"`
	UpdatedAt   time.Time            `json:"updated_at"`
	FinishedAt  time.Time            `json:"finished_at,omitzero"`
	CompletedAt time.Time            `json:"completed_at,omitzero"`

	// Timeline lists what happened to the job, each event recorded in the
	// write that made it happen (bounded: see Event).
	Timeline []Event `json:"timeline,omitempty"`

	// Revision is the KV revision the record was read at (not stored).
	Revision uint64 `json:"-"`
	seen     *seen
}

// Attempt returns the attempt with the vendor key, or nil.
func (j *Job) Attempt(key string) *Attempt {
	for i := range j.Attempts {
		if j.Attempts[i].Key == key {
			return &j.Attempts[i]
		}
	}
	return nil
}

// Last returns the newest attempt, or nil.
func (j *Job) Last() *Attempt {
	if len(j.Attempts) == 0 {
		return nil
	}
	return &j.Attempts[len(j.Attempts)-1]
}

// Retries counts the retry batches (requeues after a token limit excluded).
func (j *Job) Retries() int {
	n := 0
	for _, a := range j.Attempts[min(1, len(j.Attempts)):] {
		if !a.Requeue {
			n++
		}
	}
	return n
}

// BatchIDs lists the vendor batches of the job in attempt order, each
// attempt's cancelled duplicates before its batch.
func (j *Job) BatchIDs() []string {
	ids := []string{}
	for _, a := range j.Attempts {
		ids = append(ids, a.Duplicates...)
		if a.BatchID != "" {
			ids = append(ids, a.BatchID)
		}
	}
	return ids
}

// submitted counts the attempts that got a vendor batch.
func (j *Job) submitted() int {
	n := 0
	for _, a := range j.Attempts {
		if a.BatchID != "" {
			n++
		}
	}
	return n
}

// CompletedEvent renders the job's batch.completed event.
func (j *Job) CompletedEvent() contract.Completed {
	ev := contract.Completed{
		IdempotencyKey: j.Key,
		Outcome:        j.Outcome,
		BatchIDs:       j.BatchIDs(),
		RequestCounts:  j.Counts,
		Metadata:       j.Metadata,
		Results:        j.Results,
		Error:          j.Error,
		Attempts:       j.submitted(),
		Usage:          j.Usage,
		CostUSD:        j.CostUSD,
		CreatedAt:      j.CreatedAt,
		CompletedAt:    j.FinishedAt,
	}
	if ev.Metadata == nil {
		ev.Metadata = map[string]string{}
	}
	for _, a := range j.Attempts {
		if a.OutputFileID != "" {
			ev.OutputFileIDs = append(ev.OutputFileIDs, a.OutputFileID)
		}
		if a.ErrorFileID != "" {
			ev.ErrorFileIDs = append(ev.ErrorFileIDs, a.ErrorFileID)
		}
	}
	return ev
}

// Poll is a vendor batch's polling state, keyed by batch id.
type Poll struct {
	BatchID string `json:"batch_id"`
	// Provider is the batch's vendor ("" is OpenAI).
	Provider string          `json:"provider,omitempty"`
	JobKey   string          `json:"job_key"`
	Key      string          `json:"key"` // vendor idempotency key
	Attempt  int             `json:"attempt"`
	Status   string          `json:"status"` // last status published ("" before the first)
	Counts   contract.Counts `json:"request_counts"`
	// ChangedAt is when status or counts last moved; Polls counts GETs since.
	ChangedAt    time.Time `json:"changed_at,omitzero"`
	PollsSince   int       `json:"polls_since"`
	ProgressAt   time.Time `json:"progress_at,omitzero"`
	CreatedAt    time.Time `json:"created_at"`
	SoftWarnedAt time.Time `json:"soft_warned_at,omitzero"`
	HardActionAt time.Time `json:"hard_action_at,omitzero"`
	CancelSentAt time.Time `json:"cancel_sent_at,omitzero"`
	// CancelRequested: the job was cancelled; the claim cancels the batch
	// at the vendor until the vendor has taken the cancel (a cancel call
	// that failed, or that raced the batch's creation, is sent again).
	CancelRequested bool `json:"cancel_requested,omitempty"`
	Final           bool `json:"final,omitempty"`
	// Swept: the List sweep has listed this batch (see package poll).
	Swept bool `json:"swept,omitempty"`
	// Traceparent is the W3C trace context of the job's submission, so a
	// change the sweep applies is traced with the job.
	Traceparent string `json:"traceparent,omitempty"`
	Revision    uint64 `json:"-"`
}

// Sweep is the outcome of the last complete List sweep of the vendor's
// batches (see package poll). Pollers read it to decide whether the sweep
// watches a batch for them, so the per-batch poll can fall back to a slow
// safety-net pace; a stale or missing record means every batch is polled
// on its own schedule again.
type Sweep struct {
	// Provider is the vendor whose batches were listed ("" is OpenAI).
	Provider   string    `json:"provider,omitempty"`
	Leader     string    `json:"leader"`
	StartedAt  time.Time `json:"started_at"`  // fleet clock
	FinishedAt time.Time `json:"finished_at"` // fleet clock
	// Heartbeat is refreshed by the leader while its next sweep makes
	// progress (a sweep applying many changes can take longer than its
	// interval); fleet clock, zero before.
	Heartbeat time.Time     `json:"heartbeat,omitzero"`
	Interval  time.Duration `json:"interval_ns"` // the leader's POLL_SWEEP_INTERVAL
	// CoversFrom is the vendor created_at of the oldest batch the sweep
	// listed when it stopped early; every batch created after it was
	// listed. Zero: the sweep reached the end of the list.
	CoversFrom time.Time `json:"covers_from,omitzero"`
	// Ordered is false when the vendor's list was not newest first; then
	// CoversFrom proves nothing and the sweep covers no batch.
	Ordered bool `json:"ordered"`
	Pages   int  `json:"pages"`
	Listed  int  `json:"listed"`
	Active  int  `json:"active"`  // the fleet's non-terminal batches listed
	Changed int  `json:"changed"` // batches whose change the sweep applied
}

// sweepGrace is added to the freshness window of a sweep record: readers
// cache it for a second, and a sweep takes a while.
const sweepGrace = 5 * time.Second

// Fresh reports whether the sweep at s is recent enough to be relied on at
// now: finished, or heard from while the next one progresses, within two
// of its intervals (or of its own duration, when it took longer) plus a
// grace of 5s.
func (s *Sweep) Fresh(now time.Time) bool {
	if s == nil || !s.Ordered || s.Interval <= 0 {
		return false
	}
	period := max(s.Interval, s.FinishedAt.Sub(s.StartedAt))
	last := s.FinishedAt
	if s.Heartbeat.After(last) {
		last = s.Heartbeat
	}
	return now.Before(last.Add(2*period + sweepGrace))
}

// Covers reports whether a batch the fleet recorded at createdAt (fleet
// clock) was listed by the sweep: created after CoversFrom with a minute of
// margin for clock skew and the vendor's one-second created_at.
func (s *Sweep) Covers(createdAt time.Time) bool {
	return s != nil && (s.CoversFrom.IsZero() || createdAt.Add(-time.Minute).After(s.CoversFrom))
}
