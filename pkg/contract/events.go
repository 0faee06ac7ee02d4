package contract

import "time"

// Outcomes of batch.completed.
const (
	OutcomeSucceeded = "succeeded"
	OutcomePartial   = "partial"
	OutcomeFailed    = "failed"
	OutcomeExpired   = "expired"
	OutcomeCancelled = "cancelled"
)

// Vendor batch statuses (OpenAI's names).
const (
	StatusValidating = "validating"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
	// StatusQueued is the fleet's own status (an extension) of a batch
	// waiting for admission (MAX_ACTIVE_BATCHES or a token budget) before it
	// is created; published once per key on batch.state.queued.
	StatusQueued = "queued"
)

// TerminalStatus reports whether a vendor status is final.
func TerminalStatus(s string) bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Counts are request counts: total = completed + failed once final.
type Counts struct {
	Total     int `json:"total"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
}

// Usage is token usage summed over the successful requests.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
	TotalTokens  int64 `json:"total_tokens"`
}

// ResultsRef says where a job's merged per-request results are kept: a
// JetStream Object Store bucket and object name, one JSONL line per original
// custom_id.
type ResultsRef struct {
	Store  string `json:"store"` // "jetstream-object-store"
	Bucket string `json:"bucket"`
	Object string `json:"object"`
	Lines  int    `json:"lines"`
}

// Completed is the batch.completed event: exactly one per original key.
type Completed struct {
	IdempotencyKey string            `json:"idempotency_key"`
	Outcome        string            `json:"outcome"`
	BatchIDs       []string          `json:"batch_ids"`
	RequestCounts  Counts            `json:"request_counts"`
	Metadata       map[string]string `json:"metadata"`
	Results        *ResultsRef       `json:"results,omitempty"`
	Error          *Error            `json:"error,omitempty"`

	// Extensions (compatible additions to contract v1).
	OutputFileIDs []string  `json:"output_file_ids,omitempty"`
	ErrorFileIDs  []string  `json:"error_file_ids,omitempty"`
	Attempts      int       `json:"attempts"`
	Usage         *Usage    `json:"usage,omitempty"`
	CostUSD       *float64  `json:"cost_usd,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	CompletedAt   time.Time `json:"completed_at"`
}

// Retry is the batch.retry event: one per retry batch started.
type Retry struct {
	IdempotencyKey string `json:"idempotency_key"`
	RetryOf        string `json:"retry_of"`
	FailedCount    int    `json:"failed_count"`
	Attempt        int    `json:"attempt"`
	// Reason is the dominant error code of the failed requests (extension).
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// State is a batch.state.<status> event: one per observed transition.
type State struct {
	IdempotencyKey string    `json:"idempotency_key"`
	RetryOf        string    `json:"retry_of,omitempty"`
	BatchID        string    `json:"batch_id"`
	From           string    `json:"from"`
	To             string    `json:"to"`
	RequestCounts  Counts    `json:"request_counts"`
	At             time.Time `json:"at"`
	// Reason explains fleet-initiated transitions, e.g. "timeout" (extension).
	Reason string `json:"reason,omitempty"`
}

// Progress is a batch.progress event: request counts moved within a status.
type Progress struct {
	IdempotencyKey string    `json:"idempotency_key"`
	BatchID        string    `json:"batch_id"`
	Status         string    `json:"status"`
	RequestCounts  Counts    `json:"request_counts"`
	At             time.Time `json:"at"`
}

// Cancel is a batch.cancel request.
type Cancel struct {
	IdempotencyKey string `json:"idempotency_key"`
}

// Warning kinds.
const (
	WarningSoftTimeout = "soft_timeout"
	WarningHardTimeout = "hard_timeout"
)

// Warning is a batch.warning event: a batch running longer than the soft
// or hard timeout (the hard one names the action taken).
type Warning struct {
	IdempotencyKey string    `json:"idempotency_key"`
	BatchID        string    `json:"batch_id"`
	Kind           string    `json:"kind"`
	Action         string    `json:"action,omitempty"` // hard timeout: cancel, alert or retry
	Status         string    `json:"status"`
	RequestCounts  Counts    `json:"request_counts"`
	AgeSeconds     float64   `json:"age_seconds"`
	At             time.Time `json:"at"`
}
