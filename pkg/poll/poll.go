package poll

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/backoff"
	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// vendor is the part of the vendor API a poller uses.
type vendor interface {
	Get(ctx context.Context, id string) (batchapi.Batch, error)
	Cancel(ctx context.Context, id string) (batchapi.Batch, error)
}

type limiter interface {
	Wait(ctx context.Context) error
}

// locker takes the per-batch polling mutex shared with the vendor webhook
// path, so one batch is never polled by two pollers at the same moment.
type locker interface {
	Acquire(ctx context.Context, key string, ttl time.Duration) (*lock.Lock, error)
}

// Deps are a poller's live collaborators; Limiter is optional.
type Deps struct {
	JS      jetstream.JetStream
	Store   *jobstore.Store
	Vendor  vendor
	Limiter limiter
	// Locker, if set, serialises polls of one batch across the claim and
	// the vendor webhook paths, so two GETs of a batch never overlap (the
	// sweep makes no GET; compare-and-set on the poll state and
	// de-duplicated events keep it consistent with the others).
	Locker locker
	// Leader elects the one sweeper of the fleet; with Lister and
	// Config.SweepInterval it enables the List sweep.
	Leader locker
	Lister lister
	// Anthropic, if set, polls the batches of provider "anthropic" (its
	// client paces itself: ANTHROPIC_RPM) and AnthropicLister sweeps them.
	Anthropic       vendor
	AnthropicLister lister
	Metrics         *telemetry.Metrics
	Logger          zerolog.Logger
	Now             func() time.Time
}

// Config tunes a poller; zero values take the defaults.
type Config struct {
	// InitialInterval is POLL_INITIAL_INTERVAL. Defaults to 5s.
	InitialInterval time.Duration
	// MaxInterval is POLL_MAX_INTERVAL. Defaults to 5m.
	MaxInterval time.Duration
	// Lease is POLL_LEASE, the ack wait of a claim. Defaults to 15s.
	Lease time.Duration
	// Concurrency is POLL_CONCURRENCY. Defaults to 32.
	Concurrency int
	// ProgressEvery throttles batch.progress per batch (PROGRESS_INTERVAL). Defaults to 10s.
	ProgressEvery time.Duration
	// Jitter is the +-fraction applied to poll delays. Defaults to 0.2.
	Jitter float64
	// Strategy is "adaptive" (the default: exponential backoff from
	// InitialInterval to MaxInterval, reset on progress, fast while
	// finalizing) or "fixed" (the seed's simple poller: every
	// InitialInterval), kept as the benchmark baseline (POLL_STRATEGY).
	Strategy string
	// SoftTimeout, HardTimeout and TimeoutAction: the TimeoutManager.
	SoftTimeout   time.Duration
	HardTimeout   time.Duration
	TimeoutAction string
	// SweepInterval is POLL_SWEEP_INTERVAL: one poller of the fleet (the
	// leader) lists the vendor's batches this often, 100 a page, and
	// applies every change it sees; while its sweeps are fresh a batch's
	// own poll only runs every 4 x MaxInterval, as a safety net. Zero: no sweep
	// (there is no default here; the fleet's config has one).
	SweepInterval time.Duration
	StopTimeout   time.Duration
	Streams       stream.Settings
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	c.InitialInterval = cmp.Or(c.InitialInterval, 5*time.Second)
	c.MaxInterval = cmp.Or(c.MaxInterval, 5*time.Minute)
	c.Lease = cmp.Or(c.Lease, 15*time.Second)
	c.Concurrency = cmp.Or(c.Concurrency, 32)
	c.ProgressEvery = cmp.Or(c.ProgressEvery, 10*time.Second)
	c.Jitter = cmp.Or(c.Jitter, 0.2)
	c.Strategy = cmp.Or(c.Strategy, StrategyAdaptive)
	c.SoftTimeout = cmp.Or(c.SoftTimeout, 12*time.Hour)
	c.HardTimeout = cmp.Or(c.HardTimeout, 23*time.Hour)
	c.TimeoutAction = cmp.Or(c.TimeoutAction, "alert")
	c.StopTimeout = cmp.Or(c.StopTimeout, 8*time.Second)
	return c
}

// Poller polls the batches it holds claims on.
type Poller struct {
	d   Deps
	cfg Config
	log zerolog.Logger

	mu  sync.Mutex
	rnd *rand.Rand

	sweepMu sync.Mutex
	sweeps  map[string]*sweepRead // by provider
}

// New validates the dependencies and returns a Poller.
func New(d Deps, cfg Config) (*Poller, error) {
	if d.JS == nil || d.Store == nil || d.Vendor == nil {
		return nil, errors.New("poll: JS, Store and Vendor are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Poller{
		d: d, cfg: cfg.WithDefaults(), sweeps: map[string]*sweepRead{},
		log: d.Logger,
		rnd: newRand(),
	}, nil
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())) }

// ConsumerConfig is the durable consumer of poll claims.
func (p *Poller) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       stream.ConsumerPollers,
		Description:   "pollers: one message per active vendor batch; an unacked delivery is the claim",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.cfg.Lease,
		MaxDeliver:    -1,
		MaxAckPending: -1, // every active batch is pending (naked with a delay) between polls
		FilterSubject: stream.SubjectPoll,
	}
}

// CancelConsumerConfig is the durable consumer of batch.cancel.
func (p *Poller) CancelConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       stream.ConsumerCancels,
		Description:   "pollers: cancellation requests",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.cfg.Lease,
		MaxDeliver:    -1,
		FilterSubject: contract.SubjectCancel,
	}
}

// Run polls until ctx is done, then stops gracefully.
func (p *Poller) Run(ctx context.Context) error {
	if err := stream.Ensure(ctx, p.d.JS, p.cfg.Streams, stream.Work, stream.Events, stream.Cancels); err != nil {
		return err
	}
	claims, err := stream.EnsureConsumer(ctx, p.d.JS, stream.Work, p.ConsumerConfig())
	if err != nil {
		return err
	}
	cancels, err := stream.EnsureConsumer(ctx, p.d.JS, stream.Cancels, p.CancelConsumerConfig())
	if err != nil {
		return err
	}
	p.log.Info().Int("concurrency", p.cfg.Concurrency).Dur("lease", p.cfg.Lease).Msg("poller running")
	opt := stream.ConsumeOptions{Concurrency: p.cfg.Concurrency, StopTimeout: p.cfg.StopTimeout, Logger: p.log}
	copt := opt
	copt.Concurrency = 2
	g, gctx := errgroup.WithContext(ctx)
	opt.Recreate = stream.Recreate(p.d.JS, p.cfg.Streams, stream.Work, p.ConsumerConfig())
	copt.Recreate = stream.Recreate(p.d.JS, p.cfg.Streams, stream.Cancels, p.CancelConsumerConfig())
	g.Go(func() error { return stream.Consume(gctx, claims, opt, p.handleClaim) })
	g.Go(func() error { return stream.Consume(gctx, cancels, copt, p.handleCancel) })
	g.Go(func() error { return p.runSweeper(gctx) })
	return g.Wait()
}

// Polling strategies.
const (
	StrategyAdaptive = "adaptive"
	StrategyFixed    = "fixed"
)

// Delay returns the wait before the next poll: initial * 2^n (n = polls
// since the last change), capped, jittered, and initial while finalizing.
// With the fixed strategy it is always the initial interval.
func (p *Poller) Delay(status string, pollsSinceChange int) time.Duration {
	if p.cfg.Strategy == StrategyFixed {
		return p.cfg.InitialInterval
	}
	n := pollsSinceChange
	if status == contract.StatusFinalizing {
		n = 0
	}
	pol := backoff.Policy{Initial: p.cfg.InitialInterval, Max: p.cfg.MaxInterval, Multiplier: 2, Jitter: p.cfg.Jitter}
	if pol.Jitter <= 0 {
		pol.Jitter = backoff.NoJitter
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return pol.Next(max(n, 0), p.rnd)
}

func (p *Poller) jitter(d time.Duration) time.Duration {
	p.mu.Lock()
	j := 1 + p.cfg.Jitter*(2*p.rnd.Float64()-1)
	p.mu.Unlock()
	return time.Duration(float64(d) * j)
}

// safetyNetFactor spaces the polls of a batch a fresh sweep covers:
// safetyNetFactor x MaxInterval (20m at the defaults), jittered.
const safetyNetFactor = 4

// watchDelay is the delay between the polls of a batch the sweep watches:
// they only catch what a sweep could miss, and run the timeouts, so the
// next one comes no later than the batch's next timeout.
func (p *Poller) watchDelay(st *jobstore.Poll) time.Duration {
	d := p.jitter(safetyNetFactor * p.cfg.MaxInterval)
	var at time.Time
	switch {
	case st.CreatedAt.IsZero():
	case st.SoftWarnedAt.IsZero():
		at = st.CreatedAt.Add(p.cfg.SoftTimeout)
	case st.HardActionAt.IsZero():
		at = st.CreatedAt.Add(p.cfg.HardTimeout)
	}
	if !at.IsZero() {
		d = min(d, max(at.Sub(p.d.Now())+50*time.Millisecond, p.cfg.InitialInterval))
	}
	return d
}

// sweep returns the last sweep record, read at most once a second; nil
// without sweeping or when it cannot be read.
func (p *Poller) sweep(ctx context.Context, provider string) *jobstore.Sweep {
	if p.cfg.SweepInterval <= 0 {
		return nil
	}
	provider = cmp.Or(provider, contract.ProviderOpenAI)
	p.sweepMu.Lock()
	defer p.sweepMu.Unlock()
	r := p.sweeps[provider]
	if r == nil {
		r = &sweepRead{}
		p.sweeps[provider] = r
	}
	if now := time.Now(); now.Sub(r.at) >= time.Second {
		rec, err := p.d.Store.GetSweepOf(ctx, provider)
		if err != nil && !errors.Is(err, jobstore.ErrNotFound) {
			p.log.Debug().Err(err).Msg("read sweep record")
		}
		r.rec, r.at = rec, now
	}
	return r.rec
}

// sweepRead is a provider's sweep record as last read.
type sweepRead struct {
	rec *jobstore.Sweep
	at  time.Time
}

// vendorOf returns the client of a provider's batches ("" is OpenAI).
func (p *Poller) vendorOf(provider string) (vendor, error) {
	if provider == contract.ProviderAnthropic {
		if p.d.Anthropic == nil {
			return nil, fmt.Errorf("poll: %w: %q", batchapi.ErrProviderUnavailable, provider)
		}
		return p.d.Anthropic, nil
	}
	return p.d.Vendor, nil
}

// wait takes one call from a provider's request budget: POLL_RATE for
// OpenAI; the Anthropic client paces its own calls (ANTHROPIC_RPM).
func (p *Poller) wait(ctx context.Context, provider string) error {
	if provider == contract.ProviderAnthropic || p.d.Limiter == nil {
		return nil
	}
	return p.d.Limiter.Wait(ctx)
}

// get reads a batch at its provider, within the provider's budget.
func (p *Poller) get(ctx context.Context, provider, id string) (batchapi.Batch, error) {
	v, err := p.vendorOf(provider)
	if err != nil {
		return batchapi.Batch{}, err
	}
	if err := p.wait(ctx, provider); err != nil {
		return batchapi.Batch{}, err
	}
	return v.Get(ctx, id)
}

// cancelBatch asks a batch's provider to cancel it, within the provider's
// budget.
func (p *Poller) cancelBatch(ctx context.Context, provider, id string) error {
	v, err := p.vendorOf(provider)
	if err != nil {
		return err
	}
	if err := p.wait(ctx, provider); err != nil {
		return err
	}
	_, err = v.Cancel(ctx, id)
	return err
}

// covered reports whether a fresh sweep covers the batch's creation time.
// The batch is watched once the sweep has also listed it (st.Swept): then
// the sweep detects its changes and its own poll is only a safety net.
func (p *Poller) covered(ctx context.Context, st *jobstore.Poll) bool {
	sw := p.sweep(ctx, st.Provider)
	return sw.Fresh(p.d.Now()) && sw.Covers(st.CreatedAt)
}

func (p *Poller) handleClaim(ctx context.Context, m jetstream.Msg) {
	var t stream.PollTask
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.BatchID == "" {
		p.log.Error().Err(err).Bytes("data", m.Data()).Msg("malformed poll claim, dropped")
		_ = m.Term()
		return
	}
	// Hold the claim through every wait and vendor call: InProgress every
	// third of the lease, so only a dead poller lets it lapse (a GET may
	// take VENDOR_CALL_TIMEOUT, longer than POLL_LEASE).
	stop := stream.Heartbeat(ctx, m, p.cfg.Lease/3)
	next, err := p.pollOnce(ctx, m, t)
	stop()
	log := p.log.With().Str("batch_id", t.BatchID).Str("idempotency_key", t.Key).Logger()
	switch {
	case err != nil:
		if !errors.Is(err, context.Canceled) {
			log.Warn().Err(err).Dur("retry_in", next).Msg("poll failed")
		}
		_ = m.NakWithDelay(max(next, p.cfg.InitialInterval))
	case next < 0:
		if err := m.DoubleAck(ctx); err != nil {
			log.Warn().Err(err).Msg("ack final claim")
		}
	default:
		if err := m.NakWithDelay(next); err != nil {
			log.Warn().Err(err).Msg("reschedule poll")
		}
	}
}

// pollOnce polls the batch once and returns the delay before the next poll,
// or -1 once the batch is final and handed to the notifiers. While a fresh
// sweep covers the batch, the first delivery waits for the sweep to list it
// instead of polling; once listed, the sweep detects its changes, and the
// claim only polls (every 4 x MaxInterval) when nothing changed for that
// long, and runs the timeouts on schedule.
func (p *Poller) pollOnce(ctx context.Context, m jetstream.Msg, t stream.PollTask) (time.Duration, error) {
	md, _ := m.Metadata()
	delivered := 1
	if md != nil {
		delivered = int(md.NumDelivered)
	}
	watched := false
	var st *jobstore.Poll
	if p.cfg.SweepInterval > 0 {
		var err error
		if st, err = p.loadPoll(ctx, t); err != nil {
			return p.cfg.InitialInterval, err
		}
		if st.Final {
			return -1, p.handOff(ctx, t)
		}
		if p.covered(ctx, st) {
			switch {
			case !st.Swept && delivered == 1:
				// Give the sweep two rounds to list it before polling.
				return min(2*p.cfg.SweepInterval+time.Second, p.cfg.MaxInterval), nil
			case st.Swept && p.d.Now().Sub(st.ChangedAt) < safetyNetFactor*p.cfg.MaxInterval:
				// The sweep lists it and saw it move recently: no GET.
				view := batchapi.Batch{Status: st.Status, Counts: st.Counts, CreatedAt: st.CreatedAt}
				if err := p.checkTimeouts(ctx, st, t, view); err != nil {
					return p.cfg.InitialInterval, err
				}
				if st.CancelRequested && st.Status != contract.StatusCancelling {
					break // a cancel to (re)send: poll the batch
				}
				return p.watchDelay(st), nil
			}
			watched = st.Swept
		}
	}
	v, err := p.vendorOf(t.Provider)
	if err != nil {
		return p.cfg.MaxInterval, err
	}
	if err := p.wait(ctx, t.Provider); err != nil {
		return 0, err
	}
	unlock, busy, err := p.lockBatch(ctx, t.BatchID)
	if err != nil {
		return p.cfg.InitialInterval, err
	}
	if busy {
		// The webhook path is polling this batch right now: look again soon.
		return p.cfg.InitialInterval, nil
	}
	defer unlock()
	if st == nil || p.d.Locker != nil {
		// (Again) under the mutex: the webhook path cannot move it now.
		if st, err = p.loadPoll(ctx, t); err != nil {
			return p.cfg.InitialInterval, err
		}
		if st.Final {
			return -1, p.handOff(ctx, t)
		}
	}
	p.d.Metrics.PollGet("claim")
	b, err := v.Get(ctx, t.BatchID)
	if err != nil {
		if ve, ok := batchapi.AsError(err); ok {
			return max(ve.RetryAfter, p.Delay("", 1)), err
		}
		return p.cfg.InitialInterval, err
	}
	prev, prevAt, prevStatus := st.Counts, st.ChangedAt, st.Status
	changed, err := p.observe(ctx, st, t, b, delivered)
	if err != nil {
		return p.cfg.InitialInterval, err
	}
	if st.Final {
		return -1, nil
	}
	if err := p.checkTimeouts(ctx, st, t, b); err != nil {
		return p.cfg.InitialInterval, err
	}
	if err := p.checkCancel(ctx, st, t, b); err != nil {
		return p.cfg.InitialInterval, err
	}
	if watched && !st.CancelRequested {
		return p.watchDelay(st), nil
	}
	since := max(delivered-st.PollsSince, 0)
	if changed {
		since = 0
		if prevStatus == b.Status {
			if eta, ok := p.ETA(prev, prevAt, b.Counts, st.ChangedAt); ok {
				return eta, nil
			}
		}
	}
	return p.Delay(b.Status, since), nil
}

// loadPoll reads a batch's poll state, or starts one for a batch whose
// submitter has not recorded it.
func (p *Poller) loadPoll(ctx context.Context, t stream.PollTask) (*jobstore.Poll, error) {
	st, err := p.d.Store.GetPoll(ctx, t.BatchID)
	if errors.Is(err, jobstore.ErrNotFound) {
		return &jobstore.Poll{BatchID: t.BatchID, Provider: t.Provider, JobKey: t.JobKey, Key: t.Key, Attempt: t.Attempt, CreatedAt: p.d.Now().UTC()}, nil
	}
	return st, err
}

// ETA schedules the next poll of a batch whose counts moved within a
// status at its predicted finish: the rate of requests done between two
// polls extrapolated to the remainder, clamped to [initial, max]. A large
// batch making steady progress is then polled a few times, converging on
// its completion, rather than every initial interval. ok is false with the
// fixed strategy or without a usable rate.
func (p *Poller) ETA(prev contract.Counts, prevAt time.Time, cur contract.Counts, now time.Time) (time.Duration, bool) {
	if p.cfg.Strategy == StrategyFixed || prevAt.IsZero() {
		return 0, false
	}
	done0, done1 := prev.Completed+prev.Failed, cur.Completed+cur.Failed
	dt := now.Sub(prevAt)
	if done1 <= done0 || dt <= 0 || cur.Total <= done1 {
		return 0, false
	}
	perReq := float64(dt) / float64(done1-done0)
	eta := time.Duration(perReq * float64(cur.Total-done1))
	return min(max(eta, p.cfg.InitialInterval), p.cfg.MaxInterval), true
}

// observe publishes what changed since the last poll and records it; a
// final batch is handed to the notifiers and recorded final in the same
// write. PollsSince stores the delivery count at the last change, so an
// unchanged poll writes nothing. The write is a compare-and-set: a path
// that applied a change meanwhile makes it fail with ErrConflict.
func (p *Poller) observe(ctx context.Context, st *jobstore.Poll, t stream.PollTask, b batchapi.Batch, delivered int) (bool, error) {
	now := p.d.Now().UTC()
	jobKey, _ := contract.SplitRetryKey(t.Key)
	retryOf := ""
	if jobKey != t.Key {
		retryOf = jobKey
	}
	statusMoved := b.Status != st.Status
	countsMoved := b.Counts != st.Counts
	final := contract.TerminalStatus(b.Status)
	progressed := false
	if !statusMoved && !countsMoved && !final {
		return false, nil
	}
	if statusMoved {
		ev := contract.State{IdempotencyKey: t.Key, RetryOf: retryOf, BatchID: t.BatchID, From: st.Status, To: b.Status, RequestCounts: b.Counts, At: now}
		if _, err := stream.Publish(ctx, p.d.JS, contract.StateSubject(b.Status), ev, stream.WithMsgID(contract.StateMsgID(t.BatchID, b.Status))); err != nil {
			return false, err
		}
		p.log.Info().Ctx(ctx).Str("batch_id", t.BatchID).Str("idempotency_key", t.Key).Str("from", st.Status).Str("to", b.Status).
			Int("completed", b.Counts.Completed).Int("total", b.Counts.Total).Msg("state change")
		p.d.Metrics.Transition(b.Status)
	} else if now.Sub(st.ProgressAt) >= p.cfg.ProgressEvery {
		ev := contract.Progress{IdempotencyKey: t.Key, BatchID: t.BatchID, Status: b.Status, RequestCounts: b.Counts, At: now}
		id := t.BatchID + ":progress:" + itoa(b.Counts.Completed) + ":" + itoa(b.Counts.Failed)
		if _, err := stream.Publish(ctx, p.d.JS, contract.SubjectProgress, ev, stream.WithMsgID(id)); err != nil {
			return false, err
		}
		st.ProgressAt, progressed = now, true
	}
	// (validating is the status the submitter recorded with the batch.)
	if (statusMoved || progressed) && !final && b.Status != contract.StatusValidating {
		// The job record follows the batch (its timeline and index entry
		// show it); the notifiers record the terminal status with the results.
		if err := p.recordStatus(ctx, t, b); err != nil {
			return false, err
		}
	}
	if final {
		if err := p.handOff(ctx, t); err != nil {
			return false, err
		}
		st.Final = true
	}
	moved := statusMoved || countsMoved
	if moved {
		st.Status, st.Counts, st.ChangedAt, st.PollsSince = b.Status, b.Counts, now, delivered
	}
	if err := p.d.Store.PutPoll(ctx, st); err != nil {
		return moved, err
	}
	return moved, nil
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// recordStatus writes a batch's status and counts onto its attempt in the
// job record (a no-op when the record already shows them, or the attempt
// is no longer running).
func (p *Poller) recordStatus(ctx context.Context, t stream.PollTask, b batchapi.Batch) error {
	_, err := p.d.Store.Mutate(ctx, t.JobKey, func(j *jobstore.Job) error {
		a := j.Attempt(t.Key)
		if a == nil || a.State != jobstore.AttemptSubmitted || a.BatchID != t.BatchID || (a.Status == b.Status && a.Counts == b.Counts) {
			return jobstore.ErrNoChange
		}
		a.Status, a.Counts = b.Status, b.Counts
		return nil
	})
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil
	}
	return err
}

func (p *Poller) handOff(ctx context.Context, t stream.PollTask) error {
	_, err := stream.Publish(ctx, p.d.JS, stream.SubjectFinal,
		stream.FinalTask{JobKey: t.JobKey, Key: t.Key, BatchID: t.BatchID}, stream.WithMsgID(t.BatchID+":final"))
	return err
}

// checkTimeouts is the TimeoutManager: a batch older than SoftTimeout gets
// one warning event; older than HardTimeout, one warning and the configured
// action (cancel: cancel the batch, the job ends with what finished; alert:
// nothing more; retry: cancel it and let the notifiers retry the unrun
// requests as a new batch).
func (p *Poller) checkTimeouts(ctx context.Context, st *jobstore.Poll, t stream.PollTask, b batchapi.Batch) error {
	if b.CreatedAt.IsZero() || b.Status == contract.StatusCancelling {
		return nil
	}
	now := p.d.Now().UTC()
	age := now.Sub(b.CreatedAt)
	kind, action := "", ""
	switch {
	case age >= p.cfg.HardTimeout && st.HardActionAt.IsZero():
		kind, action = contract.WarningHardTimeout, p.cfg.TimeoutAction
	case age >= p.cfg.SoftTimeout && st.SoftWarnedAt.IsZero() && age < p.cfg.HardTimeout:
		kind = contract.WarningSoftTimeout
	default:
		return nil
	}
	ev := contract.Warning{IdempotencyKey: t.Key, BatchID: t.BatchID, Kind: kind, Action: action, Status: b.Status,
		RequestCounts: b.Counts, AgeSeconds: age.Seconds(), At: now}
	if _, err := stream.Publish(ctx, p.d.JS, contract.SubjectWarning, ev, stream.WithMsgID(t.BatchID+":"+kind)); err != nil {
		return err
	}
	if _, err := p.d.Store.Mutate(ctx, t.JobKey, func(j *jobstore.Job) error {
		a := j.Attempt(t.Key)
		if a == nil {
			return jobstore.ErrNoChange
		}
		for _, e := range j.Timeline {
			if e.Kind == jobstore.EventWarning && e.BatchID == t.BatchID && e.To == kind {
				return jobstore.ErrNoChange
			}
		}
		c := b.Counts
		j.Note(jobstore.Event{At: now, Kind: jobstore.EventWarning, Attempt: a.N, BatchID: t.BatchID, To: kind,
			Counts: &c, Detail: fmt.Sprintf("batch %s after %s; action %s", b.Status, age.Round(time.Second), cmp.Or(action, "none"))})
		return nil
	}); err != nil && !errors.Is(err, jobstore.ErrNotFound) {
		return err
	}
	log := p.log.With().Str("batch_id", t.BatchID).Str("idempotency_key", t.Key).Dur("age", age).Logger()
	if kind == contract.WarningSoftTimeout {
		log.Warn().Msg("batch past its soft timeout")
		st.SoftWarnedAt = now
		return p.d.Store.PutPoll(ctx, st)
	}
	log.Error().Str("action", action).Msg("batch past its hard timeout")
	if action == "retry" {
		if _, err := p.d.Store.Mutate(ctx, t.JobKey, func(j *jobstore.Job) error {
			a := j.Attempt(t.Key)
			if a == nil || a.TimedOut {
				return jobstore.ErrNoChange
			}
			a.TimedOut = true
			return nil
		}); err != nil {
			return err
		}
	}
	if action == "cancel" || action == "retry" {
		if err := p.cancelBatch(ctx, t.Provider, t.BatchID); err != nil {
			if ve, ok := batchapi.AsError(err); !ok || ve.Retryable() {
				return err
			}
		}
	}
	st.HardActionAt = now
	return p.d.Store.PutPoll(ctx, st)
}

// batchLockTTL is the lease of the per-batch polling mutex.
const batchLockTTL = 5 * time.Second

// lockBatch takes the per-batch polling mutex; busy means another poller
// holds it. Without a Locker it is a no-op.
func (p *Poller) lockBatch(ctx context.Context, batchID string) (func(), bool, error) {
	if p.d.Locker == nil {
		return func() {}, false, nil
	}
	lk, err := p.d.Locker.Acquire(ctx, "poll:"+batchID, batchLockTTL)
	if errors.Is(err, lock.ErrNotAcquired) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, err
	}
	// Renewed while the poll runs: a poller that dies holding it blocks
	// the batch's other paths for at most batchLockTTL.
	lk.KeepAlive(ctx)
	return func() { _ = lk.Release(context.WithoutCancel(ctx)) }, false, nil
}

// ErrUnknownBatch: PollNow was asked about a batch the fleet does not track.
var ErrUnknownBatch = errors.New("poll: unknown batch")

// PollNow polls one batch at once, outside its schedule: the vendor
// webhook path. The batch's claim keeps its schedule and sees the result
// (a final batch is acked at its next delivery). It returns an error
// wrapping ErrUnknownBatch for a batch the fleet does not track.
func (p *Poller) PollNow(ctx context.Context, batchID string) error {
	st, err := p.d.Store.GetPoll(ctx, batchID)
	if errors.Is(err, jobstore.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrUnknownBatch, batchID)
	}
	if err != nil {
		return err
	}
	if st.Final {
		return nil
	}
	t := stream.PollTask{BatchID: batchID, Provider: st.Provider, JobKey: st.JobKey, Key: st.Key, Attempt: st.Attempt}
	for range 20 {
		unlock, busy, err := p.lockBatch(ctx, batchID)
		if err != nil {
			return err
		}
		if busy {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(25 * time.Millisecond):
			}
			continue
		}
		err = p.pollLocked(ctx, t)
		unlock()
		return err
	}
	return errors.New("poll: batch busy")
}

// pollLocked polls one batch under its mutex and applies what it finds.
func (p *Poller) pollLocked(ctx context.Context, t stream.PollTask) error {
	st, err := p.d.Store.GetPoll(ctx, t.BatchID)
	if err != nil {
		return err
	}
	if st.Final {
		return nil
	}
	p.d.Metrics.PollGet("webhook")
	b, err := p.get(ctx, t.Provider, t.BatchID)
	if err != nil {
		return err
	}
	_, err = p.observe(ctx, st, t, b, st.PollsSince)
	return err
}
