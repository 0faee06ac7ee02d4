package webhook_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/webhook"
)

type delivery struct {
	header http.Header
	body   []byte
	ok     bool // the test's own HMAC check passed
}

// receiver is an httptest server that checks deliveries with the test's own
// HMAC code, records them and answers status (with extra headers).
func receiver(t *testing.T, status int, extra http.Header) (*httptest.Server, <-chan delivery) {
	t.Helper()
	got := make(chan delivery, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil || r.Method != http.MethodPost {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		got <- delivery{header: r.Header.Clone(), body: body, ok: ownVerify(testKey, r.Header, body)}
		for k, v := range extra {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"ignored":true}`)
	}))
	t.Cleanup(srv.Close)
	return srv, got
}

func fixedClock() time.Time { return testNow }

func TestSendOK(t *testing.T) {
	t.Parallel()
	srv, got := receiver(t, http.StatusOK, nil)
	s := &webhook.Sender{Client: srv.Client(), Secret: testKey, Clock: fixedClock}
	body := []byte(`{"type":"batch.completed","timestamp":"2025-06-01T12:00:00Z","data":{"idempotency_key":"k"}}`)
	require.NoError(t, s.Send(t.Context(), srv.URL+"/hook", "k:completed", body))

	d := <-got
	require.True(t, d.ok, "the receiver's own HMAC check")
	require.Equal(t, body, d.body)
	require.Equal(t, "application/json", d.header.Get("Content-Type"))
	require.Equal(t, "batchfleet-webhook/1", d.header.Get("User-Agent"))
	require.Equal(t, "k:completed", d.header.Get("webhook-id"))
	require.Equal(t, "1748779200", d.header.Get("webhook-timestamp"))
	require.NoError(t, webhook.Verify(testKey, d.header, d.body, 0, testNow))

	// Every 2xx acknowledges.
	srv202, _ := receiver(t, http.StatusAccepted, nil)
	require.NoError(t, s.Send(t.Context(), srv202.URL, "k:completed", body))
}

func TestSendDefaultClient(t *testing.T) {
	t.Cleanup(webhook.CloseDefaultIdle) // after the servers' Close (LIFO)
	srv, got := receiver(t, http.StatusNoContent, nil)
	s := &webhook.Sender{Secret: testKey}
	require.NoError(t, s.Send(t.Context(), srv.URL, "id-1", []byte(`{}`)))
	d := <-got
	require.True(t, d.ok)
	// The default Clock is the wall clock.
	require.NoError(t, webhook.Verify(testKey, d.header, d.body, 0, time.Now()))

	// Redirects are not followed: a 3xx is a failed delivery.
	target, hits := receiver(t, http.StatusOK, nil)
	redirect := httptest.NewServer(http.RedirectHandler(target.URL, http.StatusFound))
	t.Cleanup(redirect.Close)
	err := s.Send(t.Context(), redirect.URL, "id-2", []byte(`{}`))
	var de *webhook.DeliveryError
	require.ErrorAs(t, err, &de)
	require.Equal(t, http.StatusFound, de.StatusCode)
	require.Empty(t, hits)
}

func TestSendFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		extra      http.Header
		retryAfter time.Duration
	}{
		{"500", http.StatusInternalServerError, nil, 0},
		{"400", http.StatusBadRequest, nil, 0},
		{"429 with seconds", http.StatusTooManyRequests, http.Header{"Retry-After": {"7"}}, 7 * time.Second},
		{"503 with a date", http.StatusServiceUnavailable, http.Header{"Retry-After": {testNow.Add(90 * time.Second).Format(http.TimeFormat)}}, 90 * time.Second},
		{"503 with a past date", http.StatusServiceUnavailable, http.Header{"Retry-After": {testNow.Add(-time.Hour).Format(http.TimeFormat)}}, 0},
		{"503 with garbage", http.StatusServiceUnavailable, http.Header{"Retry-After": {"soon"}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, got := receiver(t, tt.status, tt.extra)
			s := &webhook.Sender{Client: srv.Client(), Secret: testKey, Clock: fixedClock}
			err := s.Send(t.Context(), srv.URL, "id", []byte(`{}`))
			require.ErrorIs(t, err, webhook.ErrDelivery)
			var de *webhook.DeliveryError
			require.ErrorAs(t, err, &de)
			require.Equal(t, tt.status, de.StatusCode)
			require.Equal(t, tt.retryAfter, de.RetryAfter)
			require.NoError(t, de.Err)
			require.True(t, (<-got).ok)
		})
	}
}

func TestSendTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // never answers in time
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: unblocks the handler before Close waits for it

	s := &webhook.Sender{Client: srv.Client(), Secret: testKey, Timeout: 200 * time.Millisecond}
	start := time.Now()
	err := s.Send(t.Context(), srv.URL, "id", []byte(`{}`))
	elapsed := time.Since(start)
	var de *webhook.DeliveryError
	require.ErrorAs(t, err, &de)
	require.Zero(t, de.StatusCode)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.GreaterOrEqual(t, elapsed, 200*time.Millisecond)
	require.Less(t, elapsed, 5*time.Second)

	// The caller's context ending is reported the same way, with its cause.
	ctx, cancel := context.WithCancel(t.Context())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	err = (&webhook.Sender{Client: srv.Client(), Secret: testKey}).Send(ctx, srv.URL, "id", []byte(`{}`))
	require.ErrorIs(t, err, webhook.ErrDelivery)
	require.ErrorIs(t, err, context.Canceled)
}

func TestSendNoServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	err = (&webhook.Sender{Client: client, Secret: testKey}).Send(t.Context(), "http://"+addr+"/", "id", []byte(`{}`))
	var de *webhook.DeliveryError
	require.ErrorAs(t, err, &de)
	require.Zero(t, de.StatusCode)
	require.Error(t, de.Err)
	require.Contains(t, de.Error(), "webhook: delivery failed: ")
}

func TestSendMisconfigured(t *testing.T) {
	t.Parallel()
	var de *webhook.DeliveryError
	err := (&webhook.Sender{}).Send(t.Context(), "http://127.0.0.1:1/", "id", nil)
	require.ErrorContains(t, err, "no secret")
	require.False(t, errors.As(err, &de))
	err = (&webhook.Sender{Secret: testKey}).Send(t.Context(), "", "id", nil)
	require.ErrorContains(t, err, "url and an id")
	err = (&webhook.Sender{Secret: testKey}).Send(t.Context(), "http://127.0.0.1:1/", "", nil)
	require.ErrorContains(t, err, "url and an id")
	err = (&webhook.Sender{Secret: testKey}).Send(t.Context(), "://bad", "id", nil)
	require.ErrorContains(t, err, "new request")
}

func TestDeliveryErrorText(t *testing.T) {
	t.Parallel()
	require.Equal(t, "webhook: delivery failed: status 503, retry after 7s",
		(&webhook.DeliveryError{StatusCode: 503, RetryAfter: 7 * time.Second}).Error())
	require.Equal(t, "webhook: delivery failed: status 500", (&webhook.DeliveryError{StatusCode: 500}).Error())
}
