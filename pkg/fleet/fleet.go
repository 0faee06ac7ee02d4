// Package fleet builds each worker type from its process's collaborators
// and configuration. It is a composition root, like cmd/ and devfleet: the
// only place that knows how submit, poll and notify are assembled.
package fleet

import (
	"context"
	"errors"
	"fmt"

	"github.com/batchfleet/batchfleet/pkg/admission"

	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/notify"
	"github.com/batchfleet/batchfleet/pkg/pack"
	"github.com/batchfleet/batchfleet/pkg/poll"
	"github.com/batchfleet/batchfleet/pkg/ratelimit"
	"github.com/batchfleet/batchfleet/pkg/rescue"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/submit"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
	"github.com/batchfleet/batchfleet/pkg/tokens"
	"github.com/batchfleet/batchfleet/pkg/vendorhook"
)

// Streams maps the configuration onto stream settings.
func Streams(c config.Config) stream.Settings {
	return stream.Settings{Replicas: c.StreamReplicas, EventsMaxAge: c.EventsMaxAge, DuplicateWindow: c.DedupWindow}
}

// Store opens the job store.
func Store(ctx context.Context, inf *lifecycle.Infra) (*jobstore.Store, error) {
	c := inf.Config
	return jobstore.Open(ctx, inf.JS, jobstore.Settings{
		Retention: c.JobRetention, Replicas: c.StreamReplicas, TransferTimeout: c.VendorTransferTimeout,
	})
}

func limiter(inf *lifecycle.Infra, name, spec string) (*ratelimit.Limiter, error) {
	l, err := ratelimit.ParseLimit(spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if l.Rate == 0 {
		return nil, nil
	}
	if l.Burst == 0 {
		// Allow a short burst (a fortieth of the rate, e.g. 50 of 2000/h) so a
		// quiet fleet starts work at once; the long-run rate is unchanged.
		l.Burst = max(1, l.Rate/40)
	}
	return ratelimit.New(inf.Redis, name, l), nil
}

// Admission opens the fleet-wide admission controller.
func Admission(ctx context.Context, inf *lifecycle.Infra) (*admission.Controller, error) {
	c := inf.Config
	return admission.Open(ctx, inf.JS, admission.Limits{MaxActive: c.MaxActiveBatches, TokensPerModel: c.EnqueuedTokenLimits}, c.StreamReplicas)
}

// Submitter builds a submitter.
func Submitter(ctx context.Context, inf *lifecycle.Infra) (lifecycle.Runner, error) {
	c := inf.Config
	st, err := Store(ctx, inf)
	if err != nil {
		return nil, err
	}
	d := submit.Deps{
		JS: inf.JS, Store: st, Vendor: inf.Vendor, Logger: inf.Logger,
		Locker:  lock.New(inf.Redis, lock.Options{Logger: inf.Logger}),
		Metrics: telemetry.NewMetrics(inf.Metrics),
	}
	lim, err := limiter(inf, "SUBMIT_RATE", c.Submit.Rate)
	if err != nil {
		return nil, err
	}
	if lim != nil {
		d.Limiter = lim
	}
	adm, err := Admission(ctx, inf)
	if err != nil {
		return nil, err
	}
	if adm.Enabled() {
		d.Admitter = adm
	}
	if inf.Anthropic != nil {
		d.Anthropic = inf.Anthropic
	}
	s, err := submit.New(d, submit.Config{
		TransferTimeout: c.VendorTransferTimeout,
		Concurrency:     c.Submit.Concurrency, LockTTL: c.Submit.LockTTL, CallTimeout: c.VendorCallTimeout,
		MaxTries: c.Submit.MaxTries, CreateMargin: c.Submit.CreateMargin, StopTimeout: c.StopTimeout, Streams: Streams(c),
	})
	if err != nil {
		return nil, err
	}
	// Every submitter packs single requests too.
	pd := pack.Deps{JS: inf.JS, Store: st, Redis: inf.Redis, Leader: lock.New(inf.Redis, lock.Options{Logger: inf.Logger}),
		Estimate: tokens.Estimate, Logger: inf.Logger}
	if adm.Enabled() {
		pd.Reserved = adm
	}
	pk, err := pack.New(ctx, pd, pack.Config{
		MaxRequests: c.Pack.MaxRequests, MaxBytes: c.Pack.MaxBytes, MaxAge: c.Pack.MaxAge, Concurrency: c.Pack.Concurrency,
		LockTTL: c.Pack.LockTTL, TokenLimits: c.EnqueuedTokenLimits, Retention: c.JobRetention, StopTimeout: c.StopTimeout,
		Streams: Streams(c), Replicas: c.StreamReplicas,
	})
	if err != nil {
		return nil, err
	}
	return lifecycle.Group(s, pk), nil
}

// Poller builds a poller.
func Poller(ctx context.Context, inf *lifecycle.Infra) (lifecycle.Runner, error) {
	c := inf.Config
	st, err := Store(ctx, inf)
	if err != nil {
		return nil, err
	}
	d := poll.Deps{JS: inf.JS, Store: st, Vendor: inf.Vendor, Logger: inf.Logger, Metrics: telemetry.NewMetrics(inf.Metrics)}
	if c.Poll.WebhookAddr != "" {
		// The mutex serialises the claim path with the vendor webhook path;
		// without webhooks the claim alone is exclusive, and the lock would
		// cost two Redis round trips per poll.
		d.Locker = lock.New(inf.Redis, lock.Options{Logger: inf.Logger})
	}
	if c.Poll.SweepInterval > 0 {
		d.Leader = lock.New(inf.Redis, lock.Options{Logger: inf.Logger})
		d.Lister = inf.Vendor
	}
	lim, err := limiter(inf, "POLL_RATE", c.Poll.Rate)
	if err != nil {
		return nil, err
	}
	if lim != nil {
		d.Limiter = lim
	}
	if inf.Anthropic != nil {
		d.Anthropic = inf.Anthropic
		if c.Poll.SweepInterval > 0 {
			d.AnthropicLister = inf.Anthropic
		}
	}
	p, err := poll.New(d, poll.Config{
		InitialInterval: c.Poll.InitialInterval, MaxInterval: c.Poll.MaxInterval, Lease: c.Poll.Lease, Strategy: c.Poll.Strategy,
		Concurrency: c.Poll.Concurrency, ProgressEvery: c.Poll.ProgressEvery,
		SoftTimeout: c.Poll.SoftTimeout, HardTimeout: c.Poll.HardTimeout, TimeoutAction: c.Poll.TimeoutAction,
		SweepInterval: c.Poll.SweepInterval, StopTimeout: c.StopTimeout, Streams: Streams(c),
	})
	if err != nil || c.Poll.WebhookAddr == "" {
		return p, err
	}
	recv, err := vendorhook.New(vendorhook.Deps{
		Redis: inf.Redis, Logger: inf.Logger,
		Trigger: func(ctx context.Context, batchID string) error {
			err := p.PollNow(ctx, batchID)
			if errors.Is(err, poll.ErrUnknownBatch) {
				return fmt.Errorf("%w: %w", vendorhook.ErrUnknownBatch, err)
			}
			return err
		},
	}, vendorhook.Config{Secret: c.Poll.WebhookSecret})
	if err != nil {
		return nil, fmt.Errorf("OPENAI_WEBHOOK_SECRET: %w", err)
	}
	return lifecycle.Group(p, lifecycle.RunFunc(func(ctx context.Context) error {
		return recv.Serve(ctx, c.Poll.WebhookAddr)
	})), nil
}

// Notifier builds a notifier.
func Notifier(ctx context.Context, inf *lifecycle.Infra) (lifecycle.Runner, error) {
	c := inf.Config
	st, err := Store(ctx, inf)
	if err != nil {
		return nil, err
	}
	prices := results.DefaultPriceTable()
	if c.Notify.PriceTable != "" {
		if prices, err = results.ParsePriceTable(c.Notify.PriceTable); err != nil {
			return nil, fmt.Errorf("PRICE_TABLE: %w", err)
		}
	}
	adm, err := Admission(ctx, inf)
	if err != nil {
		return nil, err
	}
	metrics := telemetry.NewMetrics(inf.Metrics)
	nd := notify.Deps{JS: inf.JS, Store: st, Vendor: inf.Vendor, Admitter: adm, Logger: inf.Logger, Metrics: metrics}
	if inf.Anthropic != nil {
		nd.Anthropic = inf.Anthropic
	}
	n, err := notify.New(nd, notify.Config{
		Concurrency: c.Notify.Concurrency, MaxRetryAttempts: c.Notify.MaxRetryAttempts, RetryBackoff: c.Notify.RetryBackoff,
		TokenLimitDelay:  c.Notify.TokenLimitDelay,
		DeleteInputFiles: c.Notify.DeleteInputFiles, Prices: prices, StopTimeout: c.StopTimeout, Streams: Streams(c),
		Webhooks: notify.WebhookConfig{
			URLs: c.Notify.WebhookURLs, Secret: c.Notify.WebhookSecret, MaxAttempts: c.Notify.WebhookMaxAttempts,
			RetryInitial: c.Notify.WebhookRetryInitial, Timeout: c.Notify.WebhookTimeout,
		},
	})
	if err != nil {
		return nil, err
	}
	// One rescuer leads among the notifiers.
	r, err := rescue.New(rescue.Deps{
		JS: inf.JS, Store: st, Leader: lock.New(inf.Redis, lock.Options{Logger: inf.Logger}), Slots: adm,
		Metrics: metrics, Logger: inf.Logger,
	}, rescue.Config{Interval: c.RescueInterval, After: c.RescueAfter})
	if err != nil {
		return nil, err
	}
	fo, err := pack.NewFanout(ctx, inf.JS, st, inf.Logger, pack.FanoutConfig{
		StopTimeout: c.StopTimeout, Streams: Streams(c), Replicas: c.StreamReplicas,
	})
	if err != nil {
		return nil, err
	}
	return lifecycle.Group(n, r, fo), nil
}
