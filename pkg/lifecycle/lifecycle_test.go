package lifecycle_test

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

func env(t *testing.T) func(string) (string, bool) {
	ns := fleettest.StartNATS(t)
	rd := fleettest.StartRedis(t)
	vars := map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": rd.URL(), "OPENAI_API_KEY": "sk-test",
		"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "STOP_TIMEOUT": "200ms",
	}
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

type runFunc func(ctx context.Context) error

func (f runFunc) Run(ctx context.Context) error { return f(ctx) }

// A worker that stops in time: Run returns only once the NATS connection
// has drained and closed, so the last acks and naks are not lost.
func TestRunDrainsBeforeReturning(t *testing.T) {
	var inf *lifecycle.Infra
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	started := make(chan struct{})
	lookup := env(t)
	go func() {
		errc <- lifecycle.Run(ctx, "test", lookup, io.Discard, func(_ context.Context, i *lifecycle.Infra) (lifecycle.Runner, error) {
			inf = i
			return runFunc(func(ctx context.Context) error {
				close(started)
				<-ctx.Done()
				return nil
			}), nil
		})
	}()
	<-started
	cancel()
	require.NoError(t, <-errc)
	require.True(t, inf.NC.IsClosed(), "Run returned before the NATS drain finished")
}

// A worker that ignores the stop: Run gives up after STOP_TIMEOUT + 2s and
// returns an error (the process exits through main, its deferred cleanup
// run) instead of calling os.Exit from a goroutine.
func TestRunStopDeadline(t *testing.T) {
	var inf *lifecycle.Infra
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	started := make(chan struct{})
	stuck := make(chan struct{})
	defer close(stuck)
	lookup := env(t)
	go func() {
		errc <- lifecycle.Run(ctx, "test", lookup, io.Discard, func(_ context.Context, i *lifecycle.Infra) (lifecycle.Runner, error) {
			inf = i
			return runFunc(func(context.Context) error {
				close(started)
				<-stuck
				return nil
			}), nil
		})
	}()
	<-started
	cancel()
	select {
	case err := <-errc:
		require.ErrorContains(t, err, "deadline exceeded")
	case <-time.After(20 * time.Second):
		t.Fatal("Run never gave up on a stuck worker")
	}
	require.True(t, inf.NC.IsClosed(), "cleanup ran")
}
