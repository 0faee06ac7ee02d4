package vendorhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/vendorhook"
)

// serve runs rcv.Serve(ctx, addr) on a free port and waits until /healthz
// answers. It returns the base URL and Serve's result.
func serve(t *testing.T, ctx context.Context, rcv *vendorhook.Receiver) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())

	done := make(chan error, 1)
	go func() { done <- rcv.Serve(ctx, addr) }()
	base := "http://" + addr
	fleettest.WaitFor(t, 5*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "Serve answering /healthz")
	return base, done
}

func TestServeFinishesRequestsInFlight(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	release := make(chan struct{})
	h.tr.answer(func(ctx context.Context, _ string) error {
		select {
		case <-release:
			return ctx.Err() // still live: shutdown waits, it does not cancel
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := serve(t, ctx, h.rcv)

	body := event("batch.completed", "batch_inflight")
	codes := make(chan int, 1)
	go func() {
		code, _ := send(base+vendorhook.Path, sign(testKey, "msg_inflight", time.Now(), body), body)
		codes <- code
	}()
	fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second)

	cancel()
	fleettest.WaitFor(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", base[len("http://"):])
		if err == nil {
			_ = c.Close()
		}
		return err != nil
	}, "listener closed after ctx is done")
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	default:
	}

	close(release)
	require.Equal(t, http.StatusOK, fleettest.ReadN(t, codes, 1, 5*time.Second)[0])
	require.NoError(t, fleettest.ReadN(t, done, 1, 5*time.Second)[0])
}

func TestServeShutdownTimeoutCancelsRequests(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{ShutdownTimeout: 100 * time.Millisecond})
	cancelled := make(chan error, 1)
	h.tr.answer(func(ctx context.Context, _ string) error {
		<-ctx.Done()
		cancelled <- ctx.Err()
		return ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := serve(t, ctx, h.rcv)

	body := event("batch.completed", "batch_stuck")
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		_, _ = send(base+vendorhook.Path, sign(testKey, "msg_stuck", time.Now(), body), body)
	}()
	fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second)

	start := time.Now()
	cancel()
	err := fleettest.ReadN(t, done, 1, 5*time.Second)[0]
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(start), 2*time.Second)
	require.ErrorIs(t, fleettest.ReadN(t, cancelled, 1, 5*time.Second)[0], context.Canceled)
	select {
	case <-sent:
	case <-time.After(5 * time.Second):
		t.Fatal("client request did not end after the forced shutdown")
	}
}

func TestServeListenError(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	err = h.rcv.Serve(context.Background(), l.Addr().String())
	require.ErrorContains(t, err, "VENDOR_WEBHOOK_ADDR")
	var opErr *net.OpError
	require.True(t, errors.As(err, &opErr), "%v", err)
}

// send posts body with header h and returns the status code; unlike post
// it may run outside the test goroutine.
func send(url string, h http.Header, body []byte) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}
