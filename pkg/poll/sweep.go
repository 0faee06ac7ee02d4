package poll

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// lister is the vendor's batch list, newest first, 1..100 per page, with
// at least ID, Status, Counts, Metadata and CreatedAt.
type lister interface {
	ListBrief(ctx context.Context, after string, limit int) ([]batchapi.Batch, bool, error)
}

const (
	// sweepLookback bounds a new leader's first sweep: the 24h completion
	// window plus an hour. Older batches are left to their claims.
	sweepLookback = 25 * time.Hour
	// sweepSlack widens the next sweep's bound below the oldest active
	// batch: created_at has one-second resolution, so batches of one
	// second may come in any order.
	sweepSlack = time.Minute
	// sweepRecheckNew: a terminal batch of the fleet without a poll record
	// yet (its submitter is still writing it) is looked at again by the
	// next sweeps while it is younger than this.
	sweepRecheckNew = 10 * time.Minute
	// sweepLockKey is the Redis lock of the one sweep leader.
	sweepLockKey = "poll-sweeper"
	// sweepPageTries bounds the attempts at one List page.
	sweepPageTries = 4
)

// seenBatch is what the leader last applied (or found current) for a batch.
type seenBatch struct {
	status string
	counts contract.Counts
	gen    uint32
}

// sweeper is the leader's state: what it has seen, and where the next
// sweep may stop.
type sweeper struct {
	p        *Poller
	provider string
	lister   lister
	name     string

	mu    sync.Mutex
	seen  map[string]*seenBatch // by detached id: see remember
	gen   uint32
	bound time.Time // vendor clock; zero before the first sweep

	last     *jobstore.Sweep // the last finished sweep's record, nil before
	lastBeat time.Time

	warned   string // the last warning, repeated at debug level for a while
	warnedAt time.Time
}

// warn logs a sweep-wide problem at warn level when it is new or every
// 5 minutes, and at debug level in between: a vendor that cannot list (or
// lists oldest first) is reported, not shouted every interval.
func (s *sweeper) warn(what string) *zerolog.Event {
	now := time.Now()
	if what != s.warned || now.Sub(s.warnedAt) >= 5*time.Minute {
		s.warned, s.warnedAt = what, now
		return s.p.log.Warn()
	}
	return s.p.log.Debug()
}

// runSweeper competes for the sweep leadership and sweeps while it holds
// it: one sweeper in the fleet, taken over within twice the sweep interval
// (the lock's TTL) when its poller dies.
//
// Each provider has its own sweep, leader and record: OpenAI's batches
// are told to be the fleet's by their metadata; Anthropic's, which carry
// none, by the poll record the fleet keeps for each of its batches.
func (p *Poller) runSweeper(ctx context.Context) error {
	if p.cfg.SweepInterval <= 0 || p.d.Leader == nil {
		return nil
	}
	ttl := max(2*p.cfg.SweepInterval, 5*time.Second)
	var wg sync.WaitGroup
	for provider, l := range map[string]lister{contract.ProviderOpenAI: p.d.Lister, contract.ProviderAnthropic: p.d.AnthropicLister} {
		if l == nil || (provider == contract.ProviderAnthropic && p.d.Anthropic == nil) {
			continue
		}
		key := sweepLockKey
		if provider != contract.ProviderOpenAI {
			key += ":" + provider
		}
		log := p.log.With().Str("provider", provider).Logger()
		wg.Go(func() {
			lock.Lead(ctx, p.d.Leader, key, ttl, p.cfg.SweepInterval, log, func(ctx context.Context, lk *lock.Lock) {
				p.lead(ctx, lk, provider, l)
			})
		})
	}
	wg.Wait()
	return nil
}

// lead sweeps a provider's batches every SweepInterval (back to back when
// a sweep takes longer) until the lock is lost or ctx ends.
func (p *Poller) lead(ctx context.Context, lk *lock.Lock, provider string, l lister) {
	lk.KeepAlive(ctx)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = lk.Release(rctx)
	}()
	host, _ := os.Hostname()
	s := &sweeper{p: p, provider: provider, lister: l, name: host + "/" + strconv.Itoa(os.Getpid()), seen: map[string]*seenBatch{}}
	if rec, err := p.d.Store.GetSweepOf(ctx, provider); err == nil {
		s.last = rec // a predecessor's: kept alive while the first sweep runs
	}
	p.log.Info().Dur("interval", p.cfg.SweepInterval).Msg("sweep leader: listing the vendor's batches")
	for {
		began := time.Now()
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-lk.Lost():
				cancel()
			case <-sctx.Done():
			}
		}()
		active, wait, err := s.sweep(sctx)
		stopped := sctx.Err() != nil // shut down or leadership lost: not a failed sweep
		cancel()
		if err == nil || !stopped {
			p.d.Metrics.Swept(provider, err, active, p.d.Now())
		}
		if err != nil && ctx.Err() == nil {
			s.warn(err.Error()).Err(err).Msg("sweep failed: the claims poll each batch until the next complete sweep")
		}
		wait = max(wait, p.cfg.SweepInterval-time.Since(began))
		select {
		case <-ctx.Done():
			return
		case <-lk.Lost():
			p.log.Warn().Err(lk.Err()).Msg("sweep leadership lost")
			return
		case <-time.After(wait):
		}
	}
}

// sweep lists the vendor's batches newest first down to the bound, applies
// every change of the fleet's batches (state events, the hand-off of final
// ones) and records the sweep. It returns the wait the vendor asked for, if
// any, and how many active batches of the fleet it listed.
func (s *sweeper) sweep(ctx context.Context) (int, time.Duration, error) {
	p := s.p
	s.gen++
	started := p.d.Now().UTC()
	bound := s.bound
	if bound.IsZero() {
		bound = started.Add(-sweepLookback)
	}
	rec := jobstore.Sweep{Provider: s.provider, Leader: s.name, StartedAt: started, Interval: p.cfg.SweepInterval, Ordered: true}

	var (
		failMu       sync.Mutex
		oldestFailed time.Time
		changed      int
	)
	work := make(chan batchapi.Batch)
	var g errgroup.Group
	for range max(min(p.cfg.Concurrency, 16), 1) {
		g.Go(func() error {
			for b := range work {
				ok := s.apply(ctx, b)
				failMu.Lock()
				if ok {
					changed++
				} else if oldestFailed.IsZero() || b.CreatedAt.Before(oldestFailed) {
					oldestFailed = b.CreatedAt
				}
				failMu.Unlock()
			}
			return nil
		})
	}

	var (
		after, last       string
		lastAt, newest    time.Time
		oldestActive      time.Time
		wait              time.Duration
		err               error
		reachedEnd, cover bool
	)
	for ctx.Err() == nil {
		var page []batchapi.Batch
		var more bool
		page, more, wait, err = s.page(ctx, after)
		if err != nil {
			break
		}
		rec.Pages++
		s.heartbeat(ctx)
		for _, b := range page {
			rec.Listed++
			if !lastAt.IsZero() && b.CreatedAt.After(lastAt) {
				rec.Ordered = false
			}
			lastAt, last = b.CreatedAt, b.ID
			if b.CreatedAt.After(newest) {
				newest = b.CreatedAt
			}
			if s.provider == contract.ProviderOpenAI && b.Metadata[contract.MetaIdempotencyKey] == "" {
				continue // not a batch of the fleet
			}
			if !contract.TerminalStatus(b.Status) {
				rec.Active++
				if oldestActive.IsZero() || b.CreatedAt.Before(oldestActive) {
					oldestActive = b.CreatedAt
				}
			}
			if s.unchanged(b) {
				continue
			}
			select {
			case work <- detach(b):
			case <-ctx.Done():
			}
		}
		if !more || len(page) == 0 {
			reachedEnd = true
			break
		}
		if lastAt.Before(bound) {
			cover = true
			break
		}
		after = last
	}
	close(work)
	_ = g.Wait()
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		return 0, wait, err
	}

	// The next sweep stops below the oldest batch that may still change:
	// the oldest active one or the oldest whose change was not applied.
	next := oldestActive
	if !oldestFailed.IsZero() && (next.IsZero() || oldestFailed.Before(next)) {
		next = oldestFailed
	}
	if next.IsZero() {
		next = newest
	}
	if !next.IsZero() {
		s.bound = next.Add(-sweepSlack)
	}
	s.prune()

	rec.Changed = changed
	rec.FinishedAt = p.d.Now().UTC()
	switch {
	case reachedEnd:
		rec.CoversFrom = time.Time{}
	case cover:
		rec.CoversFrom = lastAt
	}
	if !rec.Ordered {
		s.warn("unordered").Msg("the vendor's batch list is not newest first: the sweep detects changes but the claims keep polling every batch")
	}
	if err := p.d.Store.PutSweep(ctx, &rec); err != nil {
		return 0, 0, err
	}
	s.last, s.lastBeat = &rec, rec.FinishedAt
	p.log.Debug().Int("pages", rec.Pages).Int("listed", rec.Listed).Int("active", rec.Active).Int("changed", changed).
		Dur("took", rec.FinishedAt.Sub(started)).Msg("sweep done")
	return rec.Active, 0, nil
}

// heartbeat refreshes the last record at most once an interval while a
// sweep progresses, so claims keep relying on the sweep during a long one.
func (s *sweeper) heartbeat(ctx context.Context) {
	now := s.p.d.Now().UTC()
	if s.last == nil || now.Sub(s.lastBeat) < s.p.cfg.SweepInterval {
		return
	}
	s.lastBeat = now
	beat := *s.last
	beat.Heartbeat = now
	if err := s.p.d.Store.PutSweep(ctx, &beat); err != nil {
		s.p.log.Debug().Err(err).Msg("sweep heartbeat")
	}
}

// page fetches one List page, retrying rate limits and outages a few
// times; the returned wait is the vendor's Retry-After of the last failure.
func (s *sweeper) page(ctx context.Context, after string) ([]batchapi.Batch, bool, time.Duration, error) {
	p := s.p
	var wait time.Duration
	for try := 1; ; try++ {
		if err := p.wait(ctx, s.provider); err != nil {
			return nil, false, 0, err
		}
		p.d.Metrics.PollGet("sweep")
		page, more, err := s.lister.ListBrief(ctx, after, 100)
		if err == nil {
			return page, more, 0, nil
		}
		ve, ok := batchapi.AsError(err)
		if !ok || !ve.Retryable() || try >= sweepPageTries {
			if ok {
				wait = ve.RetryAfter
			}
			return nil, false, wait, err
		}
		wait = max(ve.RetryAfter, p.Delay("", try))
		select {
		case <-ctx.Done():
			return nil, false, 0, ctx.Err()
		case <-time.After(min(wait, p.cfg.SweepInterval)):
		}
	}
}

// unchanged reports whether b is as the leader last saw it, and marks it
// seen by this sweep.
func (s *sweeper) unchanged(b batchapi.Batch) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Updated in place: assigning s.seen[b.ID] would store b.ID, a string
	// sharing the List page's buffer, as the key and keep the page alive.
	prev := s.seen[b.ID]
	if prev != nil && prev.status == b.Status && prev.counts == b.Counts {
		prev.gen = s.gen
		return true
	}
	return false
}

// remember records b, a detached batch (status already interned), as
// applied.
func (s *sweeper) remember(b batchapi.Batch) {
	v := &seenBatch{status: b.Status, counts: b.Counts}
	s.mu.Lock()
	v.gen = s.gen
	s.seen[b.ID] = v // b is detached
	s.mu.Unlock()
}

// detach keeps what applying a listed batch needs, in memory of its own:
// a lister's decoded strings may share the page's buffer (the SDK's full
// decoding does), which would otherwise stay alive while the workers and
// the seen map hold them.
func detach(b batchapi.Batch) batchapi.Batch {
	return batchapi.Batch{ID: strings.Clone(b.ID), Status: internStatus(b.Status), Counts: b.Counts, CreatedAt: b.CreatedAt}
}

func internStatus(st string) string {
	for _, known := range [...]string{contract.StatusValidating, contract.StatusInProgress, contract.StatusFinalizing,
		contract.StatusCompleted, contract.StatusFailed, contract.StatusExpired, contract.StatusCancelling, contract.StatusCancelled} {
		if st == known {
			return known
		}
	}
	return strings.Clone(st)
}

// prune forgets the batches this sweep did not list: they are below the
// bound, where nothing changes any more.
func (s *sweeper) prune() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, v := range s.seen {
		if v.gen != s.gen {
			delete(s.seen, id)
		}
	}
}

// apply brings a listed batch's change into the fleet, like a poll that
// needed no GET: one read, the events, one write. False means it was not
// applied and the next sweep looks again.
func (s *sweeper) apply(ctx context.Context, b batchapi.Batch) bool {
	p := s.p
	st, err := p.d.Store.GetPoll(ctx, b.ID)
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		// Not tracked: a batch of another fleet on this account, or one
		// whose submitter has not written its poll record yet.
		if contract.TerminalStatus(b.Status) && p.d.Now().Sub(b.CreatedAt) < sweepRecheckNew {
			return false
		}
		s.remember(b)
		return true
	case err != nil:
		p.log.Warn().Err(err).Str("batch_id", b.ID).Msg("sweep: read poll state")
		return false
	case st.Final:
		s.remember(b)
		return true
	case !newer(st, b):
		if !st.Swept {
			// Once per batch: its claim may now rely on the sweep.
			st.Swept = true
			if err := p.d.Store.PutPoll(ctx, st); err != nil {
				return false
			}
		}
		s.remember(b)
		return true
	}
	st.Swept = true
	// No mutex: the write is a compare-and-set, and the events it
	// publishes are de-duplicated by message id, so a claim or webhook poll
	// racing this one makes one of them fail and look again.
	t := stream.PollTask{BatchID: b.ID, Provider: st.Provider, JobKey: st.JobKey, Key: st.Key, Attempt: st.Attempt}
	// The change belongs to the job's trace, not the sweep's.
	ctx, span := telemetry.Tracer().Start(telemetry.WithTraceparent(ctx, st.Traceparent), "sweep apply "+b.Status,
		trace.WithAttributes(attribute.String("batchfleet.batch_id", b.ID)))
	defer span.End()
	if _, err := p.observe(ctx, st, t, b, st.PollsSince); err != nil {
		if errors.Is(err, jobstore.ErrConflict) {
			return false // applied meanwhile by another path: compared again next sweep
		}
		p.log.Warn().Err(err).Str("batch_id", b.ID).Msg("sweep: apply change")
		return false
	}
	s.remember(b)
	return true
}

// statusRank orders the statuses a batch moves through, so a listed view
// older than what the fleet already observed is never applied.
func statusRank(s string) int {
	switch s {
	case "":
		return 0
	case contract.StatusValidating:
		return 1
	case contract.StatusInProgress:
		return 2
	case contract.StatusFinalizing, contract.StatusCancelling:
		return 3
	}
	if contract.TerminalStatus(s) {
		return 4
	}
	return 2 // a status this fleet does not know: somewhere in between
}

// newer reports whether the vendor's view b is ahead of the recorded state:
// a later status, or the same status with more requests done.
func newer(st *jobstore.Poll, b batchapi.Batch) bool {
	rs, rb := statusRank(st.Status), statusRank(b.Status)
	if rs != rb {
		return rb > rs
	}
	if st.Status != b.Status {
		return false
	}
	return b.Counts.Completed+b.Counts.Failed > st.Counts.Completed+st.Counts.Failed ||
		(b.Counts.Total != st.Counts.Total && st.Counts.Total == 0)
}
