package emulator_test

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

type delivery struct {
	body    []byte
	headers http.Header
}

// receiver records webhook deliveries; it answers 500 to the first attempt
// of every webhook-id, so each event must be retried to arrive.
type receiver struct {
	mu       sync.Mutex
	attempts map[string]int
	accepted []delivery
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	id := r.Header.Get("webhook-id")
	rc.attempts[id]++
	if rc.attempts[id] == 1 {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	rc.accepted = append(rc.accepted, delivery{body: body, headers: r.Header.Clone()})
}

func (rc *receiver) deliveries() []delivery {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]delivery(nil), rc.accepted...)
}

func TestWebhooksVerifyWithOpenAIGo(t *testing.T) {
	t.Parallel()
	rc := &receiver{attempts: map[string]int{}}
	hookSrv := httptest.NewServer(rc)
	t.Cleanup(hookSrv.Close)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

	cfg := fast()
	cfg.ExpireAfter = 2 * time.Second
	cfg.WebhookURL = hookSrv.URL
	cfg.WebhookSecret = secret
	cfg.WebhookBackoff = 10 * time.Millisecond
	h := start(t, cfg)

	completed := h.submit(t, chatLine("ok", "m"))
	failed := h.submit(t, `{"custom_id":`)
	expired := h.submit(t, chatLine("x-never-finish", "m"))
	cancelled := h.submit(t, chatLine("ok", "m"))
	_, err := h.client.Batches.Cancel(context.Background(), cancelled.ID)
	require.NoError(t, err)

	want := map[string]string{
		completed.ID: "batch.completed",
		failed.ID:    "batch.failed",
		expired.ID:   "batch.expired",
		cancelled.ID: "batch.cancelled",
	}
	eventually(t, "four webhooks", func() bool { return len(rc.deliveries()) >= len(want) })

	got := map[string]string{}
	for _, d := range rc.deliveries() {
		require.True(t, strings.HasPrefix(d.headers.Get("webhook-signature"), "v1,"))
		ev, err := h.client.Webhooks.Unwrap(d.body, d.headers, option.WithWebhookSecret(secret))
		require.NoError(t, err, string(d.body))
		_, err = h.client.Webhooks.UnwrapWithTolerance(d.body, d.headers, time.Minute, option.WithWebhookSecret(secret))
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(ev.ID, "evt_"), ev.ID)
		require.Equal(t, "event", string(ev.Object))
		require.NotZero(t, ev.CreatedAt)
		var batchID string
		switch ev.Type {
		case "batch.completed":
			batchID = ev.AsBatchCompleted().Data.ID
		case "batch.failed":
			batchID = ev.AsBatchFailed().Data.ID
		case "batch.expired":
			batchID = ev.AsBatchExpired().Data.ID
		case "batch.cancelled":
			batchID = ev.AsBatchCancelled().Data.ID
		default:
			t.Fatalf("unexpected event type %q", ev.Type)
		}
		require.NotContains(t, got, batchID, "one event per batch")
		got[batchID] = ev.Type

		// A tampered body or another secret must not verify.
		tampered := []byte(strings.Replace(string(d.body), batchID, "batch_forged", 1))
		_, err = h.client.Webhooks.Unwrap(tampered, d.headers, option.WithWebhookSecret(secret))
		require.Error(t, err)
		other := "whsec_" + base64.StdEncoding.EncodeToString([]byte("another-secret-of-32-bytes-long!"))
		_, err = h.client.Webhooks.Unwrap(d.body, d.headers, option.WithWebhookSecret(other))
		require.Error(t, err)
	}
	require.Equal(t, want, got)

	rc.mu.Lock()
	defer rc.mu.Unlock()
	for id, n := range rc.attempts {
		require.Equal(t, 2, n, "webhook %s: one failed attempt, one retry", id)
	}
}
