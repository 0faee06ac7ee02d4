package stream_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

func consumerConfig() jetstream.ConsumerConfig { return namedConsumer("workers", stream.SubjectSubmit) }

func namedConsumer(name, subject string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Durable: name, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, FilterSubject: subject}
}

func setup(t *testing.T) (jetstream.JetStream, jetstream.Consumer) {
	t.Helper()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := t.Context()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{}, stream.Work))
	c, err := stream.EnsureConsumer(ctx, js, stream.Work, consumerConfig())
	require.NoError(t, err)
	return js, c
}

func publishN(t *testing.T, js jetstream.JetStream, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		_, err := js.Publish(t.Context(), stream.SubjectSubmit, []byte(fmt.Sprint(i)))
		require.NoError(t, err)
	}
}

// Consume fetches only as many messages as it has free handlers: none
// waits in a buffer (without InProgress) while its ack wait runs out.
func TestConsumeFetchesOnlyForFreeHandlers(t *testing.T) {
	js, c := setup(t)
	publishN(t, js, 0, 20)
	release := make(chan struct{})
	var started atomic.Int32
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- stream.Consume(ctx, c, stream.ConsumeOptions{Concurrency: 3, Logger: zerolog.Nop()}, func(_ context.Context, m jetstream.Msg) {
			started.Add(1)
			<-release
			_ = m.Ack()
		})
	}()
	fleettest.WaitFor(t, 10*time.Second, func() bool { return started.Load() == 3 }, "3 handlers started")
	// Give a buffering consumer the time to pull more, then look.
	for range 5 {
		info, err := c.Info(t.Context())
		require.NoError(t, err)
		require.LessOrEqual(t, info.NumAckPending, 3, "messages delivered beyond the free handlers")
		time.Sleep(100 * time.Millisecond) // sampling, not synchronisation
	}
	close(release)
	fleettest.WaitFor(t, 10*time.Second, func() bool { return started.Load() == 20 }, "all 20 handled")
	cancel()
	require.NoError(t, <-done)
}

// A deleted consumer is recreated and consuming goes on; without Recreate
// the loop ends with ErrConsumerGone instead of idling forever.
func TestConsumeRecreatesDeletedConsumer(t *testing.T) {
	js, c := setup(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	handler := func(_ context.Context, m jetstream.Msg) {
		mu.Lock()
		seen[string(m.Data())] = true
		mu.Unlock()
		_ = m.Ack()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	opt := stream.ConsumeOptions{Concurrency: 2, Logger: zerolog.Nop(),
		Recreate: stream.Recreate(js, stream.Settings{}, stream.Work, consumerConfig())}
	go func() { done <- stream.Consume(ctx, c, opt, handler) }()
	publishN(t, js, 0, 5)
	fleettest.WaitFor(t, 10*time.Second, func() bool { return count() == 5 }, "first 5 handled")
	require.NoError(t, js.DeleteConsumer(t.Context(), stream.Work, "workers"))
	publishN(t, js, 5, 5)
	fleettest.WaitFor(t, 20*time.Second, func() bool { return count() == 10 }, "5 more handled after the consumer was deleted")
	cancel()
	require.NoError(t, <-done)

	// A consumer of its own (on another subject: one per subject on a work
	// queue): the server removes a deleted consumer's files asynchronously,
	// so reusing the name right away can race with that.
	c2, err := stream.EnsureConsumer(t.Context(), js, stream.Work, namedConsumer("others", stream.SubjectFinal))
	require.NoError(t, err)
	go func() {
		done <- stream.Consume(t.Context(), c2, stream.ConsumeOptions{Concurrency: 2, Logger: zerolog.Nop()}, handler)
	}()
	require.NoError(t, js.DeleteConsumer(t.Context(), stream.Work, "others"))
	select {
	case err := <-done:
		require.ErrorIs(t, err, stream.ErrConsumerGone)
	case <-time.After(20 * time.Second):
		t.Fatal("Consume went on without its consumer")
	}
}
