package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/webhook"
)

var (
	testKey    = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	testSecret = "whsec_" + base64.StdEncoding.EncodeToString(testKey)
	testNow    = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
)

// ownSignature is the test's own Standard Webhooks HMAC, written from the
// spec and not from the package: base64(HMAC-SHA256(key, id.ts.body)).
func ownSignature(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "." + string(body)))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// ownVerify is a receiver's check written in the test: any v1 entry must
// equal the test's own HMAC.
func ownVerify(key []byte, h http.Header, body []byte) bool {
	want := ownSignature(key, h.Get("webhook-id"), h.Get("webhook-timestamp"), body)
	for _, e := range strings.Fields(h.Get("webhook-signature")) {
		if v, ok := strings.CutPrefix(e, "v1,"); ok && hmac.Equal([]byte(v), []byte(want)) {
			return true
		}
	}
	return false
}

func TestSignMatchesOwnHMAC(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"batch.completed","timestamp":"2025-06-01T12:00:00Z","data":{"idempotency_key":"k"}}`)
	got := webhook.Sign(testKey, "k:completed", testNow, body)
	require.Equal(t, "v1,"+ownSignature(testKey, "k:completed", strconv.FormatInt(testNow.Unix(), 10), body), got)

	h := webhook.Headers(testKey, "k:completed", testNow, body)
	require.Equal(t, "k:completed", h.Get("webhook-id"))
	require.Equal(t, "1748779200", h.Get("webhook-timestamp"))
	require.True(t, ownVerify(testKey, h, body))
	require.False(t, ownVerify(testKey, h, append(body, ' ')))

	// Sub-second parts of ts do not change the signature: the header is seconds.
	require.Equal(t, got, webhook.Sign(testKey, "k:completed", testNow.Add(999*time.Millisecond), body))
}

func TestParseSecret(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     []byte
		wantErr  string
	}{
		{"whsec", testSecret, testKey, ""},
		{"raw", "my plain secret", []byte("my plain secret"), ""},
		{"raw looking like base64", "c2VjcmV0", []byte("c2VjcmV0"), ""},
		{"empty", "", nil, "empty"},
		{"whsec not base64", "whsec_!!!", nil, "not base64"},
		{"whsec unpadded", "whsec_" + base64.RawStdEncoding.EncodeToString(testKey), nil, "not base64"},
		{"whsec too short", "whsec_" + base64.StdEncoding.EncodeToString([]byte("short")), nil, "at least 24"},
		{"whsec empty", "whsec_", nil, "at least 24"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := webhook.ParseSecret(tt.in)
			if tt.wantErr != "" {
				require.ErrorIs(t, err, webhook.ErrInvalidSecret)
				require.ErrorContains(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	body := []byte(`{"type":"batch.retry","data":{}}`)
	signed := func(ts time.Time) http.Header { return webhook.Headers(testKey, "evt_1", ts, body) }
	without := func(name string) http.Header {
		h := signed(testNow)
		h.Del(name)
		return h
	}
	with := func(name, v string) http.Header {
		h := signed(testNow)
		h.Set(name, v)
		return h
	}
	goodSig := signed(testNow).Get("webhook-signature")
	tests := []struct {
		name      string
		secret    []byte
		h         http.Header
		body      []byte
		tolerance time.Duration
		want      error // nil = accepted
	}{
		{"valid", testKey, signed(testNow), body, 0, nil},
		{"4m59s old", testKey, signed(testNow.Add(-299 * time.Second)), body, 0, nil},
		{"exactly at tolerance, past", testKey, signed(testNow.Add(-5 * time.Minute)), body, 0, nil},
		{"exactly at tolerance, future", testKey, signed(testNow.Add(5 * time.Minute)), body, 0, nil},
		{"several signatures, one matches", testKey, with("webhook-signature", "v1,AAAA v2,xyz "+goodSig+" v1,bad!"), body, 0, nil},
		{"lower-case header names on the wire", testKey, http.Header{
			"webhook-id": {"evt_1"}, "webhook-timestamp": {strconv.FormatInt(testNow.Unix(), 10)}, "webhook-signature": {goodSig},
		}, body, 0, nil},
		{"tampered body", testKey, signed(testNow), []byte(`{"type":"batch.retry","data":{"x":1}}`), 0, webhook.ErrBadSignature},
		{"wrong secret", []byte("another secret of some length...."), signed(testNow), body, 0, webhook.ErrBadSignature},
		{"empty secret", nil, signed(testNow), body, 0, webhook.ErrBadSignature},
		{"other id", testKey, with("webhook-id", "evt_2"), body, 0, webhook.ErrBadSignature},
		{"other timestamp", testKey, with("webhook-timestamp", strconv.FormatInt(testNow.Unix()-1, 10)), body, 0, webhook.ErrBadSignature},
		{"signature without version", testKey, with("webhook-signature", strings.TrimPrefix(goodSig, "v1,")), body, 0, webhook.ErrBadSignature},
		{"v2 only", testKey, with("webhook-signature", "v2,"+strings.TrimPrefix(goodSig, "v1,")), body, 0, webhook.ErrBadSignature},
		{"timestamp not a number", testKey, with("webhook-timestamp", "2025-06-01T12:00:00Z"), body, 0, webhook.ErrBadSignature},
		{"6 minutes old", testKey, signed(testNow.Add(-6 * time.Minute)), body, 0, webhook.ErrTimestampOutsideTolerance},
		{"6 minutes in the future", testKey, signed(testNow.Add(6 * time.Minute)), body, 0, webhook.ErrTimestampOutsideTolerance},
		{"custom tolerance", testKey, signed(testNow.Add(-2 * time.Minute)), body, time.Minute, webhook.ErrTimestampOutsideTolerance},
		{"missing id", testKey, without("webhook-id"), body, 0, webhook.ErrMissingHeaders},
		{"missing timestamp", testKey, without("webhook-timestamp"), body, 0, webhook.ErrMissingHeaders},
		{"missing signature", testKey, without("webhook-signature"), body, 0, webhook.ErrMissingHeaders},
		{"no headers", testKey, http.Header{}, body, 0, webhook.ErrMissingHeaders},
		{"nil headers", testKey, nil, body, 0, webhook.ErrMissingHeaders},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := webhook.Verify(tt.secret, tt.h, tt.body, tt.tolerance, testNow)
			if tt.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tt.want)
		})
	}
}
