package poll

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
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
		if _, err := p.d.Vendor.Cancel(ctx, a.BatchID); err != nil {
			if ve, ok := batchapi.AsError(err); ok && !ve.Retryable() {
				// Typically: the batch is already final. Nothing to cancel.
				log.Info().Err(err).Str("batch_id", a.BatchID).Msg("vendor refused cancel")
				continue
			}
			log.Warn().Err(err).Str("batch_id", a.BatchID).Msg("cancel batch, will retry")
			_ = m.NakWithDelay(p.cfg.InitialInterval)
			return
		}
		log.Info().Str("batch_id", a.BatchID).Msg("vendor batch cancel requested")
	}
	_ = m.Ack()
}
