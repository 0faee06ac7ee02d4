package submit

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
	"github.com/batchfleet/batchfleet/pkg/tokens"
)

// reconcileSlack widens the vendor search window for clock skew between
// the fleet and the vendor.
const reconcileSlack = 5 * time.Minute

// errFenced: the job record changed under us (another submitter, a cancel):
// stop before the next side effect and look again.
var errFenced = errors.New("submit: job record changed concurrently")

// submit drives the attempt with vendor key of job jobKey to a vendor
// batch. req is the original request (nil for retry batches, whose input is
// in the object store).
func (s *Submitter) submit(ctx context.Context, jobKey, key string, req *contract.Request) (verdict, error) {
	return s.submitJob(ctx, jobKey, key, req, nil)
}

// submitJob is submit with the record just created by accept (nil: read it).
func (s *Submitter) submitJob(ctx context.Context, jobKey, key string, req *contract.Request, fresh *jobstore.Job) (verdict, error) {
	log := s.log.With().Str("idempotency_key", key).Logger()
	job := fresh
	var err error
	if job == nil {
		if job, err = s.d.Store.Get(ctx, jobKey); err != nil {
			return verdict{}, err
		}
	}
	if v, stop, err := s.answerFromRecord(ctx, job, key, log); stop || err != nil {
		return v, err
	}
	lk, err := s.d.Locker.Acquire(ctx, key, s.cfg.LockTTL)
	if err != nil {
		var held *lock.HeldError
		if errors.As(err, &held) {
			log.Debug().Dur("ttl", held.TTL).Msg("key locked by another submitter, later")
			return later(min(held.TTL, s.cfg.LockTTL/6)), nil
		}
		return verdict{}, fmt.Errorf("lock %q: %w", key, err)
	}
	lk.KeepAlive(ctx)
	defer func() {
		if err := lk.Release(context.WithoutCancel(ctx)); err != nil && !errors.Is(err, lock.ErrLockLost) {
			log.Warn().Err(err).Msg("release lock")
		}
	}()
	// Look again under the lock: the previous holder may have finished.
	// A record we created ourselves needs no second look: any change since
	// fails our next compare-and-set (errFenced).
	if fresh == nil {
		if job, err = s.d.Store.Get(ctx, jobKey); err != nil {
			return verdict{}, err
		}
		if v, stop, err := s.answerFromRecord(ctx, job, key, log); stop || err != nil {
			return v, err
		}
	}
	v, err := s.createOnce(ctx, job, key, req, lk, log)
	if errors.Is(err, errFenced) || errors.Is(err, lock.ErrLockLost) {
		log.Warn().Err(err).Msg("lost the key to a concurrent change, looking again")
		return later(s.backoff(0)), nil
	}
	return v, err
}

// answerFromRecord settles messages whose attempt needs no vendor call:
// already submitted, final, abandoned, cancelled or not yet due.
func (s *Submitter) answerFromRecord(ctx context.Context, job *jobstore.Job, key string, log zerolog.Logger) (verdict, bool, error) {
	a := job.Attempt(key)
	switch {
	case job.Final:
		log.Info().Msg("key already final: answered from its record, no new batch")
		return done, true, nil
	case a == nil:
		log.Error().Msg("no attempt recorded for this key, dropped")
		return done, true, nil
	case a.State == jobstore.AttemptSubmitted:
		// Submitted earlier (a redelivery, a republish, or a crash before the
		// ack): make sure the pollers have it, once.
		if err := s.handOffPoll(ctx, job, a); err != nil {
			return verdict{}, true, err
		}
		log.Info().Str("batch_id", a.BatchID).Msg("key already submitted: no new batch")
		return done, true, nil
	case a.State == jobstore.AttemptAbandoned:
		// Recorded abandoned, but the slot release and the hand-off after
		// that write may not have happened: do them again (both are
		// idempotent; the notifier checks the record).
		if err := s.handOffAbandoned(ctx, job.Key, key); err != nil {
			return verdict{}, true, err
		}
		return done, true, nil
	case a.State == jobstore.AttemptFinal:
		return done, true, nil
	case job.CancelRequested:
		return s.abandon(ctx, job.Key, key, contract.Errorf(contract.CodeCancelled, "cancelled before submission"), log)
	}
	if wait := a.NotBefore.Sub(s.d.Now()); wait > 0 {
		return later(wait), true, nil
	}
	return verdict{}, false, nil
}

// handOffPoll publishes the batch's poll claim unless the record says it
// was published: the message id covers redeliveries within the duplicate
// window, the record covers republishes after it.
func (s *Submitter) handOffPoll(ctx context.Context, job *jobstore.Job, a *jobstore.Attempt) error {
	if a.PollHandedOff {
		return nil
	}
	if err := s.handOff(ctx, stream.PollTask{BatchID: a.BatchID, Provider: job.Provider, JobKey: job.Key, Key: a.Key, Attempt: a.N}, a.BatchID+":poll"); err != nil {
		return err
	}
	_, err := s.d.Store.Apply(ctx, job, func(j *jobstore.Job) error {
		at := j.Attempt(a.Key)
		if at == nil || at.PollHandedOff {
			return jobstore.ErrNoChange
		}
		at.PollHandedOff = true
		return nil
	})
	return err
}

// abandon ends an attempt without a vendor batch and hands the job to the
// notifiers, which publish its outcome.
func (s *Submitter) abandon(ctx context.Context, jobKey, key string, cause *contract.Error, log zerolog.Logger) (verdict, bool, error) {
	_, err := s.d.Store.Mutate(ctx, jobKey, func(j *jobstore.Job) error {
		a := j.Attempt(key)
		if a == nil || a.State != jobstore.AttemptPending {
			return jobstore.ErrNoChange
		}
		a.State, a.Error, a.FinishedAt = jobstore.AttemptAbandoned, cause, s.d.Now().UTC()
		return nil
	})
	if err != nil {
		return verdict{}, true, err
	}
	failpoint.Hit("submit/after-abandon-recorded")
	if err := s.handOffAbandoned(ctx, jobKey, key); err != nil {
		return verdict{}, true, err
	}
	log.Warn().Str("code", cause.Code).Str("error", cause.Message).Msg("attempt abandoned without a vendor batch")
	return done, true, nil
}

// handOffAbandoned frees an abandoned attempt's admission slot and hands
// the job to the notifiers (Nats-Msg-Id "<key>:final").
func (s *Submitter) handOffAbandoned(ctx context.Context, jobKey, key string) error {
	if s.d.Admitter != nil {
		if err := s.d.Admitter.Release(ctx, key); err != nil {
			return err
		}
	}
	return s.handOff(ctx, stream.FinalTask{JobKey: jobKey, Key: key}, key+":final")
}

// mutateAttempt applies fn to the attempt under compare-and-set. If the
// attempt is no longer pending, or the revision moved since rev (someone
// else acted), it returns errFenced.
func (s *Submitter) mutateAttempt(ctx context.Context, job *jobstore.Job, key string, fn func(*jobstore.Job, *jobstore.Attempt)) error {
	a := job.Attempt(key)
	if a == nil || a.State != jobstore.AttemptPending {
		return errFenced
	}
	fn(job, a)
	err := s.d.Store.Update(ctx, job)
	if errors.Is(err, jobstore.ErrConflict) {
		return errFenced
	}
	return err
}

// createOnce does, under the lock, what the record says is left: reconcile
// an unknown earlier create, upload the input, create the batch, record it.
func (s *Submitter) createOnce(ctx context.Context, job *jobstore.Job, key string, req *contract.Request, lk *lock.Lock, log zerolog.Logger) (verdict, error) {
	if job.Provider == contract.ProviderAnthropic {
		return s.createAnthropic(ctx, job, key, req, lk, log)
	}
	a := job.Attempt(key)
	if !a.CreateStartedAt.IsZero() {
		if v, resolved, err := s.resolveCreate(ctx, job, key, log); !resolved || err != nil {
			return v, err
		}
		a = job.Attempt(key)
	}
	var pending func(*jobstore.Attempt)
	if a.InputFileID == "" && s.d.Admitter == nil {
		fn, err := s.uploadDeferred(ctx, job, key, req)
		if err != nil {
			return s.uploadError(ctx, job, key, err, log)
		}
		pending = fn
	} else if a.InputFileID == "" {
		if err := s.upload(ctx, job, key, req, lk); err != nil {
			return s.uploadError(ctx, job, key, err, log)
		}
	}
	if v, stop, err := s.admit(ctx, job, key, log); stop || err != nil {
		return v, err
	}
	if s.d.Limiter != nil {
		if err := s.d.Limiter.Wait(ctx); err != nil {
			return verdict{}, fmt.Errorf("create rate limit: %w", err)
		}
	}
	// The fence: the lock must still be ours and the record unchanged.
	if _, err := lk.Check(ctx); err != nil {
		return verdict{}, err
	}
	// The create's deadline is fixed before the mark is written, and the
	// call cannot run past it: a stall in this compare-and-set cannot
	// stretch the window a peer must wait out.
	deadline, v, stop, err := s.markCreate(ctx, job, key, s.cfg.CallTimeout, pending, log)
	if stop || err != nil {
		return v, err
	}
	cctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	a = job.Attempt(key)
	meta := map[string]string{}
	for k, v := range job.Metadata {
		meta[k] = v
	}
	meta[contract.MetaIdempotencyKey] = key
	if a.N > 0 {
		meta[contract.MetaRetryOf] = job.Key
	}
	b, err := s.d.Vendor.Create(cctx, batchapi.CreateParams{
		InputFileID: a.InputFileID, Endpoint: job.Endpoint, CompletionWindow: job.CompletionWindow, Metadata: meta,
	})
	if err != nil {
		return s.vendorError(ctx, job, key, err, log)
	}
	failpoint.Hit("submit/after-create")
	s.d.Metrics.BatchCreated(job.Endpoint)
	log.Info().Ctx(ctx).Str("batch_id", b.ID).Int("requests", a.Count).Msg("vendor batch created")
	return s.recordCreated(ctx, job, key, b, log)
}

// admit takes the attempt's admission slot (active batch cap, enqueued
// token budget) unless it holds one; stop means wait in the stream.
func (s *Submitter) admit(ctx context.Context, job *jobstore.Job, key string, log zerolog.Logger) (verdict, bool, error) {
	a := job.Attempt(key)
	if s.d.Admitter == nil || a.Admitted {
		return verdict{}, false, nil
	}
	ok, wait, err := s.d.Admitter.Admit(ctx, key, a.Model, a.EstTokens)
	if err != nil {
		return verdict{}, true, fmt.Errorf("admission: %w", err)
	}
	if !ok {
		log.Info().Dur("wait", wait).Str("model", a.Model).Int64("est_tokens", a.EstTokens).
			Msg("admission: active batch cap or token budget reached, waiting in the stream")
		s.publishQueued(ctx, job, a, log)
		s.d.Metrics.AdmissionWait()
		return later(wait), true, nil
	}
	if err := s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) { a.Admitted = true }); err != nil {
		return verdict{}, true, err
	}
	return verdict{}, false, nil
}

// resolveCreate settles a create whose outcome is unknown (a mark, no
// batch id): it searches the vendor's batches back to the mark and adopts
// the batch it finds. resolved is true only when a search that succeeded
// after the create's settle time (its fixed deadline plus CreateMargin)
// found nothing: the mark is then cleared and the caller may create. A
// failed search is retried later, never taken as "no batch"; an exhausted
// attempt is given up only after such a search.
func (s *Submitter) resolveCreate(ctx context.Context, job *jobstore.Job, key string, log zerolog.Logger) (verdict, bool, error) {
	a := job.Attempt(key)
	found, err := s.d.Vendor.FindByKey(ctx, key, a.CreateStartedAt.Add(-reconcileSlack))
	if err != nil {
		return s.searchFailed(err, a, log)
	}
	if found != nil {
		log.Warn().Str("batch_id", found.ID).Msg("adopted the vendor batch of an earlier attempt whose outcome was unknown")
		s.d.Metrics.BatchAdopted()
		v, err := s.recordCreated(ctx, job, key, *found, log)
		return v, false, err
	}
	if wait := s.settleAt(a).Sub(s.d.Now()); wait > 0 {
		log.Info().Dur("wait", wait).Msg("an earlier create may still land: waiting out its deadline and margin before searching again")
		return later(wait), false, nil
	}
	if a.SubmitErrors >= s.cfg.MaxTries {
		// Searched after the settle time: the vendor created nothing.
		ce := contract.Errorf(contract.CodeSubmitFailed, "create batch failed %d times; no batch was created", a.SubmitErrors)
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

// markCreate fixes the create's deadline (bound from now) and writes the
// create mark (with pending's change, if any) before the call. stop means
// the call must not be made: the deadline passed while the mark was
// written, and v waits for the search that settles it.
func (s *Submitter) markCreate(ctx context.Context, job *jobstore.Job, key string, bound time.Duration, pending func(*jobstore.Attempt), log zerolog.Logger) (time.Time, verdict, bool, error) {
	markAt := s.d.Now().UTC()
	deadline := markAt.Add(bound)
	if err := s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) {
		if pending != nil {
			pending(a)
		}
		a.CreateStartedAt, a.CreateDeadline = markAt, deadline
	}); err != nil {
		return deadline, verdict{}, true, err
	}
	failpoint.Hit("submit/after-create-mark")
	if !s.d.Now().Before(deadline) {
		// Stalled past the deadline: make no call; the mark is resolved
		// by a search once it has settled.
		log.Warn().Time("deadline", deadline).Msg("create deadline passed before the call: not calling, will search")
		return deadline, later(s.settleAt(job.Attempt(key)).Sub(s.d.Now())), true, nil
	}
	return deadline, verdict{}, false, nil
}

// searchFailed answers a failed search for an unknown create: retried
// later, never taken as "no batch".
func (s *Submitter) searchFailed(err error, a *jobstore.Attempt, log zerolog.Logger) (verdict, bool, error) {
	if errors.Is(err, context.Canceled) {
		return verdict{}, false, err
	}
	wait := s.backoff(min(a.SubmitErrors, 4))
	if ve, ok := batchapi.AsError(err); ok {
		wait = max(wait, ve.RetryAfter)
	}
	s.d.Metrics.SubmitError("search")
	log.Warn().Err(err).Dur("wait", wait).Msg("search for a create whose outcome is unknown failed: no new create until a search succeeds")
	return later(wait), false, nil
}

// settleAt is when an attempt's unknown create can no longer land: its
// fixed deadline plus CreateMargin (for the vendor's own delays and clock
// skew between the fleet's machines).
func (s *Submitter) settleAt(a *jobstore.Attempt) time.Time {
	deadline := a.CreateDeadline
	if deadline.IsZero() {
		deadline = a.CreateStartedAt.Add(s.cfg.CallTimeout)
	}
	return deadline.Add(s.cfg.CreateMargin)
}

// uploadDeferred uploads like upload but returns the record change instead
// of writing it, to be written with CreateStartedAt. A stored input (the
// producer's input_object, or a retry's) is streamed to the vendor, never
// held in memory; inline requests (bounded by the NATS max payload) are
// rendered, stored for retries and uploaded from memory.
func (s *Submitter) uploadDeferred(ctx context.Context, job *jobstore.Job, key string, req *contract.Request) (func(*jobstore.Attempt), error) {
	a := job.Attempt(key)
	var (
		fileID, model string
		tokens        int64
		err           error
	)
	switch {
	case a.InputObject != "":
		var rc io.ReadCloser
		var size int64
		if rc, size, err = s.d.Store.OpenObject(ctx, a.Bucket(), a.InputObject); err != nil {
			return nil, err
		}
		fileID, err = s.d.Vendor.UploadFrom(ctx, key+".jsonl", rc, size)
		_ = rc.Close()
		model, tokens = a.Model, a.EstTokens
	case req != nil && len(req.Requests) > 0:
		var data []byte
		if data, err = req.JSONL(); err != nil {
			return nil, err
		}
		if err = s.d.Store.PutInput(ctx, key, data); err != nil {
			return nil, err
		}
		fileID, err = s.d.Vendor.UploadFrom(ctx, key+".jsonl", bytes.NewReader(data), int64(len(data)))
		model, tokens = estimate(data)
	default:
		return nil, fmt.Errorf("attempt %q has neither an input file nor stored input", key)
	}
	if err != nil {
		return nil, err
	}
	return func(a *jobstore.Attempt) {
		a.InputFileID, a.UploadedFile = fileID, true
		a.Model, a.EstTokens = model, tokens
		if a.InputObject == "" {
			a.InputObject = key
		}
	}, nil
}

// uploadError settles a failed upload: a vendor error by its kind; a
// stored input that is gone (a producer deleted its input_object after
// publishing) ends the attempt, since no later try can succeed; anything
// else (NATS) is retried.
func (s *Submitter) uploadError(ctx context.Context, job *jobstore.Job, key string, err error, log zerolog.Logger) (verdict, error) {
	if _, ok := batchapi.AsError(err); ok {
		return s.vendorError(ctx, job, key, err, log)
	}
	if a := job.Attempt(key); errors.Is(err, jobstore.ErrNotFound) && a.InputObject != "" {
		ce := contract.Errorf(contract.CodeInputNotFound, "input %s/%q is gone: %v", a.Bucket(), a.InputObject, err)
		v, _, err := s.abandon(ctx, job.Key, key, ce, log)
		return v, err
	}
	return verdict{}, err
}

// upload stores the attempt's input (for retries), uploads it to the
// vendor and records the file id (used when admission must see the
// model and token estimate before the create).
func (s *Submitter) upload(ctx context.Context, job *jobstore.Job, key string, req *contract.Request, lk *lock.Lock) error {
	if _, err := lk.Check(ctx); err != nil {
		return err
	}
	record, err := s.uploadDeferred(ctx, job, key, req)
	if err != nil {
		return err
	}
	return s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) { record(a) })
}

// recordCreated records the vendor batch and hands it to the pollers.
func (s *Submitter) recordCreated(ctx context.Context, job *jobstore.Job, key string, b batchapi.Batch, log zerolog.Logger) (verdict, error) {
	rec, err := s.d.Store.Apply(ctx, job, func(j *jobstore.Job) error {
		a := j.Attempt(key)
		if a == nil {
			return fmt.Errorf("attempt %q vanished", key)
		}
		if a.BatchID != "" {
			if a.BatchID != b.ID {
				return fmt.Errorf("attempt %q already has batch %s, vendor returned %s", key, a.BatchID, b.ID)
			}
			return jobstore.ErrNoChange
		}
		a.BatchID, a.Status, a.State = b.ID, b.Status, jobstore.AttemptSubmitted
		a.SubmittedAt = s.d.Now().UTC()
		if a.InputFileID == "" {
			a.InputFileID = b.InputFileID
		}
		return nil
	})
	if err != nil {
		return verdict{}, err
	}
	a := rec.Attempt(key)
	// Record the batch for the pollers before handing it over, so a vendor
	// webhook arriving before the first poll finds it.
	ps := &jobstore.Poll{BatchID: b.ID, Provider: rec.Provider, JobKey: rec.Key, Key: key, Attempt: a.N, CreatedAt: s.d.Now().UTC(),
		CancelRequested: rec.CancelRequested, Traceparent: telemetry.Traceparent(ctx)}
	if err := s.d.Store.PutPoll(ctx, ps); err != nil && !errors.Is(err, jobstore.ErrConflict) {
		return verdict{}, err
	}
	if err := s.handOffPoll(ctx, rec, a); err != nil {
		return verdict{}, err
	}
	if rec.CancelRequested {
		// A cancel arrived while the batch was being created: honour it.
		if _, err := s.cancel(ctx, rec.Provider, b.ID); err != nil {
			log.Warn().Err(err).Str("batch_id", b.ID).Msg("cancel batch created during cancellation (its claim retries)")
		}
	}
	return done, nil
}

// cancel cancels a batch at its provider.
func (s *Submitter) cancel(ctx context.Context, provider, id string) (batchapi.Batch, error) {
	if provider == contract.ProviderAnthropic && s.d.Anthropic != nil {
		return s.d.Anthropic.Cancel(ctx, id)
	}
	return s.d.Vendor.Cancel(ctx, id)
}

// vendorError turns a classified vendor error into a verdict: retry later
// (honouring Retry-After), or end the attempt when it cannot succeed.
func (s *Submitter) vendorError(ctx context.Context, job *jobstore.Job, key string, err error, log zerolog.Logger) (verdict, error) {
	ve, ok := batchapi.AsError(err)
	if !ok {
		return verdict{}, err
	}
	s.d.Metrics.SubmitError(ve.Kind.String())
	a := job.Attempt(key)
	tries := a.SubmitErrors + 1
	if ve.Ambiguous() && !a.CreateStartedAt.IsZero() {
		// The create may have landed: look for it at once (OpenAI: by its
		// metadata; an Anthropic batch can be told only later, see
		// resolveAnthropic). Until a search past the create's settle time
		// finds nothing, the attempt is never given up (a batch may exist)
		// and never created again.
		var found *batchapi.Batch
		var ferr error
		if job.Provider != contract.ProviderAnthropic {
			found, ferr = s.d.Vendor.FindByKey(ctx, key, a.CreateStartedAt.Add(-reconcileSlack))
		}
		if ferr == nil && found != nil {
			log.Warn().Err(err).Str("batch_id", found.ID).Msg("create answered with an error but the batch exists: adopted")
			s.d.Metrics.BatchAdopted()
			return s.recordCreated(ctx, job, key, *found, log)
		}
		if err := s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) { a.SubmitErrors = tries }); err != nil {
			return verdict{}, err
		}
		wait := max(ve.RetryAfter, s.settleAt(a).Sub(s.d.Now()), s.backoff(min(tries-1, 4)))
		log.Warn().Err(err).AnErr("search", ferr).Int("tries", tries).Dur("wait", wait).
			Msg("create outcome unknown: searching the vendor again later before any new create")
		return later(wait), nil
	}
	exhausted := tries >= s.cfg.MaxTries
	if !ve.Retryable() || exhausted {
		code := contract.CodeVendorRejected
		if ve.Retryable() {
			code = contract.CodeSubmitFailed
		}
		ce := contract.Errorf(code, "%s after %d tries: %s", ve.Op, tries, ve.Error())
		v, _, err := s.abandon(ctx, job.Key, key, ce, log)
		return v, err
	}
	if err := s.mutateAttempt(ctx, job, key, func(_ *jobstore.Job, a *jobstore.Attempt) {
		a.SubmitErrors = tries
		if !ve.Ambiguous() {
			// The vendor said no: nothing was created.
			a.CreateStartedAt = time.Time{}
		}
	}); err != nil {
		return verdict{}, err
	}
	wait := max(ve.RetryAfter, s.backoff(tries-1))
	log.Warn().Err(err).Int("tries", tries).Dur("wait", wait).Msg("vendor error, will retry")
	return later(wait), nil
}

// estimate returns the model of a JSONL batch input (the first line's)
// and an estimate of its input tokens for the per-model enqueued token
// budget, as intake makes it: each line's body with that line's model, a
// sample of the lines of OpenAI models tokenized (tokens.Tally).
func estimate(data []byte) (string, int64) {
	model := ""
	var est tokens.Tally
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		var l struct {
			Body json.RawMessage `json:"body"`
		}
		if json.Unmarshal(line, &l) != nil {
			continue
		}
		var b struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(l.Body, &b)
		if model == "" {
			model = b.Model
		}
		est.Add(b.Model, l.Body)
	}
	return model, est.Tokens()
}

// publishQueued reports, once per attempt, that it waits for admission:
// batch.state.queued (a fleet-side status before the vendor's own; no
// batch id yet).
func (s *Submitter) publishQueued(ctx context.Context, job *jobstore.Job, a *jobstore.Attempt, log zerolog.Logger) {
	retryOf := ""
	if a.N > 0 {
		retryOf = job.Key
	}
	ev := contract.State{IdempotencyKey: a.Key, RetryOf: retryOf, To: contract.StatusQueued,
		RequestCounts: contract.Counts{Total: a.Count}, At: s.d.Now().UTC(), Reason: "admission"}
	if _, err := stream.Publish(ctx, s.d.JS, contract.StateSubject(contract.StatusQueued), ev,
		stream.WithMsgID(a.Key+":"+contract.StatusQueued)); err != nil {
		log.Warn().Err(err).Msg("publish queued state")
	}
}
