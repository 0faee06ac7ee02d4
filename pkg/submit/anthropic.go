package submit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// vendorClockSkew is how far ahead of the fleet's clock the vendor's may
// run: a candidate created (vendor time) up to this long after the
// create's deadline is still taken for this create's. The search runs
// CreateMargin after the deadline, so any batch in that window is at
// least CreateMargin - vendorClockSkew old: a create that was answered has
// been recorded by then.
const vendorClockSkew = 10 * time.Second

// largeCreate is the request size above which an Anthropic create (which
// carries its requests) is bounded by TransferTimeout, not CallTimeout.
const largeCreate = 8 << 20

// createAnthropic is createOnce for an Anthropic job. The create carries
// the requests, streamed from the stored input with each custom_id
// replaced by "<tag>-<n>" (batchapi.JobTag of the key, n the line): the
// batch has no metadata, and its results are the only place that says
// whose it is.
func (s *Submitter) createAnthropic(ctx context.Context, job *jobstore.Job, key string, req *contract.Request, lk *lock.Lock, log zerolog.Logger) (verdict, error) {
	a := job.Attempt(key)
	if !a.CreateStartedAt.IsZero() {
		if v, resolved, err := s.resolveAnthropic(ctx, job, key, log); !resolved || err != nil {
			return v, err
		}
		a = job.Attempt(key)
	}
	if a.InputObject == "" {
		if err := s.storeInput(ctx, job, key, req, lk); err != nil {
			return s.uploadError(ctx, job, key, err, log)
		}
		a = job.Attempt(key)
	}
	if v, stop, err := s.admit(ctx, job, key, log); stop || err != nil {
		return v, err
	}
	rc, size, err := s.d.Store.OpenObject(ctx, a.Bucket(), a.InputObject)
	if err != nil {
		return s.uploadError(ctx, job, key, err, log)
	}
	defer rc.Close()
	if _, err := lk.Check(ctx); err != nil {
		return verdict{}, err
	}
	bound := s.cfg.CallTimeout
	if size > largeCreate {
		bound = max(bound, s.cfg.TransferTimeout)
	}
	deadline, v, stop, err := s.markCreate(ctx, job, key, bound, nil, log)
	if stop || err != nil {
		return v, err
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	b, err := s.d.Anthropic.CreateFrom(cctx, batchapi.AnthropicRequests(rc, batchapi.JobTag(key)))
	if err != nil {
		if _, ok := batchapi.AsError(err); !ok && ctx.Err() == nil {
			// The input could not be read: the call was cut short before
			// the body ended, so the vendor took nothing; but say so only
			// once a search has settled it, like any lost answer.
			err = &batchapi.Error{Kind: batchapi.Unavailable, Op: "create message batch", Message: err.Error(), Err: err}
		}
		return s.vendorError(ctx, job, key, err, log)
	}
	failpoint.Hit("submit/after-create")
	s.d.Metrics.BatchCreated(job.Endpoint)
	log.Info().Ctx(ctx).Str("batch_id", b.ID).Str("provider", contract.ProviderAnthropic).Int("requests", job.Attempt(key).Count).Msg("vendor batch created")
	return s.recordCreated(ctx, job, key, b, log)
}

// storeInput stores an Anthropic attempt's inline requests as its input
// object (the create streams from it, retries and results read it) with
// the model and token estimate admission needs.
func (s *Submitter) storeInput(ctx context.Context, job *jobstore.Job, key string, req *contract.Request, lk *lock.Lock) error {
	if req == nil || len(req.Requests) == 0 {
		return fmt.Errorf("attempt %q has no stored input", key)
	}
	if _, err := lk.Check(ctx); err != nil {
		return err
	}
	data, err := req.JSONL()
	if err != nil {
		return err
	}
	if err := s.d.Store.PutInput(ctx, key, data); err != nil {
		return err
	}
	model, tokens := estimate(data)
	return s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) {
		a.InputObject, a.Model, a.EstTokens = key, model, tokens
	})
}

// resolveAnthropic settles an Anthropic create whose outcome is unknown.
// An Anthropic batch names no key: the candidates are the batches created
// between the mark (less reconcileSlack) and the create's deadline (plus
// vendorClockSkew) with
// the attempt's request count that no job of the fleet has recorded. It
// waits out the create's settle time first, so every batch a lost create
// made is listed and any batch created by a create that was answered has
// long been recorded by its submitter. Then, per candidate:
//
//   - still running: whose it is cannot be told (its results are not out):
//     it is cancelled at once (an orphan of some lost create answer; its
//     owner, this attempt or another, finds it ended) and looked at again;
//   - ended, the tag in its first result line not this key's: another
//     key's, left alone;
//   - ended with this key's tag after a cancel: a duplicate, recorded in
//     the attempt (listed in batch_ids, never merged);
//   - ended with this key's tag without a cancel: the attempt's batch,
//     adopted.
//
// resolved is true when no candidate is this key's live batch: the mark is
// cleared and the caller creates again.
func (s *Submitter) resolveAnthropic(ctx context.Context, job *jobstore.Job, key string, log zerolog.Logger) (verdict, bool, error) {
	a := job.Attempt(key)
	if wait := s.settleAt(a).Sub(s.d.Now()); wait > 0 {
		log.Info().Dur("wait", wait).Msg("an earlier create may still land: waiting out its deadline and margin before searching")
		return later(wait), false, nil
	}
	deadline := a.CreateDeadline
	if deadline.IsZero() {
		deadline = a.CreateStartedAt.Add(s.cfg.CallTimeout)
	}
	retry := func(err error) (verdict, bool, error) { return s.searchFailed(err, a, log) }
	cands, err := s.d.Anthropic.FindCreated(ctx, a.CreateStartedAt.Add(-reconcileSlack), a.Count)
	if err != nil {
		return retry(err)
	}
	tag := batchapi.JobTag(key)
	running := 0
	var dups []string
	for _, c := range cands {
		if c.CreatedAt.After(deadline.Add(vendorClockSkew)) || contains(a.Duplicates, c.ID) {
			continue
		}
		if _, err := s.d.Store.GetPoll(ctx, c.ID); err == nil {
			continue // a recorded batch: some job's
		} else if !errors.Is(err, jobstore.ErrNotFound) {
			return retry(err)
		}
		if !contract.TerminalStatus(c.Status) {
			running++
			if c.Status != contract.StatusCancelling {
				if _, err := s.d.Anthropic.Cancel(ctx, c.ID); err != nil {
					log.Warn().Err(err).Str("batch_id", c.ID).Msg("cancel an unrecorded batch of a lost create answer (tried again)")
				} else {
					log.Warn().Str("batch_id", c.ID).Msg("cancelled an unrecorded batch of a lost create answer: its results will say whose it was")
				}
			}
			continue
		}
		owner, err := s.anthropicTag(ctx, c)
		if err != nil {
			return retry(err)
		}
		if owner != tag {
			continue
		}
		if c.Status == contract.StatusCancelled {
			dups = append(dups, c.ID)
			continue
		}
		log.Warn().Str("batch_id", c.ID).Msg("adopted the ended vendor batch of an earlier create whose answer was lost")
		s.d.Metrics.BatchAdopted()
		if len(dups) > 0 {
			if err := s.recordDuplicates(ctx, job, key, dups); err != nil {
				return verdict{}, false, err
			}
		}
		v, err := s.recordCreated(ctx, job, key, c, log)
		return v, false, err
	}
	if len(dups) > 0 {
		if err := s.recordDuplicates(ctx, job, key, dups); err != nil {
			return verdict{}, false, err
		}
		log.Warn().Strs("batch_ids", dups).Msg("duplicates of a lost create answer were cancelled: listed in batch_ids, creating again")
	}
	if running > 0 {
		// Cancelled (or cancelling): they end within seconds to minutes.
		return later(max(s.backoff(0), time.Second)), false, nil
	}
	if a.SubmitErrors >= s.cfg.MaxTries {
		ce := contract.Errorf(contract.CodeSubmitFailed, "create message batch failed %d times; no batch of this key runs", a.SubmitErrors)
		v, _, err := s.abandon(ctx, job.Key, key, ce, log)
		return v, false, err
	}
	if err := s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) {
		a.CreateStartedAt, a.CreateDeadline = time.Time{}, time.Time{}
	}); err != nil {
		return verdict{}, false, err
	}
	return verdict{}, true, nil
}

// recordDuplicates adds cancelled duplicate batches to the attempt.
func (s *Submitter) recordDuplicates(ctx context.Context, job *jobstore.Job, key string, ids []string) error {
	return s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) {
		for _, id := range ids {
			if !contains(a.Duplicates, id) {
				a.Duplicates = append(a.Duplicates, id)
			}
		}
	})
}

// anthropicTag reads the job tag of an ended batch's first result line
// ("" when it has none of the fleet's form).
func (s *Submitter) anthropicTag(ctx context.Context, b batchapi.Batch) (string, error) {
	rc, err := s.d.Anthropic.Results(ctx, b)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	line, err := bufio.NewReaderSize(rc, 64<<10).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if len(line) == 0 {
		return "", nil
	}
	l, err := results.ParseLine(line)
	if err != nil {
		return "", nil
	}
	tag, _, _ := batchapi.ParseAnthropicCustomID(l.CustomID)
	return tag, nil
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
