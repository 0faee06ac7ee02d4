package batchapi_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

var (
	testKey    = []byte("0123456789abcdef0123456789abcdef")
	testSecret = "whsec_" + base64.StdEncoding.EncodeToString(testKey)
	otherKey   = []byte("another-secret-of-32-bytes-long!")
	testNow    = time.Unix(1_750_000_000, 0)
)

// sign returns Standard Webhooks headers for body: the signature is
// "v1," + base64(HMAC-SHA256(key, id+"."+ts+"."+body)), computed here
// independently of openai-go.
func sign(key []byte, id string, ts time.Time, body []byte) http.Header {
	t := strconv.FormatInt(ts.Unix(), 10)
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + t + "."))
	m.Write(body)
	h := http.Header{}
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", t)
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	return h
}

func eventBody(typ, dataID string) []byte {
	return fmt.Appendf(nil, `{"id":"evt_685343a1381c819085d44c354e1b330e","object":"event","created_at":%d,"type":%q,"data":{"id":%q}}`,
		testNow.Add(-time.Second).Unix(), typ, dataID)
}

func TestVerifyWebhookBatchEvents(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			body := eventBody(typ, "batch_abc123")
			got, err := batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_1", testNow, body), 5*time.Minute, testNow)
			require.NoError(t, err)
			want := batchapi.WebhookEvent{
				ID: "evt_685343a1381c819085d44c354e1b330e", Type: typ, BatchID: "batch_abc123",
				CreatedAt: testNow.Add(-time.Second),
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("event (-want +got):\n%s", diff)
			}
		})
	}
}

func TestVerifyWebhookOtherTypeHasNoBatchID(t *testing.T) {
	t.Parallel()
	body := eventBody("response.completed", "resp_1")
	got, err := batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_2", testNow, body), 0, testNow)
	require.NoError(t, err)
	require.Equal(t, "response.completed", got.Type)
	require.Empty(t, got.BatchID)

	body = []byte(`{"id":"evt_x","object":"event","created_at":1,"type":"something.new","data":{"foo":1}}`)
	got, err = batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_3", testNow, body), 0, testNow)
	require.NoError(t, err)
	require.Equal(t, "something.new", got.Type)
	require.Empty(t, got.BatchID)
}

func TestVerifyWebhookRawSecret(t *testing.T) {
	t.Parallel()
	// A secret without "whsec_" is used as raw bytes, as openai-go does.
	raw := "a-raw-secret-without-prefix"
	body := eventBody("batch.completed", "batch_raw")
	got, err := batchapi.VerifyWebhook(raw, body, sign([]byte(raw), "wh_raw", testNow, body), 0, testNow)
	require.NoError(t, err)
	require.Equal(t, "batch_raw", got.BatchID)
}

func TestVerifyWebhookRejects(t *testing.T) {
	t.Parallel()
	body := eventBody("batch.completed", "batch_abc123")
	valid := func() http.Header { return sign(testKey, "wh_1", testNow, body) }
	without := func(name string) http.Header { h := valid(); h.Del(name); return h }
	tests := []struct {
		name    string
		body    []byte
		header  http.Header
		now     time.Time
		wantErr error
	}{
		{"tampered body", []byte(strings.Replace(string(body), "batch_abc123", "batch_forged", 1)), valid(), testNow, batchapi.ErrWebhookSignature},
		{"other secret", body, sign(otherKey, "wh_1", testNow, body), testNow, batchapi.ErrWebhookSignature},
		{"webhook-id changed", body, func() http.Header { h := valid(); h.Set("webhook-id", "wh_2"); return h }(), testNow, batchapi.ErrWebhookSignature},
		{"no signature", body, without("webhook-signature"), testNow, batchapi.ErrWebhookSignature},
		{"no timestamp", body, without("webhook-timestamp"), testNow, batchapi.ErrWebhookSignature},
		{"no webhook-id", body, without("webhook-id"), testNow, batchapi.ErrWebhookSignature},
		{"no headers", body, nil, testNow, batchapi.ErrWebhookSignature},
		{"signature not base64 of the mac", body, func() http.Header { h := valid(); h.Set("webhook-signature", "v1,AAAA"); return h }(), testNow, batchapi.ErrWebhookSignature},
		{"timestamp not a number", body, func() http.Header { h := valid(); h.Set("webhook-timestamp", "yesterday"); return h }(), testNow, batchapi.ErrWebhookSignature},
		{"timestamp 10 min old", body, sign(testKey, "wh_1", testNow.Add(-10*time.Minute), body), testNow, batchapi.ErrWebhookSignature},
		{"timestamp 10 min ahead", body, sign(testKey, "wh_1", testNow.Add(10*time.Minute), body), testNow, batchapi.ErrWebhookSignature},
		{"signed body not JSON", []byte("not json"), sign(testKey, "wh_1", testNow, []byte("not json")), testNow, batchapi.ErrWebhookPayload},
		{"signed batch event without data.id", []byte(`{"id":"evt_1","object":"event","created_at":1,"type":"batch.completed","data":{}}`),
			sign(testKey, "wh_1", testNow, []byte(`{"id":"evt_1","object":"event","created_at":1,"type":"batch.completed","data":{}}`)), testNow, batchapi.ErrWebhookPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := batchapi.VerifyWebhook(testSecret, tt.body, tt.header, 5*time.Minute, tt.now)
			require.ErrorIs(t, err, tt.wantErr)
			require.NotContains(t, err.Error(), testSecret)
		})
	}
}

func TestVerifyWebhookTolerance(t *testing.T) {
	t.Parallel()
	body := eventBody("batch.completed", "batch_abc123")
	for _, age := range []time.Duration{-4 * time.Minute, 0, 4 * time.Minute, 5 * time.Minute} {
		_, err := batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_1", testNow.Add(-age), body), 5*time.Minute, testNow)
		require.NoError(t, err, "age %s", age)
	}
	_, err := batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_1", testNow.Add(-5*time.Minute-time.Second), body), 5*time.Minute, testNow)
	require.ErrorIs(t, err, batchapi.ErrWebhookSignature)
	// A tolerance <= 0 means the 5-minute default, not "no tolerance".
	_, err = batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_1", testNow.Add(-4*time.Minute), body), 0, testNow)
	require.NoError(t, err)
	_, err = batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_1", testNow.Add(-6*time.Minute), body), 0, testNow)
	require.ErrorIs(t, err, batchapi.ErrWebhookSignature)
}

func TestVerifyWebhookRotationHeaderWithTwoSignatures(t *testing.T) {
	t.Parallel()
	// During a secret rotation the header carries one signature per secret.
	body := eventBody("batch.failed", "batch_rot")
	h := sign(testKey, "wh_rot", testNow, body)
	old := sign(otherKey, "wh_rot", testNow, body).Get("webhook-signature")
	h.Set("webhook-signature", old+" "+h.Get("webhook-signature"))
	got, err := batchapi.VerifyWebhook(testSecret, body, h, 0, testNow)
	require.NoError(t, err)
	require.Equal(t, "batch_rot", got.BatchID)
}

func TestVerifyWebhookBadSecretIsNotASignatureError(t *testing.T) {
	t.Parallel()
	body := eventBody("batch.completed", "batch_abc123")
	for _, secret := range []string{"", "whsec_not base64!", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short"))} {
		_, err := batchapi.VerifyWebhook(secret, body, sign(testKey, "wh_1", testNow, body), 0, testNow)
		require.Error(t, err)
		require.False(t, errors.Is(err, batchapi.ErrWebhookSignature), "secret %q: %v", secret, err)
		require.Error(t, batchapi.ValidateWebhookSecret(secret))
		if secret != "" {
			require.NotContains(t, err.Error(), secret)
		}
	}
	require.NoError(t, batchapi.ValidateWebhookSecret(testSecret))
	require.NoError(t, batchapi.ValidateWebhookSecret("raw-bytes"))
}

// FuzzVerifyWebhook: any correctly signed body either decodes to an event
// (a batch event always with its batch id) or is ErrWebhookPayload, never a
// signature error and never a panic.
func FuzzVerifyWebhook(f *testing.F) {
	f.Add(eventBody("batch.completed", "batch_1"))
	f.Add(eventBody("batch.expired", ""))
	f.Add([]byte(`{"type":"batch.failed","data":{"id":42}}`))
	f.Add([]byte(`{"type":"fine_tuning.job.succeeded","data":{"id":"ftjob_1"}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, body []byte) {
		ev, err := batchapi.VerifyWebhook(testSecret, body, sign(testKey, "wh_f", testNow, body), 0, testNow)
		if err != nil {
			if !errors.Is(err, batchapi.ErrWebhookPayload) {
				t.Fatalf("signed body %q: %v", body, err)
			}
			return
		}
		switch ev.Type {
		case "batch.completed", "batch.failed", "batch.expired", "batch.cancelled":
			if ev.BatchID == "" {
				t.Fatalf("batch event without batch id: %q", body)
			}
		default:
			if ev.BatchID != "" {
				t.Fatalf("non-batch event %q with batch id %q", ev.Type, ev.BatchID)
			}
		}
	})
}
