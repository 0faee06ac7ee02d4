// Package rescue is the fleet's rescuer (as river's JobRescuer): one
// leader, elected by a Redis lock, scans the unfinished jobs' records
// (found through the job index, so a scan costs the backlog, not the
// history; it repairs stale index entries on the way) every interval
// and re-drives each step that has not happened within a bound after the
// write that called for it:
//
//   - submit: a create whose outcome is unknown (mark, no batch) that
//     nobody resolved after its settle time;
//   - collect: a batch its poll record saw final but whose results were
//     never merged;
//   - decide: every attempt ended but no next step recorded;
//   - complete: a final job without its batch.completed;
//   - cancel: a cancel requested while a batch is still active, not yet
//     recorded on the batch's poll record (its claim then sends it);
//   - slot: an admission slot held by an attempt that ended, or by no job.
//
// Every re-drive is the same idempotent hand-off the workers make (the
// receiver checks the record), published under a message id of its own
// ("<key>:rescue:<what>"), so the original's duplicate window cannot
// swallow it and at most one re-drive per step is in flight per window.
// Each is logged and counted in batchfleet_rescued_total{what}.
package rescue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/admission"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// slots is the admission state the rescuer repairs.
type slots interface {
	Enabled() bool
	Snapshot(ctx context.Context) (admission.State, uint64, error)
	Release(ctx context.Context, key string) error
}

// Deps are the rescuer's collaborators; Slots is optional (no admission).
type Deps struct {
	JS      jetstream.Publisher
	Store   *jobstore.Store
	Leader  lock.Acquirer
	Slots   slots
	Metrics *telemetry.Metrics
	Logger  zerolog.Logger
	Now     func() time.Time
}

// Config tunes the rescuer; zero values take the defaults.
type Config struct {
	// Interval between scans (RESCUE_INTERVAL). Defaults to 1m.
	Interval time.Duration
	// After is how long a step may stay undone after the record change
	// that called for it before it is re-driven (RESCUE_AFTER). It must
	// exceed the longest a live worker takes between its write and its
	// hand-off. Defaults to 5m.
	After time.Duration
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	c.Interval = cmp.Or(c.Interval, time.Minute)
	c.After = cmp.Or(c.After, 5*time.Minute)
	return c
}

// Validate names the first unusable field.
func (c Config) Validate() error {
	if c.Interval < 0 || c.After < 0 {
		return errors.New("rescue: RESCUE_INTERVAL and RESCUE_AFTER must not be negative")
	}
	return nil
}

// Rescuer re-drives stalled hand-offs.
type Rescuer struct {
	d   Deps
	cfg Config
	log zerolog.Logger
}

// New validates the dependencies and returns a Rescuer.
func New(d Deps, cfg Config) (*Rescuer, error) {
	if d.JS == nil || d.Store == nil || d.Leader == nil {
		return nil, errors.New("rescue: JS, Store and Leader are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Rescuer{d: d, cfg: cfg.WithDefaults(), log: d.Logger.With().Str("component", "rescuer").Logger()}, nil
}

const leaderKey = "batchfleet:rescuer"

// Run scans every Interval while it leads, until ctx is done.
func (r *Rescuer) Run(ctx context.Context) error {
	lock.Lead(ctx, r.d.Leader, leaderKey, max(2*r.cfg.Interval, 10*time.Second), r.cfg.Interval, r.log, r.lead)
	return nil
}

func (r *Rescuer) lead(ctx context.Context, lk *lock.Lock) {
	lk.KeepAlive(ctx)
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = lk.Release(rctx)
	}()
	r.log.Info().Dur("interval", r.cfg.Interval).Dur("after", r.cfg.After).Msg("rescuer leading")
	for {
		n, err := r.Scan(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.Warn().Err(err).Msg("rescue scan failed")
		case n > 0:
			r.log.Info().Int("rescued", n).Msg("rescue scan re-drove stalled steps")
		}
		select {
		case <-ctx.Done():
			return
		case <-lk.Lost():
			return
		case <-time.After(r.cfg.Interval):
		}
	}
}

// Scan looks at every job once and re-drives what is stalled; it returns
// how many steps it re-drove.
func (r *Rescuer) Scan(ctx context.Context) (int, error) {
	n := 0
	held := map[string]bool{} // attempt keys whose slot a live attempt holds
	err := r.d.Store.EachOpen(ctx, func(j *jobstore.Job) error {
		for _, a := range j.Attempts {
			if a.Admitted && (a.State == jobstore.AttemptPending || a.State == jobstore.AttemptSubmitted) {
				held[a.Key] = true
			}
		}
		if j.Completed || r.d.Now().Sub(j.UpdatedAt) < r.cfg.After {
			return nil
		}
		k, err := r.job(ctx, j)
		n += k
		return err
	})
	if err != nil {
		return n, err
	}
	k, err := r.freeSlots(ctx, held)
	if err != nil {
		return n + k, err
	}
	// The report's rollup of the hour that just closed, made once.
	hour := r.d.Now().UTC().Truncate(time.Hour).Add(-time.Hour)
	if _, _, _, err := r.d.Store.HourRollup(ctx, hour); err != nil {
		r.log.Warn().Err(err).Time("hour", hour).Msg("hour rollup failed")
	}
	return n + k, nil
}

// job re-drives the stalled step of one job not touched for After.
func (r *Rescuer) job(ctx context.Context, j *jobstore.Job) (int, error) {
	if j.Final {
		return r.redrive(ctx, "complete", j.Key, stream.SubjectFinal, stream.FinalTask{JobKey: j.Key})
	}
	n, busy := 0, false
	for _, a := range j.Attempts {
		switch a.State {
		case jobstore.AttemptPending:
			busy = true
			if !r.stalledPending(a) {
				continue
			}
			// An original request's own message is still in its stream
			// unless its input is stored: only then can a task re-drive it.
			if a.N > 0 || a.InputFileID != "" || a.InputObject != "" {
				k, err := r.redrive(ctx, "submit", a.Key, stream.SubjectSubmit, stream.SubmitTask{JobKey: j.Key, Key: a.Key})
				n += k
				if err != nil {
					return n, err
				}
			}
		case jobstore.AttemptSubmitted:
			busy = true
			k, err := r.submitted(ctx, j, a)
			n += k
			if err != nil {
				return n, err
			}
		}
	}
	if busy || len(j.Attempts) == 0 {
		return n, nil
	}
	last := j.Last()
	k, err := r.redrive(ctx, "decide", last.Key, stream.SubjectFinal, stream.FinalTask{JobKey: j.Key, Key: last.Key, BatchID: last.BatchID})
	return n + k, err
}

// stalledPending reports whether a pending attempt's create mark settled
// After ago without being resolved. A due attempt without a mark is not
// re-driven: it may be waiting its turn (admission cap, create rate) with
// its message held, and a lost retry hand-off is re-driven by the
// notifiers' redelivery (the final hand-off is acked only after it).
func (r *Rescuer) stalledPending(a jobstore.Attempt) bool {
	return !a.CreateDeadline.IsZero() && r.d.Now().Sub(a.CreateDeadline) > r.cfg.After
}

// submitted re-drives a submitted attempt whose batch its poll record saw
// final (the notifiers never merged it), and records a job's cancel on the
// batch's poll record.
func (r *Rescuer) submitted(ctx context.Context, j *jobstore.Job, a jobstore.Attempt) (int, error) {
	st, err := r.d.Store.GetPoll(ctx, a.BatchID)
	if errors.Is(err, jobstore.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if st.Final && r.d.Now().Sub(st.ChangedAt) > r.cfg.After {
		return r.redrive(ctx, "collect", a.Key, stream.SubjectFinal, stream.FinalTask{JobKey: j.Key, Key: a.Key, BatchID: a.BatchID})
	}
	if j.CancelRequested && !st.CancelRequested {
		if err := r.d.Store.MarkPollCancel(ctx, a.BatchID); err != nil {
			return 0, err
		}
		r.rescued("cancel", a.Key)
		return 1, nil
	}
	return 0, nil
}

// freeSlots releases admission slots no live attempt holds: their attempt
// ended (the release after it was lost) or their job is gone.
func (r *Rescuer) freeSlots(ctx context.Context, held map[string]bool) (int, error) {
	if r.d.Slots == nil || !r.d.Slots.Enabled() {
		return 0, nil
	}
	s, _, err := r.d.Slots.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for key, slot := range s.Active {
		if held[key] || r.d.Now().Sub(slot.At) < r.cfg.After {
			continue
		}
		if err := r.d.Slots.Release(ctx, key); err != nil {
			return n, err
		}
		r.rescued("slot", key)
		n++
	}
	return n, nil
}

// redrive publishes a hand-off again, under a message id of its own that
// the duplicate window keeps to one re-drive per step per window (a step
// still stalled after that is re-driven again).
func (r *Rescuer) redrive(ctx context.Context, what, key, subject string, task any) (int, error) {
	id := fmt.Sprintf("%s:rescue:%s", key, what)
	if _, err := stream.Publish(ctx, r.d.JS, subject, task, stream.WithMsgID(id)); err != nil {
		return 0, fmt.Errorf("re-drive %s of %s: %w", what, key, err)
	}
	r.rescued(what, key)
	return 1, nil
}

func (r *Rescuer) rescued(what, key string) {
	r.d.Metrics.Rescue(what)
	r.log.Warn().Str("what", what).Str("idempotency_key", key).Msg("re-drove a stalled step")
}
