package submit

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/backoff"
	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// vendor is the part of the vendor API a submitter uses.
type vendor interface {
	UploadFrom(ctx context.Context, name string, r io.Reader, size int64) (string, error)
	Create(ctx context.Context, p batchapi.CreateParams) (batchapi.Batch, error)
	FindByKey(ctx context.Context, key string, since time.Time) (*batchapi.Batch, error)
	Cancel(ctx context.Context, id string) (batchapi.Batch, error)
}

// anthropicVendor is the part of the Anthropic API a submitter uses.
type anthropicVendor interface {
	CreateFrom(ctx context.Context, r io.Reader) (batchapi.Batch, error)
	FindCreated(ctx context.Context, since time.Time, count int) ([]batchapi.Batch, error)
	Results(ctx context.Context, b batchapi.Batch) (io.ReadCloser, error)
	Cancel(ctx context.Context, id string) (batchapi.Batch, error)
}

// locker takes the per-key Redis lock.
type locker interface {
	Acquire(ctx context.Context, key string, ttl time.Duration) (*lock.Lock, error)
}

// limiter paces vendor creates fleet-wide.
type limiter interface {
	Wait(ctx context.Context) error
}

// Admitter caps the vendor batches active at once across the fleet and
// the enqueued tokens per model. Admit returns false (and how long to wait)
// when a cap is reached; it is idempotent per key. nil admits everything.
type Admitter interface {
	Admit(ctx context.Context, key, model string, tokens int64) (bool, time.Duration, error)
	Release(ctx context.Context, key string) error
}

// Deps are a submitter's live collaborators; all but Limiter and Admitter are required.
type Deps struct {
	JS     jetstream.JetStream
	Store  *jobstore.Store
	Vendor vendor
	// Anthropic, if set, runs the jobs of provider "anthropic" (without it
	// they fail provider_unavailable).
	Anthropic anthropicVendor
	Locker    locker
	Limiter   limiter
	Admitter  Admitter
	Metrics   *telemetry.Metrics
	Logger    zerolog.Logger
	Now       func() time.Time
}

// Config tunes a submitter; zero values take the defaults.
type Config struct {
	// Concurrency is the number of submissions in flight (SUBMIT_CONCURRENCY). Defaults to 8.
	Concurrency int
	// LockTTL is the Redis lock lease (SUBMIT_LOCK_TTL). Defaults to 30s.
	LockTTL time.Duration
	// CallTimeout is the vendor call bound (VENDOR_CALL_TIMEOUT); a create
	// whose outcome is unknown may land until it has passed. Defaults to 30s.
	CallTimeout time.Duration
	// CreateMargin is added to a create's deadline before a create whose
	// outcome is unknown is searched for a last time and made again
	// (SUBMIT_CREATE_MARGIN): it covers the vendor finishing a request the
	// client gave up on, and clock skew between machines. Defaults to 2m.
	CreateMargin time.Duration
	// TransferTimeout bounds a create that carries its requests
	// (Anthropic's) when they are over 8 MB (VENDOR_TRANSFER_TIMEOUT).
	// Defaults to 10m.
	TransferTimeout time.Duration
	// MaxTries bounds failed tries before a job ends failed (SUBMIT_MAX_TRIES). Defaults to 8.
	MaxTries int
	// Backoff spaces tries after vendor errors. Defaults to 1s..2m.
	Backoff backoff.Policy
	// StopTimeout bounds a graceful stop (STOP_TIMEOUT). Defaults to 8s.
	StopTimeout time.Duration
	// AckWait of the consumers; the submitter heartbeats every third of it, so
	// only a dead submitter lets it run out: its work is redelivered to a peer
	// within AckWait. Defaults to 20s.
	AckWait time.Duration
	Streams stream.Settings
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	c.Concurrency = cmp.Or(c.Concurrency, 8)
	c.LockTTL = cmp.Or(c.LockTTL, 30*time.Second)
	c.CallTimeout = cmp.Or(c.CallTimeout, 30*time.Second)
	c.MaxTries = cmp.Or(c.MaxTries, 8)
	c.TransferTimeout = cmp.Or(c.TransferTimeout, 10*time.Minute)
	c.CreateMargin = cmp.Or(c.CreateMargin, 2*time.Minute)
	if c.Backoff.Initial == 0 {
		c.Backoff = backoff.Policy{Initial: time.Second, Max: 2 * time.Minute}
	}
	c.Backoff = c.Backoff.WithDefaults()
	c.StopTimeout = cmp.Or(c.StopTimeout, 8*time.Second)
	c.AckWait = cmp.Or(c.AckWait, 20*time.Second)
	return c
}

// Submitter turns requests into vendor batches.
type Submitter struct {
	d   Deps
	cfg Config
	log zerolog.Logger

	mu  sync.Mutex
	rnd *rand.Rand
}

// New validates the dependencies and returns a Submitter.
func New(d Deps, cfg Config) (*Submitter, error) {
	if d.JS == nil || d.Store == nil || d.Vendor == nil || d.Locker == nil {
		return nil, errors.New("submit: JS, Store, Vendor and Locker are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Submitter{
		d: d, cfg: cfg.WithDefaults(),
		log: d.Logger,
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// ConsumerConfig is the durable consumer of batch.requests.
func (s *Submitter) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       stream.ConsumerSubmitters,
		Description:   "submitters: batch requests -> vendor batches",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.cfg.AckWait,
		MaxDeliver:    -1, // never dropped: poison messages are dead-lettered by the handler
		MaxAckPending: 10000,
		FilterSubject: contract.SubjectRequests,
	}
}

// RetryConsumerConfig is the durable consumer of retry submissions.
func (s *Submitter) RetryConsumerConfig() jetstream.ConsumerConfig {
	c := s.ConsumerConfig()
	c.Durable = stream.ConsumerRetrySubmitters
	c.Description = "submitters: retry batches from the notifiers"
	c.FilterSubject = stream.SubjectSubmit
	return c
}

// Run consumes until ctx is done, then stops gracefully.
func (s *Submitter) Run(ctx context.Context) error {
	if err := stream.Ensure(ctx, s.d.JS, s.cfg.Streams, stream.Requests, stream.Work, stream.Events, stream.DLQ); err != nil {
		return err
	}
	reqs, err := stream.EnsureConsumer(ctx, s.d.JS, stream.Requests, s.ConsumerConfig())
	if err != nil {
		return err
	}
	retries, err := stream.EnsureConsumer(ctx, s.d.JS, stream.Work, s.RetryConsumerConfig())
	if err != nil {
		return err
	}
	s.log.Info().Int("concurrency", s.cfg.Concurrency).Msg("submitter running")
	opt := stream.ConsumeOptions{Concurrency: s.cfg.Concurrency, StopTimeout: s.cfg.StopTimeout, Logger: s.log}
	ropt := opt
	ropt.Concurrency = max(1, s.cfg.Concurrency/2)
	g, gctx := errgroup.WithContext(ctx)
	opt.Recreate = stream.Recreate(s.d.JS, s.cfg.Streams, stream.Requests, s.ConsumerConfig())
	ropt.Recreate = stream.Recreate(s.d.JS, s.cfg.Streams, stream.Work, s.RetryConsumerConfig())
	g.Go(func() error { return stream.Consume(gctx, reqs, opt, s.handleRequest) })
	g.Go(func() error { return stream.Consume(gctx, retries, ropt, s.handleRetry) })
	return g.Wait()
}

// verdict is what to do with a message.
type verdict struct {
	ack   bool
	delay time.Duration
}

var done = verdict{ack: true}

func later(d time.Duration) verdict { return verdict{delay: max(d, 100*time.Millisecond)} }

func (s *Submitter) settle(m jetstream.Msg, v verdict, key string) {
	var err error
	if v.ack {
		err = m.DoubleAck(context.Background())
	} else {
		err = m.NakWithDelay(v.delay)
	}
	if err != nil {
		s.log.Warn().Err(err).Str("idempotency_key", key).Msg("settle message")
	}
}

func (s *Submitter) handleRequest(ctx context.Context, m jetstream.Msg) {
	stop := stream.Heartbeat(ctx, m, s.cfg.AckWait/3)
	defer stop()
	req, key, err := contract.Decode(m.Data())
	if err != nil {
		var ce *contract.Error
		if !errors.As(err, &ce) {
			ce = contract.Errorf(contract.CodeInvalidJSON, "%v", err)
		}
		s.settle(m, s.reject(ctx, m, key, ce), key)
		return
	}
	if req.Provider == contract.ProviderAnthropic && s.d.Anthropic == nil {
		// A clear failure, not a job sent to the wrong vendor.
		s.settle(m, s.reject(ctx, m, key, contract.Errorf(contract.CodeProviderUnavailable,
			"provider %q is not configured on this fleet (set ANTHROPIC_API_KEY)", req.Provider)), key)
		return
	}
	var v verdict
	var job *jobstore.Job
	sum, err := s.checkIntake(ctx, &req)
	var ce *contract.Error
	switch {
	case errors.As(err, &ce):
		v := s.reject(ctx, m, key, ce)
		if v.ack && ce.Code != contract.CodeInputNotFound {
			// The job is final: its input goes, as a finished job's does.
			if derr := s.d.Store.DeleteObject(ctx, jobstore.BucketIntake, req.InputObject); derr != nil {
				s.log.Warn().Err(derr).Str("object", req.InputObject).Msg("delete rejected input_object")
			}
		}
		s.settle(m, v, key)
		return
	case err == nil:
		job, err = s.accept(ctx, &req, sum)
	}
	if err == nil {
		v, err = s.submitJob(ctx, req.IdempotencyKey, req.IdempotencyKey, &req, job)
	}
	if err != nil {
		v = s.failure(req.IdempotencyKey, err)
	}
	s.settle(m, v, req.IdempotencyKey)
}

func (s *Submitter) handleRetry(ctx context.Context, m jetstream.Msg) {
	stop := stream.Heartbeat(ctx, m, s.cfg.AckWait/3)
	defer stop()
	var t stream.SubmitTask
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.JobKey == "" || t.Key == "" {
		s.log.Error().Err(err).Bytes("data", m.Data()).Msg("malformed retry submission, dropped")
		_ = m.Term()
		return
	}
	v, err := s.submit(ctx, t.JobKey, t.Key, nil)
	if err != nil {
		v = s.failure(t.Key, err)
	}
	s.settle(m, v, t.Key)
}

// failure logs an infrastructure error (NATS, Redis, KV) once and retries later.
func (s *Submitter) failure(key string, err error) verdict {
	if errors.Is(err, context.Canceled) {
		return later(0)
	}
	s.log.Warn().Err(err).Str("idempotency_key", key).Msg("submission interrupted, will retry")
	return later(s.backoff(0))
}

func (s *Submitter) backoff(attempt int) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.Backoff.Next(attempt, s.rnd)
}

// reject dead-letters an invalid message and, when its key is valid and
// unused, ends the job "failed" with the validation error.
func (s *Submitter) reject(ctx context.Context, m jetstream.Msg, key string, ce *contract.Error) verdict {
	log := s.log.With().Str("idempotency_key", key).Str("code", ce.Code).Logger()
	s.d.Metrics.InvalidRequest(ce.Code)
	if err := stream.DeadLetter(ctx, s.d.JS, contract.SubjectDLQRequests, m, ce); err != nil {
		log.Warn().Err(err).Msg("dead-letter invalid request, will retry")
		return later(s.backoff(0))
	}
	if key == "" {
		log.Warn().Str("error", ce.Message).Msg("invalid request without a usable key: dead-lettered")
		return done
	}
	j := &jobstore.Job{Key: key, Metadata: map[string]string{}, Final: true, Outcome: contract.OutcomeFailed, Error: ce}
	j.FinishedAt = s.d.Now().UTC()
	err := s.d.Store.Create(ctx, j)
	switch {
	case errors.Is(err, jobstore.ErrExists):
		old, gerr := s.d.Store.Get(ctx, key)
		if gerr != nil {
			log.Warn().Err(gerr).Msg("read the record of an invalid request's key, will retry")
			return later(s.backoff(0))
		}
		if !old.Final || old.Completed || len(old.Attempts) > 0 {
			log.Warn().Str("error", ce.Message).Msg("invalid request for a key already in use: dead-lettered, no event")
			return done
		}
		// Our own rejection, recorded before a hand-off that may not have
		// happened: hand it off again (the notifier publishes once).
	case err != nil:
		log.Warn().Err(err).Msg("record invalid request, will retry")
		return later(s.backoff(0))
	}
	failpoint.Hit("submit/after-reject-recorded")
	if err := s.handOff(ctx, stream.FinalTask{JobKey: key}, key+":final"); err != nil {
		log.Warn().Err(err).Msg("hand invalid request to notifiers, will retry")
		return later(s.backoff(0))
	}
	log.Warn().Str("error", ce.Message).Msg("invalid request: dead-lettered, job failed")
	return done
}

// checkIntake validates a request's input_object line by line, streaming
// it from the batch_intake bucket, unless the key is known already (then
// its record answers, and the object may be gone). A missing object or a
// bad line is a *contract.Error (input_not_found, invalid_input,
// duplicate_custom_id); any other error is the store's, to retry.
func (s *Submitter) checkIntake(ctx context.Context, req *contract.Request) (intake.Summary, error) {
	if req.InputObject == "" {
		return intake.Summary{}, nil
	}
	_, err := s.d.Store.Get(ctx, req.IdempotencyKey)
	if !errors.Is(err, jobstore.ErrNotFound) {
		return intake.Summary{}, err // known (nil) or unreadable
	}
	rc, _, err := s.d.Store.OpenObject(ctx, jobstore.BucketIntake, req.InputObject)
	if errors.Is(err, jobstore.ErrNotFound) {
		return intake.Summary{}, contract.Errorf(contract.CodeInputNotFound,
			"input_object %q is not in the %s object store bucket", req.InputObject, jobstore.BucketIntake)
	}
	if err != nil {
		return intake.Summary{}, err
	}
	defer rc.Close()
	sum, err := intake.CheckFor(rc, req.Provider, req.Endpoint)
	if err != nil {
		var ce *contract.Error
		if errors.As(err, &ce) {
			ce.Message = fmt.Sprintf("input_object %q: %s", req.InputObject, ce.Message)
		}
		return sum, err
	}
	return sum, nil
}

// accept records a new job for a valid request; a key already known is
// answered from its record by submit. sum describes a checked
// input_object.
func (s *Submitter) accept(ctx context.Context, req *contract.Request, sum intake.Summary) (*jobstore.Job, error) {
	first := jobstore.Attempt{
		N: 0, Key: req.IdempotencyKey, State: jobstore.AttemptPending,
		Count: len(req.Requests), InputFileID: req.InputFileID,
	}
	if req.InputObject != "" {
		first.Count, first.InputObject, first.InputBucket = sum.Lines, req.InputObject, jobstore.BucketIntake
		first.Model, first.EstTokens = sum.Model, sum.EstTokens
	}
	j := &jobstore.Job{
		Key: req.IdempotencyKey, Endpoint: req.Endpoint, CompletionWindow: req.CompletionWindow,
		Metadata: req.Metadata, Total: first.Count, Attempts: []jobstore.Attempt{first},
	}
	if req.Provider == contract.ProviderAnthropic {
		j.Provider = req.Provider
	}
	if j.Metadata == nil {
		j.Metadata = map[string]string{}
	}
	err := s.d.Store.Create(ctx, j)
	switch {
	case errors.Is(err, jobstore.ErrExists):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return j, nil
}

func (s *Submitter) handOff(ctx context.Context, task any, msgID string) error {
	subject := stream.SubjectFinal
	if _, ok := task.(stream.PollTask); ok {
		subject = stream.SubjectPoll
	}
	_, err := stream.Publish(ctx, s.d.JS, subject, task, stream.WithMsgID(msgID))
	return err
}
