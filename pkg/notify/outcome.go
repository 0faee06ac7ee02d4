package notify

import (
	"context"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// publishCompleted publishes the job's one batch.completed, marks it in the
// record, then cleans up after the job.
func (n *Notifier) publishCompleted(ctx context.Context, job *jobstore.Job) error {
	ev := job.CompletedEvent()
	if _, err := stream.Publish(ctx, n.d.JS, contract.SubjectCompleted, ev, stream.WithMsgID(contract.CompletedMsgID(job.Key))); err != nil {
		return err
	}
	now := n.d.Now().UTC()
	job, err := n.d.Store.Apply(ctx, job, func(j *jobstore.Job) error {
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
	n.log.Info().Ctx(ctx).Str("idempotency_key", job.Key).Str("outcome", job.Outcome).Strs("batch_ids", ev.BatchIDs).
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
// needs: uploaded vendor input files, stored inputs and the producer's
// input_object. Failures are
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
		if n.cfg.DeleteInputFiles {
			n.cleanup(ctx, job.Provider, &a)
		}
		if a.InputObject != "" {
			if err := n.d.Store.DeleteObject(ctx, a.Bucket(), a.InputObject); err != nil {
				n.log.Warn().Err(err).Str("object", a.InputObject).Msg("delete stored input")
			}
		}
	}
}

// cleanup deletes what the vendor keeps of an ended attempt: the input
// file the fleet uploaded (OpenAI), or the batch itself, which holds the
// requests (Anthropic).
func (n *Notifier) cleanup(ctx context.Context, provider string, a *jobstore.Attempt) {
	file := ""
	if a.UploadedFile {
		file = a.InputFileID
	}
	if file == "" && (provider != contract.ProviderAnthropic || a.BatchID == "") {
		return
	}
	v, err := n.vendorOf(provider)
	if err != nil {
		return
	}
	if err := v.Cleanup(ctx, batchapi.Batch{ID: a.BatchID}, file); err != nil {
		n.log.Warn().Err(err).Str("batch_id", a.BatchID).Str("file_id", file).Msg("delete vendor input file or ended batch")
	}
}

// dominantReason is the most frequent error code among the failed ids.
func dominantReason(m *results.Merged, ids []string) string {
	count := map[string]int{}
	best := ""
	for _, id := range ids {
		if r, ok := m.Get(id); ok {
			c := r.Reason
			count[c]++
			if count[c] > count[best] || best == "" {
				best = c
			}
		}
	}
	return best
}
