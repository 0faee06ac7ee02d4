package vendorhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/vendorhook"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

var (
	testKey    = []byte("0123456789abcdef0123456789abcdef")
	testSecret = "whsec_" + base64.StdEncoding.EncodeToString(testKey)
)

// triggers records Trigger calls and answers them from a script.
type triggers struct {
	calls chan string
	mu    sync.Mutex
	fn    func(ctx context.Context, batchID string) error
}

func newTriggers() *triggers { return &triggers{calls: make(chan string, 100)} }

// answer sets what the next calls return (nil fn: success).
func (tr *triggers) answer(fn func(ctx context.Context, batchID string) error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.fn = fn
}

func (tr *triggers) trigger(ctx context.Context, batchID string) error {
	tr.calls <- batchID
	tr.mu.Lock()
	fn := tr.fn
	tr.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(ctx, batchID)
}

// none asserts that Trigger has not been called (beyond those already read).
func (tr *triggers) none(t *testing.T) {
	t.Helper()
	select {
	case id := <-tr.calls:
		t.Fatalf("unexpected Trigger(%q)", id)
	default:
	}
}

type harness struct {
	redis *fleettest.Redis
	rdb   *redis.Client
	tr    *triggers
	rcv   *vendorhook.Receiver
	srv   *httptest.Server
}

func newHarness(t *testing.T, cfg vendorhook.Config) *harness {
	t.Helper()
	r := fleettest.StartRedis(t)
	h := &harness{redis: r, rdb: r.Client(t), tr: newTriggers()}
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	rcv, err := vendorhook.New(vendorhook.Deps{Redis: h.rdb, Trigger: h.tr.trigger}, cfg)
	require.NoError(t, err)
	h.rcv = rcv
	h.srv = httptest.NewServer(rcv.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

// sign returns Standard Webhooks headers: "v1," +
// base64(HMAC-SHA256(key, id+"."+ts+"."+body)), computed here and not with
// the code under test.
func sign(key []byte, id string, ts time.Time, body []byte) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + t + "."))
	m.Write(body)
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", t)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return h
}

func event(typ, batchID string) []byte {
	return fmt.Appendf(nil, `{"id":"evt_%d","object":"event","created_at":%d,"type":%q,"data":{"id":%q}}`,
		time.Now().UnixNano(), time.Now().Unix(), typ, batchID)
}

type answer struct {
	code int
	body map[string]string
}

func post(t *testing.T, url string, header http.Header, body []byte) answer {
	t.Helper()
	return do(t, http.MethodPost, url, header, body)
}

func do(t *testing.T, method, url string, header http.Header, body []byte) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{code: resp.StatusCode}
	if len(raw) > 0 {
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"), string(raw))
		require.NoError(t, json.Unmarshal(raw, &a.body), string(raw))
	}
	require.NotContains(t, string(raw), testSecret)
	require.NotContains(t, string(raw), base64.StdEncoding.EncodeToString(testKey))
	return a
}

// deliver sends a fresh, correctly signed delivery of body as webhook-id id,
// the way the vendor sends each (re)delivery.
func (h *harness) deliver(t *testing.T, id string, body []byte) answer {
	t.Helper()
	return post(t, h.srv.URL+vendorhook.Path, sign(testKey, id, time.Now(), body), body)
}

func (h *harness) key(t *testing.T, id string) (string, time.Duration) {
	t.Helper()
	v, err := h.rdb.Get(context.Background(), vendorhook.KeyPrefix+id).Result()
	if errors.Is(err, redis.Nil) {
		return "", 0
	}
	require.NoError(t, err)
	ttl, err := h.rdb.TTL(context.Background(), vendorhook.KeyPrefix+id).Result()
	require.NoError(t, err)
	return v, ttl
}

func TestValidWebhookTriggersOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	body := event("batch.completed", "batch_ok")

	a := h.deliver(t, "msg_valid", body)
	require.Equal(t, http.StatusOK, a.code, a.body)
	require.Equal(t, "processed", a.body["status"])
	require.Equal(t, []string{"batch_ok"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
	v, ttl := h.key(t, "msg_valid")
	require.Equal(t, "1", v)
	require.InDelta(t, (24 * time.Hour).Seconds(), ttl.Seconds(), 60)

	// The vendor redelivers (same webhook-id, fresh timestamp and signature).
	a = h.deliver(t, "msg_valid", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "duplicate", a.body["status"])
	h.tr.none(t)

	// Another webhook-id for the same batch is a new delivery.
	a = h.deliver(t, "msg_other", event("batch.completed", "batch_ok"))
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, []string{"batch_ok"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
}

func TestAllBatchEventTypesTrigger(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	for i, typ := range []string{"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"} {
		a := h.deliver(t, fmt.Sprintf("msg_type_%d", i), event(typ, "batch_"+typ))
		require.Equal(t, http.StatusOK, a.code, typ)
		require.Equal(t, []string{"batch_" + typ}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
	}
}

func TestOtherEventTypesIgnored(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	a := h.deliver(t, "msg_ft", event("fine_tuning.job.succeeded", "ftjob_1"))
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "ignored", a.body["status"])
	h.tr.none(t)
	v, _ := h.key(t, "msg_ft")
	require.Empty(t, v, "nothing to de-duplicate")
}

func TestRejectsBadSignatureAndTimestamp(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	body := event("batch.completed", "batch_abc")
	url := h.srv.URL + vendorhook.Path
	otherKey := []byte("another-secret-of-32-bytes-long!")
	tests := []struct {
		name   string
		header http.Header
		body   []byte
	}{
		{"tampered body", sign(testKey, "msg_t1", time.Now(), body), bytes.Replace(body, []byte("batch_abc"), []byte("batch_xyz"), 1)},
		{"other secret", sign(otherKey, "msg_t2", time.Now(), body), body},
		{"no signature", func() http.Header {
			h := sign(testKey, "msg_t3", time.Now(), body)
			h.Del("webhook-signature")
			return h
		}(), body},
		{"no headers", http.Header{}, body},
		{"timestamp 10 min old", sign(testKey, "msg_t4", time.Now().Add(-10*time.Minute), body), body},
		{"timestamp 10 min ahead", sign(testKey, "msg_t5", time.Now().Add(10*time.Minute), body), body},
		{"signed garbage", sign(testKey, "msg_t6", time.Now(), []byte("garbage")), []byte("garbage")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := post(t, url, tt.header, tt.body)
			require.Equal(t, http.StatusBadRequest, a.code)
			require.NotEmpty(t, a.body["error"])
		})
	}
	h.tr.none(t)
	keys, err := h.rdb.Keys(context.Background(), vendorhook.KeyPrefix+"*").Result()
	require.NoError(t, err)
	require.Empty(t, keys, "a rejected delivery must not be remembered")

	// The rejected ids are not poisoned: a genuine delivery still works.
	a := h.deliver(t, "msg_t1", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, []string{"batch_abc"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
}

func TestTriggerFailureLetsRedeliveryRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	h.tr.answer(func(context.Context, string) error { return errors.New("nats: timeout") })
	body := event("batch.failed", "batch_retry")

	a := h.deliver(t, "msg_retry", body)
	require.Equal(t, http.StatusInternalServerError, a.code)
	require.NotContains(t, a.body["error"], "nats", "internal errors stay in the log")
	require.Equal(t, []string{"batch_retry"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
	v, _ := h.key(t, "msg_retry")
	require.Empty(t, v, "a failed trigger must not be remembered")

	h.tr.answer(nil)
	a = h.deliver(t, "msg_retry", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, []string{"batch_retry"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))

	a = h.deliver(t, "msg_retry", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "duplicate", a.body["status"])
	h.tr.none(t)
}

func TestUnknownBatchAcknowledged(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	h.tr.answer(func(_ context.Context, id string) error {
		return fmt.Errorf("poll %s: %w", id, vendorhook.ErrUnknownBatch)
	})
	body := event("batch.completed", "batch_foreign")
	a := h.deliver(t, "msg_unknown", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "ignored", a.body["status"])
	require.Equal(t, []string{"batch_foreign"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))

	a = h.deliver(t, "msg_unknown", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "duplicate", a.body["status"])
	h.tr.none(t)
}

func TestOversizedBody(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{MaxBody: 1024})
	pad := strings.Repeat("x", 2048)
	body := fmt.Appendf(nil, `{"id":"evt_big","object":"event","created_at":%d,"type":"batch.completed","data":{"id":"batch_big","pad":%q}}`, time.Now().Unix(), pad)
	a := h.deliver(t, "msg_big", body)
	require.Equal(t, http.StatusRequestEntityTooLarge, a.code)

	// Without Content-Length (chunked) too.
	req, err := http.NewRequest(http.MethodPost, h.srv.URL+vendorhook.Path, io.MultiReader(bytes.NewReader(body)))
	require.NoError(t, err)
	req.ContentLength = -1
	for k, v := range sign(testKey, "msg_big", time.Now(), body) {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	h.tr.none(t)

	// Exactly MaxBody is fine.
	prefix := fmt.Sprintf(`{"id":"evt_fits","object":"event","created_at":%d,"type":"batch.completed","data":{"id":"batch_fits","pad":"`, time.Now().Unix())
	body = []byte(prefix + strings.Repeat("y", 1024-len(prefix)-len(`"}}`)) + `"}}`)
	require.Len(t, body, 1024)
	a = h.deliver(t, "msg_fits", body)
	require.Equal(t, http.StatusOK, a.code, a.body)
	require.Equal(t, []string{"batch_fits"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
}

func TestWrongMethod(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		req, err := http.NewRequest(m, h.srv.URL+vendorhook.Path, nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode, m)
		require.Equal(t, http.MethodPost, resp.Header.Get("Allow"))
	}
	h.tr.none(t)
}

func TestHealthz(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	resp, err := http.Get(h.srv.URL + "/healthz")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "ok\n", string(b))
}

func TestConcurrentDeliveryOfSameIDWaits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	release := make(chan struct{})
	h.tr.answer(func(ctx context.Context, _ string) error {
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	body := event("batch.completed", "batch_slow")
	first := make(chan answer, 1)
	go func() { first <- h.deliver(t, "msg_slow", body) }()
	require.Equal(t, []string{"batch_slow"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))

	// While the first delivery is being processed, a redelivery is told to
	// come back later rather than acknowledged (the first may still fail).
	a := h.deliver(t, "msg_slow", body)
	require.Equal(t, http.StatusConflict, a.code)
	h.tr.none(t)

	close(release)
	require.Equal(t, http.StatusOK, fleettest.ReadN(t, first, 1, 5*time.Second)[0].code)
	a = h.deliver(t, "msg_slow", body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, "duplicate", a.body["status"])
	h.tr.none(t)
}

func TestRedisDownStillTriggers(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{})
	h.redis.Kill()
	a := h.deliver(t, "msg_noredis", event("batch.expired", "batch_noredis"))
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, []string{"batch_noredis"}, fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second))
}

func TestTriggerTimeout(t *testing.T) {
	t.Parallel()
	h := newHarness(t, vendorhook.Config{TriggerTimeout: 50 * time.Millisecond})
	h.tr.answer(func(ctx context.Context, _ string) error {
		<-ctx.Done()
		return ctx.Err()
	})
	body := event("batch.completed", "batch_hang")
	a := h.deliver(t, "msg_hang", body)
	require.Equal(t, http.StatusInternalServerError, a.code)
	fleettest.ReadN(t, h.tr.calls, 1, 5*time.Second)
	v, _ := h.key(t, "msg_hang")
	require.Empty(t, v)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	trigger := func(context.Context, string) error { return nil }
	badSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("too-short"))
	tests := []struct {
		name string
		deps vendorhook.Deps
		cfg  vendorhook.Config
		want string
	}{
		{"no redis", vendorhook.Deps{Trigger: trigger}, vendorhook.Config{Secret: testSecret}, "Redis"},
		{"no trigger", vendorhook.Deps{Redis: rdb}, vendorhook.Config{Secret: testSecret}, "Trigger"},
		{"no secret", vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{}, "OPENAI_WEBHOOK_SECRET"},
		{"short secret", vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{Secret: badSecret}, "OPENAI_WEBHOOK_SECRET"},
		{"not base64", vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{Secret: "whsec_%%%"}, "OPENAI_WEBHOOK_SECRET"},
		{"negative tolerance", vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{Secret: testSecret, Tolerance: -time.Second}, "Tolerance"},
		{"negative max body", vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{Secret: testSecret, MaxBody: -1}, "MaxBody"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := vendorhook.New(tt.deps, tt.cfg)
			require.ErrorContains(t, err, tt.want)
			require.NotContains(t, err.Error(), "too-short")
			require.NotContains(t, err.Error(), base64.StdEncoding.EncodeToString([]byte("too-short")))
		})
	}
	_, err := vendorhook.New(vendorhook.Deps{Redis: rdb, Trigger: trigger}, vendorhook.Config{Secret: testSecret})
	require.NoError(t, err)
}

func TestTimestampCheckedAgainstInjectedClock(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	tr := newTriggers()
	past := time.Now().Add(-time.Hour)
	rcv, err := vendorhook.New(vendorhook.Deps{Redis: r.Client(t), Trigger: tr.trigger, Now: func() time.Time { return past }},
		vendorhook.Config{Secret: testSecret})
	require.NoError(t, err)
	srv := httptest.NewServer(rcv.Handler())
	t.Cleanup(srv.Close)

	body := event("batch.completed", "batch_clock")
	a := post(t, srv.URL+vendorhook.Path, sign(testKey, "msg_clock1", time.Now(), body), body)
	require.Equal(t, http.StatusBadRequest, a.code, "an hour ahead of the receiver's clock")
	a = post(t, srv.URL+vendorhook.Path, sign(testKey, "msg_clock2", past.Add(-4*time.Minute), body), body)
	require.Equal(t, http.StatusOK, a.code)
	require.Equal(t, []string{"batch_clock"}, fleettest.ReadN(t, tr.calls, 1, 5*time.Second))
}
