package poll

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// handleCancel marks the job cancelled (no further retry, no submission)
// and cancels its active vendor batches. The claims keep polling them to
// their final status; the notifiers then end the job "cancelled".
func (p *Poller) handleCancel(ctx context.Context, m jetstream.Msg) {
	var c contract.Cancel
	if err := json.Unmarshal(m.Data(), &c); err != nil || c.IdempotencyKey == "" {
		p.log.Warn().Err(err).Bytes("data", m.Data()).Msg("malformed batch.cancel ignored")
		_ = m.Term()
		return
	}
	log := p.log.With().Str("idempotency_key", c.IdempotencyKey).Logger()
	job, err := p.d.Store.Mutate(ctx, c.IdempotencyKey, func(j *jobstore.Job) error {
		if j.Final || j.CancelRequested {
			return jobstore.ErrNoChange
		}
		j.CancelRequested = true
		return nil
	})
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		log.Info().Msg("cancel for an unknown key ignored")
		_ = m.Ack()
		return
	case err != nil:
		log.Warn().Err(err).Msg("record cancel, will retry")
		_ = m.NakWithDelay(p.cfg.InitialInterval)
		return
	case job.Final:
		log.Info().Msg("cancel for a final job ignored")
		_ = m.Ack()
		return
	}
	for _, a := range job.Attempts {
		if a.State != jobstore.AttemptSubmitted || a.BatchID == "" {
			continue
		}
		// Recorded on the batch's poll record first: its claim sends the
		// cancel again until the vendor takes it.
		if err := p.d.Store.MarkPollCancel(ctx, a.BatchID); err != nil {
			log.Warn().Err(err).Str("batch_id", a.BatchID).Msg("record cancel on the batch, will retry")
			_ = m.NakWithDelay(p.cfg.InitialInterval)
			return
		}
		if err := p.cancelBatch(ctx, job.Provider, a.BatchID); err != nil {
			log.Warn().Err(err).Str("batch_id", a.BatchID).Msg("cancel batch failed; its claim sends it again")
			continue
		}
		log.Info().Str("batch_id", a.BatchID).Msg("vendor batch cancel requested")
	}
	_ = m.Ack()
}

// checkCancel sends a requested cancel again while the vendor has not
// taken it (no cancelling or final status), at most once per
// POLL_INITIAL_INTERVAL.
func (p *Poller) checkCancel(ctx context.Context, st *jobstore.Poll, t stream.PollTask, b batchapi.Batch) error {
	if !st.CancelRequested || contract.TerminalStatus(b.Status) || b.Status == contract.StatusCancelling {
		return nil
	}
	now := p.d.Now().UTC()
	if now.Sub(st.CancelSentAt) < p.cfg.InitialInterval {
		return nil
	}
	if err := p.cancelBatch(ctx, t.Provider, t.BatchID); err != nil {
		if ve, ok := batchapi.AsError(err); !ok || ve.Retryable() {
			return err
		}
		// Refused: typically final by now; the next poll sees it.
	}
	p.log.Info().Str("batch_id", t.BatchID).Str("idempotency_key", t.Key).Msg("requested cancel sent to the vendor")
	st.CancelSentAt = now
	return p.d.Store.PutPoll(ctx, st)
}
