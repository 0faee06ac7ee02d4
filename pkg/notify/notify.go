package notify

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
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// batches is the part of a provider's API a notifier uses.
type batches interface {
	Get(ctx context.Context, id string) (batchapi.Batch, error)
	Results(ctx context.Context, b batchapi.Batch) (io.ReadCloser, error)
	Cleanup(ctx context.Context, b batchapi.Batch, inputFileID string) error
}

// vendor is OpenAI's, which also serves the producers' input files.
type vendor interface {
	batches
	Download(ctx context.Context, fileID string) (io.ReadCloser, error)
}

// releaser frees an admission slot once a batch is final.
type releaser interface {
	Release(ctx context.Context, key string) error
}

// Deps are a notifier's live collaborators; Admitter is optional.
type Deps struct {
	JS     jetstream.JetStream
	Store  *jobstore.Store
	Vendor vendor
	// Anthropic, if set, collects the batches of provider "anthropic".
	Anthropic batches
	Admitter  releaser
	Metrics   *telemetry.Metrics
	Logger    zerolog.Logger
	Now       func() time.Time
}

// Config tunes a notifier; zero values take the defaults.
type Config struct {
	// Concurrency is NOTIFY_CONCURRENCY. Defaults to 16: most of a
	// hand-off is waiting on the vendor and NATS, and each one's memory is
	// bounded (about 150 bytes per request, never the bodies).
	Concurrency int
	// MaxRetryAttempts is MAX_RETRY_ATTEMPTS: retry batches per job (0 = none; config defaults it to 3).
	MaxRetryAttempts int
	// RetryBackoff is RETRY_BACKOFF, doubled per attempt. Defaults to 10s.
	RetryBackoff time.Duration
	// TokenLimitDelay is TOKEN_LIMIT_REQUEUE_DELAY: how long a batch the
	// vendor refused for its enqueued token limit waits before it is
	// re-queued. Defaults to 1m.
	TokenLimitDelay time.Duration
	// MaxRequeues bounds those re-queues per job. Defaults to 50.
	MaxRequeues int
	// DeleteInputFiles deletes the uploaded vendor input files when a job ends.
	DeleteInputFiles bool
	// Prices estimates cost; empty uses results.DefaultPriceTable.
	Prices      results.PriceTable
	StopTimeout time.Duration
	// AckWait of the consumer; heartbeats keep long downloads alive, so only a
	// dead notifier lets it run out. Defaults to 20s.
	AckWait time.Duration
	Streams stream.Settings
	// Webhooks configures outbound webhook fan-out (none when URLs is empty).
	Webhooks WebhookConfig
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	c.Concurrency = cmp.Or(c.Concurrency, 16)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, 10*time.Second)
	c.TokenLimitDelay = cmp.Or(c.TokenLimitDelay, time.Minute)
	c.MaxRequeues = cmp.Or(c.MaxRequeues, 50)
	c.StopTimeout = cmp.Or(c.StopTimeout, 8*time.Second)
	c.AckWait = cmp.Or(c.AckWait, 20*time.Second)
	if c.Prices.Models == nil {
		c.Prices = results.DefaultPriceTable()
	}
	c.Webhooks = c.Webhooks.WithDefaults()
	return c
}

// failureBackoff spaces the tries of a hand-off whose processing failed
// (vendor or NATS trouble): 1s doubling to 2m, with jitter.
var failureBackoff = backoff.Policy{Initial: time.Second, Max: 2 * time.Minute}.WithDefaults()

// Notifier publishes outcomes.
type Notifier struct {
	d   Deps
	cfg Config
	log zerolog.Logger

	mu  sync.Mutex
	rnd *rand.Rand
}

// New validates the dependencies and returns a Notifier.
func New(d Deps, cfg Config) (*Notifier, error) {
	if d.JS == nil || d.Store == nil || d.Vendor == nil {
		return nil, errors.New("notify: JS, Store and Vendor are required")
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	return &Notifier{
		d: d, cfg: cfg.WithDefaults(),
		log: d.Logger,
		rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}, nil
}

// ConsumerConfig is the durable consumer of final hand-offs.
func (n *Notifier) ConsumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       stream.ConsumerNotifiers,
		Description:   "notifiers: batches that ended -> results, retries, batch.completed",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       n.cfg.AckWait,
		MaxDeliver:    -1,
		MaxAckPending: 10000,
		FilterSubject: stream.SubjectFinal,
	}
}

// Run consumes until ctx is done, then stops gracefully.
func (n *Notifier) Run(ctx context.Context) error {
	if err := stream.Ensure(ctx, n.d.JS, n.cfg.Streams, stream.Work, stream.Events, stream.DLQ); err != nil {
		return err
	}
	finals, err := stream.EnsureConsumer(ctx, n.d.JS, stream.Work, n.ConsumerConfig())
	if err != nil {
		return err
	}
	n.log.Info().Int("concurrency", n.cfg.Concurrency).Int("max_retry_attempts", n.cfg.MaxRetryAttempts).
		Int("webhook_urls", len(n.cfg.Webhooks.URLs)).Msg("notifier running")
	opt := stream.ConsumeOptions{Concurrency: n.cfg.Concurrency, StopTimeout: n.cfg.StopTimeout, Logger: n.log,
		Recreate: stream.Recreate(n.d.JS, n.cfg.Streams, stream.Work, n.ConsumerConfig())}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stream.Consume(gctx, finals, opt, n.handleFinal) })
	for _, url := range n.cfg.Webhooks.URLs {
		g.Go(func() error { return n.runWebhook(gctx, url) })
	}
	return g.Wait()
}

func (n *Notifier) handleFinal(ctx context.Context, m jetstream.Msg) {
	var t stream.FinalTask
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.JobKey == "" {
		n.log.Error().Err(err).Bytes("data", m.Data()).Msg("malformed final hand-off, dropped")
		_ = m.Term()
		return
	}
	stop := stream.Heartbeat(ctx, m, n.cfg.AckWait/3)
	err := n.process(ctx, t)
	stop()
	if err != nil {
		attempt := 0
		if md, merr := m.Metadata(); merr == nil {
			attempt = int(md.NumDelivered) - 1
		}
		n.mu.Lock()
		wait := failureBackoff.Next(attempt, n.rnd)
		n.mu.Unlock()
		if !errors.Is(err, context.Canceled) {
			n.log.Warn().Err(err).Str("idempotency_key", t.JobKey).Str("batch_id", t.BatchID).Msg("process final batch, will retry")
		}
		_ = m.NakWithDelay(wait)
		return
	}
	if err := m.DoubleAck(ctx); err != nil {
		n.log.Warn().Err(err).Str("idempotency_key", t.JobKey).Msg("ack final hand-off")
	}
}

// process handles one ended attempt of a job: its results are merged,
// the attempt recorded final together with the job's next step (one
// compare-and-set), and the outcome published once the job is final.
func (n *Notifier) process(ctx context.Context, t stream.FinalTask) error {
	job, err := n.d.Store.Get(ctx, t.JobKey)
	if errors.Is(err, jobstore.ErrNotFound) {
		n.log.Error().Str("idempotency_key", t.JobKey).Msg("final hand-off for an unknown job, dropped")
		return nil
	}
	if err != nil {
		return err
	}
	if job.Completed {
		return nil
	}
	if !job.Final {
		var c collected
		if a := job.Attempt(t.Key); a != nil && a.State == jobstore.AttemptSubmitted && a.BatchID == t.BatchID && t.BatchID != "" {
			if c, err = n.collect(ctx, job, a.Key); err != nil {
				return err
			}
			// Free the slot before the record says final: a failed release
			// is retried with the whole hand-off (releasing is idempotent).
			if n.d.Admitter != nil && a.Admitted {
				if err := n.d.Admitter.Release(ctx, a.Key); err != nil {
					return fmt.Errorf("release admission slot of %s: %w", a.Key, err)
				}
			}
		}
		if job, err = n.settle(ctx, job, c); err != nil || !job.Final {
			return err
		}
	}
	return n.publishCompleted(ctx, job)
}
