package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// consumeSpan starts the span of handling m, a child of the trace
// context its publisher put in its headers (so one job's spans share a
// trace across the worker processes).
func consumeSpan(ctx context.Context, m jetstream.Msg) (context.Context, trace.Span) {
	ctx = telemetry.Extract(ctx, m.Headers())
	attrs := []attribute.KeyValue{
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.operation.type", "process"),
		attribute.String("messaging.destination.name", m.Subject()),
	}
	if md, err := m.Metadata(); err == nil {
		attrs = append(attrs, attribute.String("messaging.consumer.group.name", md.Consumer),
			attribute.Int64("messaging.nats.delivered", int64(md.NumDelivered)))
	}
	return telemetry.Tracer().Start(ctx, "process "+m.Subject(), trace.WithSpanKind(trace.SpanKindConsumer), trace.WithAttributes(attrs...))
}

// Handler processes one message and must ack, nak or term it. ctx is
// cancelled only at the hard stop deadline; a handler that sees it
// cancelled should hand the message back (Nak) and return.
type Handler func(ctx context.Context, m jetstream.Msg)

// ConsumeOptions tune a consume loop.
type ConsumeOptions struct {
	// Concurrency is the number of messages handled at once; the loop
	// fetches only as many as it has free handlers, so no message waits
	// in a buffer while its ack wait runs out.
	Concurrency int
	// StopTimeout bounds how long in-flight handlers may run after the
	// loop's context is done before their own context is cancelled.
	StopTimeout time.Duration
	// FetchWait bounds one pull request. Defaults to 1s.
	FetchWait time.Duration
	// Recreate makes the consumer again (and its stream) when it was
	// deleted, e.g. by an operator's mistake or a restore from backup; nil
	// makes Consume return an error then, so the worker exits and its
	// supervisor restarts it, instead of looking healthy and consuming
	// nothing.
	Recreate func(ctx context.Context) (jetstream.Consumer, error)
	Logger   zerolog.Logger
}

// ErrConsumerGone: the consumer (or its stream) was deleted and
// ConsumeOptions.Recreate is nil.
var ErrConsumerGone = errors.New("stream: consumer deleted")

// Consume runs handler over messages from c with bounded concurrency until
// ctx is done; it then stops fetching, hands back the messages fetched but
// not started (Nak), lets in-flight handlers finish for up to StopTimeout,
// cancels them and returns once every handler has returned.
func Consume(ctx context.Context, c jetstream.Consumer, opt ConsumeOptions, handler Handler) error {
	n := max(opt.Concurrency, 1)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	free := make(chan struct{}, n)
	for range n {
		free <- struct{}{}
	}
	var wg sync.WaitGroup
	var failed error
	for ctx.Err() == nil {
		select {
		case <-free:
		case <-ctx.Done():
			continue
		}
		k := 1 + takeAll(free)
		got, err := fetch(ctx, c, k, opt, func(m jetstream.Msg) {
			wg.Go(func() {
				defer func() { free <- struct{}{} }()
				hctx, span := consumeSpan(work, m)
				defer span.End()
				handler(hctx, m)
			})
		})
		for range k - got {
			free <- struct{}{}
		}
		if err == nil {
			continue
		}
		if c, err = afterFetchError(ctx, c, opt, err); err != nil {
			failed = err
			break
		}
	}
	stop(&wg, cancelWork, opt)
	return failed
}

// takeAll takes every token left in free and returns how many it took.
func takeAll(free chan struct{}) int {
	for n := 0; ; n++ {
		select {
		case <-free:
		default:
			return n
		}
	}
}

// fetch pulls up to k messages and starts each with start, handing back
// (Nak) those that arrive once ctx is done. It returns how many it
// started.
func fetch(ctx context.Context, c jetstream.Consumer, k int, opt ConsumeOptions, start func(jetstream.Msg)) (int, error) {
	batch, err := c.Fetch(k, jetstream.FetchMaxWait(cmp.Or(opt.FetchWait, time.Second)))
	if err != nil {
		return 0, err
	}
	got := 0
	for m := range batch.Messages() {
		if ctx.Err() != nil {
			_ = m.Nak()
			continue
		}
		got++
		start(m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
		return got, err
	}
	return got, nil
}

// afterFetchError answers a failed fetch: a consumer that still exists is fetched
// from again after a pause; a deleted one is recreated (or ends the loop
// with ErrConsumerGone).
func afterFetchError(ctx context.Context, c jetstream.Consumer, opt ConsumeOptions, ferr error) (jetstream.Consumer, error) {
	pause := func() { sleepCtx(ctx, time.Second) }
	ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.Info(ictx)
	cancel()
	if !gone(err) && !gone(ferr) {
		if ctx.Err() == nil {
			opt.Logger.Warn().Err(ferr).Msg("consume: fetch failed, retrying")
			pause()
		}
		return c, nil
	}
	if opt.Recreate == nil {
		return c, fmt.Errorf("%w: %w", ErrConsumerGone, ferr)
	}
	for ctx.Err() == nil {
		nc, err := opt.Recreate(ctx)
		if err == nil {
			opt.Logger.Warn().Err(ferr).Msg("consume: the consumer was deleted; recreated it")
			return nc, nil
		}
		opt.Logger.Warn().Err(err).Msg("consume: recreate deleted consumer, retrying")
		pause()
	}
	return c, nil
}

func gone(err error) bool {
	return errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrStreamNotFound)
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// stop lets in-flight handlers finish for up to StopTimeout, then cancels
// them, and returns once all have returned.
func stop(wg *sync.WaitGroup, cancelWork context.CancelFunc, opt ConsumeOptions) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	timeout := opt.StopTimeout
	if timeout <= 0 {
		timeout = 8 * time.Second
	}
	select {
	case <-done:
	case <-time.After(timeout):
		opt.Logger.Warn().Msg("consume: stop deadline reached, cancelling in-flight handlers")
		cancelWork()
		<-done
	}
}

// Heartbeat tells JetStream every interval that m is still being worked
// on (InProgress), so its ack wait runs out only if this process dies. The
// returned stop ends the heartbeat and waits for it.
func Heartbeat(ctx context.Context, m jetstream.Msg, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				_ = m.InProgress()
			}
		}
	})
	return func() { cancel(); wg.Wait() }
}

// BatchHandler processes a batch of messages and must ack, nak or term
// each; ctx is cancelled only at the hard stop deadline.
type BatchHandler func(ctx context.Context, msgs []jetstream.Msg)

// ConsumeBatches runs handler over batches of up to opt.Concurrency
// messages, one batch at a time, until ctx is done; it then lets the batch
// in hand finish for up to StopTimeout before cancelling its context. It
// suits handlers that pipeline their work (asynchronous publishes) where a
// goroutine per message would cost more than the work.
func ConsumeBatches(ctx context.Context, c jetstream.Consumer, opt ConsumeOptions, handler BatchHandler) error {
	n := max(opt.Concurrency, 1)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	go func() {
		select {
		case <-ctx.Done():
			sleepCtx(work, cmp.Or(opt.StopTimeout, 8*time.Second))
			cancelWork()
		case <-work.Done():
		}
	}()
	for ctx.Err() == nil {
		var msgs []jetstream.Msg
		_, err := fetch(ctx, c, n, opt, func(m jetstream.Msg) { msgs = append(msgs, m) })
		if len(msgs) > 0 {
			handler(work, msgs)
		}
		if err == nil {
			continue
		}
		if c, err = afterFetchError(ctx, c, opt, err); err != nil {
			return err
		}
	}
	return nil
}
