package notify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/batchfleet/batchfleet/pkg/backoff"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// step is what a job does next once an attempt has ended.
type step int

const (
	stepWait    step = iota // another attempt is under way (or the job is final)
	stepFinish              // record the outcome
	stepRetry               // a retry batch of the retryable failures
	stepRequeue             // the whole last attempt again (vendor token limit)
)

// plan is the decision for a job: a pure function of its record and
// merged results, so it can be made again on a fresh record when a
// compare-and-set finds the record changed.
type plan struct {
	step    step
	outcome string // stepFinish
	noLines bool   // stepFinish: nothing was ever submitted (all requests failed)
	ids     []string
	reason  string
	next    jobstore.Attempt // stepRetry, stepRequeue
	delay   time.Duration
}

// busy reports whether an attempt other than except is pending or submitted.
func busy(j *jobstore.Job, except string) bool {
	for _, a := range j.Attempts {
		if a.Key != except && (a.State == jobstore.AttemptPending || a.State == jobstore.AttemptSubmitted) {
			return true
		}
	}
	return false
}

// plan decides the job's next step. merged may be nil only when the
// decision does not need it (an attempt under way, or nothing submitted).
func (n *Notifier) plan(j *jobstore.Job, merged *results.Merged) plan {
	if j.Final || busy(j, "") {
		return plan{step: stepWait}
	}
	last := j.Last()
	if last.State == jobstore.AttemptAbandoned && last.N == 0 {
		outcome := contract.OutcomeFailed
		if j.CancelRequested {
			outcome = contract.OutcomeCancelled
		}
		return plan{step: stepFinish, outcome: outcome, noLines: true}
	}
	num := len(j.Attempts)
	if last.State == jobstore.AttemptFinal && last.Error != nil && last.Error.Code == codeTokenLimit && !j.CancelRequested {
		if requeues := num - 1 - j.Retries(); requeues < n.cfg.MaxRequeues {
			return plan{step: stepRequeue, reason: codeTokenLimit, delay: n.cfg.TokenLimitDelay, next: jobstore.Attempt{
				N: num, Key: contract.RetryKey(j.Key, num), State: jobstore.AttemptPending, Count: last.Count, Requeue: true,
				InputObject: last.InputObject, InputBucket: last.InputBucket, InputFileID: last.InputFileID,
				Model: last.Model, EstTokens: last.EstTokens,
			}}
		}
	}
	if merged == nil {
		// The record changed under us: the attempt that just ended has
		// its own hand-off, which decides.
		return plan{step: stepWait}
	}
	retryable := merged.Failed(true)
	if len(retryable) > 0 && !j.CancelRequested && j.Retries() < n.cfg.MaxRetryAttempts && last.State == jobstore.AttemptFinal {
		key := contract.RetryKey(j.Key, num)
		return plan{step: stepRetry, ids: retryable, reason: dominantReason(merged, retryable),
			delay: backoff.Policy{Initial: n.cfg.RetryBackoff, Max: maxRetryBackoff, Jitter: backoff.NoJitter}.Next(num-1, nil),
			next: jobstore.Attempt{N: num, Key: key, State: jobstore.AttemptPending, Count: len(retryable),
				InputObject: key, Model: j.Attempts[0].Model}}
	}
	completed, failed := merged.Counts()
	outcome := contract.OutcomePartial
	switch {
	case j.CancelRequested:
		outcome = contract.OutcomeCancelled
	case failed == 0 && completed > 0:
		outcome = contract.OutcomeSucceeded
	case last.Status == contract.StatusExpired && len(retryable) > 0:
		outcome = contract.OutcomeExpired
	case completed == 0:
		outcome = contract.OutcomeFailed
	}
	return plan{step: stepFinish, outcome: outcome}
}

// maxRetryBackoff caps the wait before a retry batch (RETRY_BACKOFF doubled
// per attempt).
const maxRetryBackoff = time.Hour

// needInput stops a record change until the retry input it names is stored.
type needInput struct{ p plan }

func (e *needInput) Error() string { return "retry input not stored yet: " + e.p.next.Key }

// settle records what collect learnt (c, possibly nothing) and the job's
// next step in one compare-and-set, then acts on it: a retry is handed to
// the submitters and announced, an outcome is published. A retry's input
// is stored before the record names it.
func (n *Notifier) settle(ctx context.Context, job *jobstore.Job, c collected) (*jobstore.Job, error) {
	merged := c.merged
	if merged == nil && !busy(job, c.key) {
		merged = &results.Merged{}
		if err := n.readMerged(ctx, job.Key, merged, len(job.Attempts)+1); err != nil {
			return nil, err
		}
	}
	now := n.d.Now().UTC()
	var (
		done     plan
		prepared string
		tokens   int64
	)
	for {
		rec, err := n.d.Store.Apply(ctx, job, func(j *jobstore.Job) error {
			changed := c.record != nil && c.record(j)
			p := n.plan(j, merged)
			done = p
			switch p.step {
			case stepWait:
				if !changed {
					return jobstore.ErrNoChange
				}
				return nil
			case stepRetry:
				if prepared != p.next.Key {
					return &needInput{p}
				}
				p.next.EstTokens = tokens
			}
			n.apply(j, p, merged, now)
			return nil
		})
		var ni *needInput
		if errors.As(err, &ni) {
			if tokens, err = n.writeRetryInput(ctx, job, ni.p.next.Key, ni.p.ids); err != nil {
				return nil, fmt.Errorf("store retry input %s: %w", ni.p.next.Key, err)
			}
			prepared = ni.p.next.Key
			continue
		}
		if err != nil {
			return nil, err
		}
		if c.record != nil {
			failpoint.Hit("notify/after-attempt-final")
		}
		switch done.step {
		case stepRetry, stepRequeue:
			failpoint.Hit("notify/after-retry-recorded")
			return rec, n.handOffAttempt(ctx, rec, done.next.Key, true)
		case stepWait:
			return rec, n.redrive(ctx, rec)
		}
		return rec, nil
	}
}

// apply writes the plan p into the record j.
func (n *Notifier) apply(j *jobstore.Job, p plan, merged *results.Merged, now time.Time) {
	switch p.step {
	case stepRetry, stepRequeue:
		p.next.NotBefore, p.next.Reason = now.Add(p.delay), p.reason
		j.Attempts = append(j.Attempts, p.next)
	case stepFinish:
		j.Final, j.Outcome, j.FinishedAt = true, p.outcome, now
		if p.noLines {
			j.Counts = contract.Counts{Total: j.Total, Failed: j.Total}
		} else {
			completed, failed := merged.Counts()
			// Requests with no result at all (never run) count as failed.
			total := max(j.Total, completed+failed)
			j.Counts = contract.Counts{Total: total, Completed: completed, Failed: total - completed}
			kept, _ := merged.Usage()
			j.Usage = &contract.Usage{InputTokens: kept.InputTokens, OutputTokens: kept.OutputTokens, TotalTokens: kept.TotalTokens}
			if cost, ok := n.cfg.Prices.CostByModel(billed(j)); ok {
				j.CostUSD = &cost
			}
		}
		if p.outcome == contract.OutcomeFailed && j.Error == nil {
			for _, a := range j.Attempts {
				if a.Error != nil {
					j.Error = a.Error
					break
				}
			}
		}
	}
}

// billed sums the usage billed for every attempt of the job, by model.
func billed(j *jobstore.Job) map[string]results.Usage {
	out := map[string]results.Usage{}
	for _, a := range j.Attempts {
		for model, u := range a.Billed {
			out[model] = out[model].Add(results.Usage(u))
		}
	}
	return out
}

// handOffAttempt hands a recorded pending attempt to the submitters and
// announces it with batch.retry. Both publishes carry fixed message ids,
// so doing it again (redrive) is a no-op within the duplicate window, and
// the submitters check the record anyway.
func (n *Notifier) handOffAttempt(ctx context.Context, job *jobstore.Job, key string, first bool) error {
	a := job.Attempt(key)
	if a == nil {
		return fmt.Errorf("attempt %q not recorded", key)
	}
	if _, err := stream.Publish(ctx, n.d.JS, stream.SubjectSubmit, stream.SubmitTask{JobKey: job.Key, Key: key},
		stream.WithMsgID(key+":submit")); err != nil {
		return err
	}
	ev := contract.Retry{IdempotencyKey: key, RetryOf: job.Key, FailedCount: a.Count, Attempt: a.N, Reason: a.Reason,
		At: n.d.Now().UTC()}
	if _, err := stream.Publish(ctx, n.d.JS, contract.SubjectRetry, ev, stream.WithMsgID(contract.RetryMsgID(key))); err != nil {
		return err
	}
	if first {
		n.d.Metrics.RetryStarted(a.Reason)
		n.log.Info().Str("idempotency_key", key).Str("retry_of", job.Key).Int("failed_count", a.Count).
			Int("attempt", a.N).Str("reason", a.Reason).Time("not_before", a.NotBefore).Msg("retry batch started")
	}
	return nil
}

// redrive hands off again the retry attempt a job waits for if it has
// not been submitted yet: the record says it was started, but the
// publishes after that write may have failed.
func (n *Notifier) redrive(ctx context.Context, job *jobstore.Job) error {
	for _, a := range job.Attempts {
		if a.N > 0 && a.State == jobstore.AttemptPending {
			return n.handOffAttempt(ctx, job, a.Key, false)
		}
	}
	return nil
}
