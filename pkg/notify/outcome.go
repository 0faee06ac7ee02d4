package notify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// Synthetic per-request error codes for requests a batch ended without
// running (no line in either file).
const (
	codeNotRun    = "batch_expired"   // retryable, as OpenAI's own code
	codeCancelled = "batch_cancelled" // final: the job was cancelled
	codeMissing   = "missing_result"  // the vendor returned no line for it
	codeTimedOut  = "timeout"         // retryable: cancelled at the hard timeout, action retry
	// codeTokenLimit is the vendor's batch error for a full enqueued token
	// limit: the batch is re-queued whole after TokenLimitDelay.
	codeTokenLimit = "token_limit_exceeded"
)

// loadMerged reads the job's merged results so far.
func (n *Notifier) loadMerged(ctx context.Context, key string) (*results.Merged, error) {
	data, err := n.d.Store.Results(ctx, key)
	if errors.Is(err, jobstore.ErrNotFound) {
		return &results.Merged{}, nil
	}
	if err != nil {
		return nil, err
	}
	return results.ReadMerged(bytes.NewReader(data))
}

func (n *Notifier) saveMerged(ctx context.Context, key string, m *results.Merged) (int, error) {
	var buf bytes.Buffer
	if _, err := m.WriteJSONL(&buf); err != nil {
		return 0, fmt.Errorf("encode merged results: %w", err)
	}
	if err := n.d.Store.PutResults(ctx, key, buf.Bytes()); err != nil {
		return 0, err
	}
	return m.Len(), nil
}

// customIDs lists the custom_ids of a JSONL batch input.
func customIDs(data []byte) ([]string, error) {
	var ids []string
	r := bufio.NewReader(bytes.NewReader(data))
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if len(bytes.TrimSpace(b)) > 0 {
			var l struct {
				CustomID string `json:"custom_id"`
			}
			if jerr := json.Unmarshal(b, &l); jerr != nil || l.CustomID == "" {
				return nil, fmt.Errorf("input line %d has no custom_id", line)
			}
			ids = append(ids, l.CustomID)
		}
		if err != nil {
			return ids, nil
		}
	}
}

// attemptInput returns the JSONL input of an attempt: the stored copy, or
// the vendor's input file.
func (n *Notifier) attemptInput(ctx context.Context, a *jobstore.Attempt) ([]byte, error) {
	if a.InputObject != "" {
		return n.d.Store.Input(ctx, a.InputObject)
	}
	if a.InputFileID != "" {
		return n.d.Vendor.ReadFile(ctx, a.InputFileID)
	}
	return nil, fmt.Errorf("attempt %q has no input", a.Key)
}

// collect downloads an ended batch's files, merges them into the job's
// results and records the attempt final.
func (n *Notifier) collect(ctx context.Context, job *jobstore.Job, key string) (*jobstore.Job, error) {
	a := job.Attempt(key)
	b, err := n.d.Vendor.Get(ctx, a.BatchID)
	if err != nil {
		return nil, err
	}
	if !contract.TerminalStatus(b.Status) {
		return nil, fmt.Errorf("batch %s handed over in status %s", b.ID, b.Status)
	}
	if b.Status == contract.StatusFailed && hasCode(b.Errors, codeTokenLimit) {
		// Not a failure of the requests: the vendor's enqueued token limit
		// was full. Nothing ran; the attempt is re-queued whole by decide.
		return n.markFinal(ctx, job, key, b, &contract.Error{Code: codeTokenLimit, Message: b.Errors[0].Message}, nil)
	}
	merged, err := n.loadMerged(ctx, job.Key)
	if err != nil {
		return nil, err
	}
	input, err := n.attemptInput(ctx, a)
	if err != nil {
		return nil, err
	}
	ids, err := customIDs(input)
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(ids))
	for _, fid := range []string{b.OutputFileID, b.ErrorFileID} {
		if fid == "" {
			continue
		}
		data, err := n.d.Vendor.ReadFile(ctx, fid)
		if err != nil {
			return nil, err
		}
		if err := results.Scan(bytes.NewReader(data), func(l results.Line) error {
			seen[l.CustomID] = true
			merged.Add(a.N, l)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("parse file %s of batch %s: %w", fid, b.ID, err)
		}
	}
	// Requests the batch ended without running.
	missing := &results.LineError{Code: codeMissing, Message: "the vendor returned no result for this request"}
	switch b.Status {
	case contract.StatusExpired:
		missing = &results.LineError{Code: codeNotRun, Message: "not run before the batch expired"}
	case contract.StatusCancelled:
		missing = &results.LineError{Code: codeCancelled, Message: "not run: the batch was cancelled"}
		if a.TimedOut {
			missing = &results.LineError{Code: codeTimedOut, Message: "not run before the hard timeout; the batch was cancelled to retry it"}
		}
	case contract.StatusFailed:
		e := contract.Error{Code: contract.CodeBatchFailed, Message: "the vendor failed the batch"}
		if len(b.Errors) > 0 {
			e = b.Errors[0]
		}
		missing = &results.LineError{Code: e.Code, Message: e.Message}
	}
	for _, id := range ids {
		if !seen[id] {
			merged.Add(a.N, results.Line{CustomID: id, Error: missing})
		}
	}
	lines, err := n.saveMerged(ctx, job.Key, merged)
	if err != nil {
		return nil, err
	}
	var failure *contract.Error
	if b.Status == contract.StatusFailed {
		failure = &contract.Error{Code: missing.Code, Message: missing.Message}
	}
	ref := &contract.ResultsRef{Store: "jetstream-object-store", Bucket: jobstore.BucketResults, Object: job.Key, Lines: lines}
	if job, err = n.markFinal(ctx, job, key, b, failure, ref); err != nil {
		return nil, err
	}
	if a.N == 0 && job.Total == 0 {
		if job, err = n.d.Store.Mutate(ctx, job.Key, func(j *jobstore.Job) error {
			if j.Total != 0 {
				return jobstore.ErrNoChange
			}
			j.Total = len(ids)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	n.log.Info().Str("idempotency_key", key).Str("batch_id", b.ID).Str("status", b.Status).
		Int("completed", b.Counts.Completed).Int("failed", b.Counts.Failed).Msg("batch results merged")
	return job, nil
}

func hasCode(errs []contract.Error, code string) bool {
	for _, e := range errs {
		if e.Code == code {
			return true
		}
	}
	return false
}

// markFinal records an attempt final (once) and frees its admission slot.
func (n *Notifier) markFinal(ctx context.Context, job *jobstore.Job, key string, b batchapi.Batch, failure *contract.Error, ref *contract.ResultsRef) (*jobstore.Job, error) {
	now := n.d.Now().UTC()
	admitted := job.Attempt(key).Admitted
	job, err := n.d.Store.Mutate(ctx, job.Key, func(j *jobstore.Job) error {
		a := j.Attempt(key)
		if a.State != jobstore.AttemptSubmitted {
			return jobstore.ErrNoChange
		}
		a.State, a.Status, a.FinishedAt = jobstore.AttemptFinal, b.Status, now
		a.OutputFileID, a.ErrorFileID, a.Counts, a.Error = b.OutputFileID, b.ErrorFileID, b.Counts, failure
		if ref != nil {
			j.Results = ref
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if n.d.Admitter != nil && admitted {
		if err := n.d.Admitter.Release(ctx, key); err != nil {
			n.log.Warn().Err(err).Str("idempotency_key", key).Msg("release admission slot")
		}
	}
	return job, nil
}

// decide starts a retry batch or records the job's outcome.
func (n *Notifier) decide(ctx context.Context, job *jobstore.Job) (*jobstore.Job, error) {
	last := job.Last()
	if last.State == jobstore.AttemptAbandoned && last.N == 0 {
		outcome := contract.OutcomeFailed
		if job.CancelRequested {
			outcome = contract.OutcomeCancelled
		}
		return n.finish(ctx, job, nil, outcome)
	}
	if last.State == jobstore.AttemptFinal && last.Error != nil && last.Error.Code == codeTokenLimit && !job.CancelRequested {
		requeues := len(job.Attempts) - 1 - job.Retries()
		if requeues < n.cfg.MaxRequeues {
			return job, n.requeue(ctx, job, last)
		}
	}
	merged, err := n.loadMerged(ctx, job.Key)
	if err != nil {
		return nil, err
	}
	retryable := merged.Failed(true)
	if len(retryable) > 0 && !job.CancelRequested && job.Retries() < n.cfg.MaxRetryAttempts &&
		last.State == jobstore.AttemptFinal {
		return job, n.startRetry(ctx, job, retryable, dominantReason(merged, retryable))
	}
	completed, failed := merged.Counts()
	outcome := contract.OutcomePartial
	switch {
	case job.CancelRequested:
		outcome = contract.OutcomeCancelled
	case failed == 0 && completed > 0:
		outcome = contract.OutcomeSucceeded
	case last.Status == contract.StatusExpired && len(retryable) > 0:
		outcome = contract.OutcomeExpired
	case completed == 0:
		outcome = contract.OutcomeFailed
	}
	return n.finish(ctx, job, merged, outcome)
}

// startRetry records the next attempt (idempotently: its key is
// deterministic) and hands it to the submitters.
func (n *Notifier) startRetry(ctx context.Context, job *jobstore.Job, ids []string, reason string) error {
	num := len(job.Attempts)
	key := contract.RetryKey(job.Key, num)
	input, err := n.attemptInput(ctx, &job.Attempts[0])
	if err != nil {
		return err
	}
	data, err := selectLines(input, ids)
	if err != nil {
		return err
	}
	if err := n.d.Store.PutInput(ctx, key, data); err != nil {
		return err
	}
	delay := n.cfg.RetryBackoff << min(num-1, 16)
	next := jobstore.Attempt{N: num, Key: key, State: jobstore.AttemptPending, Count: len(ids), InputObject: key}
	return n.startAttempt(ctx, job, next, delay, reason)
}

// requeue starts a new attempt re-running the whole of prev (refused by the
// vendor's enqueued token limit) after TokenLimitDelay, from the same input
// file: the request waits, it is not reported failed.
func (n *Notifier) requeue(ctx context.Context, job *jobstore.Job, prev *jobstore.Attempt) error {
	num := len(job.Attempts)
	next := jobstore.Attempt{
		N: num, Key: contract.RetryKey(job.Key, num), State: jobstore.AttemptPending, Count: prev.Count, Requeue: true,
		InputObject: prev.InputObject, InputFileID: prev.InputFileID, Model: prev.Model, EstTokens: prev.EstTokens,
	}
	return n.startAttempt(ctx, job, next, n.cfg.TokenLimitDelay, codeTokenLimit)
}

// startAttempt records the job's next attempt after delay (once: its key is
// deterministic and the attempt count is checked), hands it to the
// submitters and announces it with batch.retry.
func (n *Notifier) startAttempt(ctx context.Context, job *jobstore.Job, next jobstore.Attempt, delay time.Duration, reason string) error {
	now := n.d.Now().UTC()
	next.NotBefore = now.Add(delay)
	if _, err := n.d.Store.Mutate(ctx, job.Key, func(j *jobstore.Job) error {
		if j.Attempt(next.Key) != nil || len(j.Attempts) != next.N {
			return jobstore.ErrNoChange
		}
		j.Attempts = append(j.Attempts, next)
		return nil
	}); err != nil {
		return err
	}
	if _, err := stream.Publish(ctx, n.d.JS, stream.SubjectSubmit, stream.SubmitTask{JobKey: job.Key, Key: next.Key},
		stream.WithMsgID(next.Key+":submit")); err != nil {
		return err
	}
	ev := contract.Retry{IdempotencyKey: next.Key, RetryOf: job.Key, FailedCount: next.Count, Attempt: next.N, Reason: reason, At: now}
	if _, err := stream.Publish(ctx, n.d.JS, contract.SubjectRetry, ev, stream.WithMsgID(contract.RetryMsgID(next.Key))); err != nil {
		return err
	}
	n.d.Metrics.RetryStarted(reason)
	n.log.Info().Str("idempotency_key", next.Key).Str("retry_of", job.Key).Int("failed_count", next.Count).
		Int("attempt", next.N).Str("reason", reason).Dur("delay", delay).Msg("retry batch started")
	return nil
}

// selectLines keeps the input lines whose custom_id is in ids.
func selectLines(input []byte, ids []string) ([]byte, error) {
	want := make(map[string]bool, len(ids))
	for _, id := range ids {
		want[id] = true
	}
	var out bytes.Buffer
	for _, line := range bytes.Split(input, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var l struct {
			CustomID string `json:"custom_id"`
		}
		if err := json.Unmarshal(line, &l); err != nil {
			return nil, fmt.Errorf("parse input line: %w", err)
		}
		if want[l.CustomID] {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes(), nil
}

// finish records the job's outcome (compare-and-set; once).
func (n *Notifier) finish(ctx context.Context, job *jobstore.Job, merged *results.Merged, outcome string) (*jobstore.Job, error) {
	now := n.d.Now().UTC()
	return n.d.Store.Mutate(ctx, job.Key, func(j *jobstore.Job) error {
		if j.Final {
			return jobstore.ErrNoChange
		}
		j.Final, j.Outcome, j.FinishedAt = true, outcome, now
		if merged != nil {
			completed, failed := merged.Counts()
			// Requests with no result at all (never run) count as failed.
			total := max(j.Total, completed+failed)
			j.Counts = contract.Counts{Total: total, Completed: completed, Failed: total - completed}
			_, u := merged.Usage()
			j.Usage = &contract.Usage{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, TotalTokens: u.TotalTokens}
			if cost, ok := merged.Cost(n.cfg.Prices); ok {
				j.CostUSD = &cost
			}
		} else {
			j.Counts = contract.Counts{Total: j.Total, Failed: j.Total}
		}
		if outcome == contract.OutcomeFailed && j.Error == nil {
			for _, a := range j.Attempts {
				if a.Error != nil {
					j.Error = a.Error
					break
				}
			}
		}
		return nil
	})
}

// publishCompleted publishes the job's one batch.completed, marks it in the
// record, then cleans up after the job.
func (n *Notifier) publishCompleted(ctx context.Context, job *jobstore.Job) error {
	ev := job.CompletedEvent()
	if _, err := stream.Publish(ctx, n.d.JS, contract.SubjectCompleted, ev, stream.WithMsgID(contract.CompletedMsgID(job.Key))); err != nil {
		return err
	}
	now := n.d.Now().UTC()
	job, err := n.d.Store.Mutate(ctx, job.Key, func(j *jobstore.Job) error {
		if j.Completed {
			return jobstore.ErrNoChange
		}
		j.Completed, j.CompletedAt = true, now
		return nil
	})
	if err != nil {
		return err
	}
	n.d.Metrics.JobCompleted(job.Outcome)
	n.log.Info().Str("idempotency_key", job.Key).Str("outcome", job.Outcome).Strs("batch_ids", ev.BatchIDs).
		Int("completed", job.Counts.Completed).Int("failed", job.Counts.Failed).Msg("job completed")
	n.hygiene(ctx, job)
	return nil
}

// Audit is the batch.audit record of a finished job.
type Audit struct {
	IdempotencyKey string          `json:"idempotency_key"`
	Outcome        string          `json:"outcome"`
	BatchIDs       []string        `json:"batch_ids"`
	Attempts       int             `json:"attempts"`
	RequestCounts  contract.Counts `json:"request_counts"`
	Usage          *contract.Usage `json:"usage,omitempty"`
	CostUSD        *float64        `json:"cost_usd,omitempty"`
	DurationMS     int64           `json:"duration_ms"`
	CreatedAt      string          `json:"created_at"`
	FinishedAt     string          `json:"finished_at"`
}

// hygiene publishes the audit record and deletes what the job no longer
// needs: uploaded vendor input files and stored inputs. Failures are
// logged, not retried: they cost storage, not correctness.
func (n *Notifier) hygiene(ctx context.Context, job *jobstore.Job) {
	audit := Audit{
		IdempotencyKey: job.Key, Outcome: job.Outcome, BatchIDs: job.BatchIDs(), Attempts: len(job.Attempts),
		RequestCounts: job.Counts, Usage: job.Usage, CostUSD: job.CostUSD,
		DurationMS: job.FinishedAt.Sub(job.CreatedAt).Milliseconds(),
		CreatedAt:  job.CreatedAt.Format("2006-01-02T15:04:05.000Z07:00"), FinishedAt: job.FinishedAt.Format("2006-01-02T15:04:05.000Z07:00"),
	}
	if _, err := stream.Publish(ctx, n.d.JS, contract.SubjectAudit, audit, stream.WithMsgID(job.Key+":audit")); err != nil {
		n.log.Warn().Err(err).Str("idempotency_key", job.Key).Msg("publish audit record")
	}
	for _, a := range job.Attempts {
		if n.cfg.DeleteInputFiles && a.UploadedFile && a.InputFileID != "" {
			if err := n.d.Vendor.DeleteFile(ctx, a.InputFileID); err != nil {
				n.log.Warn().Err(err).Str("file_id", a.InputFileID).Msg("delete vendor input file")
			}
		}
		if a.InputObject != "" {
			if err := n.d.Store.DeleteInput(ctx, a.InputObject); err != nil {
				n.log.Warn().Err(err).Str("object", a.InputObject).Msg("delete stored input")
			}
		}
	}
}

// dominantReason is the most frequent error code among the failed ids.
func dominantReason(m *results.Merged, ids []string) string {
	count := map[string]int{}
	best := ""
	for _, id := range ids {
		if r, ok := m.Get(id); ok {
			c := r.Line.Reason()
			count[c]++
			if count[c] > count[best] || best == "" {
				best = c
			}
		}
	}
	return best
}
