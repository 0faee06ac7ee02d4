package stream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Handler processes one message and must ack, nak or term it. ctx is
// cancelled only at the hard stop deadline; a handler that sees it
// cancelled should hand the message back (Nak) and return.
type Handler func(ctx context.Context, m jetstream.Msg)

// ConsumeOptions tune a consume loop.
type ConsumeOptions struct {
	// Concurrency is the number of messages handled at once (and the
	// number fetched ahead, so none waits out its ack wait in a buffer).
	Concurrency int
	// StopTimeout bounds how long in-flight handlers may run after the
	// loop's context is done before their own context is cancelled.
	StopTimeout time.Duration
	Logger      zerolog.Logger
}

// Consume runs handler over messages from c with bounded concurrency until
// ctx is done; it then stops fetching, hands back the messages fetched but
// not started (Nak), lets in-flight handlers finish for up to StopTimeout,
// cancels them and returns once every handler has returned.
func Consume(ctx context.Context, c jetstream.Consumer, opt ConsumeOptions, handler Handler) error {
	n := max(opt.Concurrency, 1)
	it, err := c.Messages(jetstream.PullMaxMessages(n))
	if err != nil {
		return fmt.Errorf("consume: %w", err)
	}
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				m, err := it.Next()
				if err != nil {
					if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						opt.Logger.Warn().Err(err).Msg("consume: next message")
						if ctx.Err() == nil {
							continue
						}
					}
					return
				}
				if ctx.Err() != nil {
					// Stopping: hand back what was fetched but not started.
					_ = m.Nak()
					continue
				}
				handler(work, m)
			}
		})
	}
	<-ctx.Done()
	it.Drain()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	stop := opt.StopTimeout
	if stop <= 0 {
		stop = 8 * time.Second
	}
	select {
	case <-done:
	case <-time.After(stop):
		opt.Logger.Warn().Msg("consume: stop deadline reached, cancelling in-flight handlers")
		cancelWork()
		<-done
	}
	return nil
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
