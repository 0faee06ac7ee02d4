package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

// serveMsg runs one Anthropic API request through the handler.
func serveMsg(t testing.TB, e *Emulator, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("X-Api-Key", "k")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec.Code, rec.Header(), rec.Body.Bytes()
}

func msgBody(ids ...string) string {
	reqs := make([]string, len(ids))
	for i, id := range ids {
		reqs[i] = fmt.Sprintf(`{"custom_id":%q,"params":{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}}`, id)
	}
	return `{"requests":[` + strings.Join(reqs, ",") + `]}`
}

func createMsg(t *testing.T, e *Emulator, ids ...string) msgBatchJSON {
	t.Helper()
	code, _, body := serveMsg(t, e, http.MethodPost, "/v1/messages/batches", msgBody(ids...))
	require.Equal(t, http.StatusOK, code, string(body))
	var b msgBatchJSON
	require.NoError(t, json.Unmarshal(body, &b))
	return b
}

func getMsg(t *testing.T, e *Emulator, id string) msgBatchJSON {
	t.Helper()
	code, _, body := serveMsg(t, e, http.MethodGet, "/v1/messages/batches/"+id, "")
	require.Equal(t, http.StatusOK, code, string(body))
	var b msgBatchJSON
	require.NoError(t, json.Unmarshal(body, &b))
	return b
}

func at(t0 time.Time, d time.Duration) *string { return ptr(rfc3339(t0.Add(d))) }

// TestMessageBatchTimeline follows Message Batches on a simulated clock:
// requests run evenly over InProgressFor after ValidatingFor, the batch
// ends FinalizingFor later, and the counts say nothing until then.
func TestMessageBatchTimeline(t *testing.T) {
	t.Parallel()
	e, clock := timeline(t) // validating 10s, in progress 100s, finalizing 10s, cancel 5s
	t0 := clock.Now()
	done := createMsg(t, e, "a", "b", "c", "d")
	cancelled := createMsg(t, e, "e", "f", "g", "h")
	require.Equal(t, msgBatchJSON{
		ID: done.ID, Type: "message_batch", ProcessingStatus: StatusInProgress, RequestCounts: msgCounts{Processing: 4},
		CreatedAt: "2026-01-02T03:04:05.000000Z", ExpiresAt: "2026-01-03T03:04:05.000000Z",
	}, done)

	// Requests execute at 35s, 60s, 85s and 110s.
	clock.Set(t0.Add(60 * time.Second))
	require.Equal(t, msgCounts{Processing: 4}, getMsg(t, e, done.ID).RequestCounts)
	require.EqualValues(t, 2, e.Batches()[0].RequestCounts.Completed, "the admin view shows progress")
	code, _, body := serveMsg(t, e, http.MethodGet, "/v1/messages/batches/"+done.ID+"/results", "")
	require.Equal(t, http.StatusBadRequest, code, string(body))

	code, _, body = serveMsg(t, e, http.MethodPost, "/v1/messages/batches/"+cancelled.ID+"/cancel", "")
	require.Equal(t, http.StatusOK, code, string(body))
	clock.Set(t0.Add(65*time.Second - 1))
	c := getMsg(t, e, cancelled.ID)
	require.Equal(t, StatusCanceling, c.ProcessingStatus)
	require.Equal(t, at(t0, 60*time.Second), c.CancelInitiatedAt)
	clock.Set(t0.Add(65 * time.Second))
	c = getMsg(t, e, cancelled.ID)
	require.Equal(t, StatusEnded, c.ProcessingStatus)
	require.Equal(t, msgCounts{Succeeded: 2, Canceled: 2}, c.RequestCounts)
	require.Equal(t, at(t0, 65*time.Second), c.EndedAt)

	clock.Set(t0.Add(120*time.Second - 1))
	require.Equal(t, StatusInProgress, getMsg(t, e, done.ID).ProcessingStatus)
	require.Equal(t, 1, e.Stats().ActiveNow)
	clock.Set(t0.Add(120 * time.Second))
	require.Zero(t, e.Stats().ActiveNow, "ended without being read")
	d := getMsg(t, e, done.ID)
	require.Equal(t, msgBatchJSON{
		ID: done.ID, Type: "message_batch", ProcessingStatus: StatusEnded, RequestCounts: msgCounts{Succeeded: 4},
		EndedAt: at(t0, 120*time.Second), CreatedAt: done.CreatedAt, ExpiresAt: done.ExpiresAt,
		ResultsURL: ptr("http://example.com/v1/messages/batches/" + done.ID + "/results"),
	}, d)
	code, hdr, body := serveMsg(t, e, http.MethodGet, "/v1/messages/batches/"+done.ID+"/results", "")
	require.Equal(t, http.StatusOK, code, string(body))
	require.Equal(t, "application/binary", hdr.Get("Content-Type"))
	require.Len(t, strings.Split(strings.TrimSpace(string(body)), "\n"), 4)
	require.Equal(t, e.Batches()[0].TerminalAt, t0.Add(120*time.Second))
}

func TestMessageBatchExpiresOnTime(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	e := New(Config{Clock: clock, ValidatingFor: 10 * time.Second, InProgressFor: 100 * time.Second,
		ExpireAfter: 60 * time.Second, TickInterval: time.Millisecond})
	t.Cleanup(e.Close)
	t0 := clock.Now()
	// ok-1 and ok-2 would execute at 60s and 110s: the expiry at 60s lets one run.
	m := createMsg(t, e, "ok-1", "ok-2", "x-never-finish")
	clock.Set(t0.Add(60*time.Second - 1))
	require.Equal(t, StatusInProgress, getMsg(t, e, m.ID).ProcessingStatus)
	clock.Set(t0.Add(60 * time.Second))
	got := getMsg(t, e, m.ID)
	require.Equal(t, msgCounts{Succeeded: 1, Expired: 2}, got.RequestCounts)
	require.Equal(t, &got.ExpiresAt, got.EndedAt)
	require.Nil(t, got.CancelInitiatedAt)
}

func TestParseMessageBatch(t *testing.T) {
	t.Parallel()
	body := `{"requests":[
		{"custom_id":"a\u002db","params":{"model":"claude-x","max_tokens":1024.0,"system":"Be brief.","messages":[{"role":"user","content":[{"type":"text","text":"Hello there"}]}],"metadata":{"user_id":"u-fail-400"}}},
		{"params":{"messages":[{"role":"user","content":"12345678"}],"model":"claude-x","max_tokens":0,"temperature":1},"custom_id":"Z_9"}
	]}`
	reqs, err := parseMessageBatch([]byte(body))
	require.Nil(t, err)
	want := []msgRequest{
		{customID: "a-b", model: "claude-x", userID: "u-fail-400", maxTokens: 1024, promptTokens: estimateTokens(len("Be brief.Hello there"))},
		{customID: "Z_9", model: "claude-x", maxTokens: 0, promptTokens: 2},
	}
	if diff := cmp.Diff(want, reqs, cmp.AllowUnexported(msgRequest{})); diff != "" {
		t.Fatalf("requests (-want +got):\n%s", diff)
	}
	require.Equal(t, "u-fail-400", reqs[0].trigger())
	require.Equal(t, "Z_9", reqs[1].trigger())
}

// FuzzParseMessageBatch checks the in-place parser against encoding/json:
// an error, or the custom_ids and models encoding/json decodes.
func FuzzParseMessageBatch(f *testing.F) {
	for _, s := range []string{
		msgBody("a", "b"), `{"requests":[]}`, `{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[1]}}]}`,
		`{"requests":[{"custom_id":"a\u0062","params":{"model":"m\u00e9","model":"n","max_tokens":1e3,"messages":["x"]},"custom_id":"c"}]}`,
		`{"requests":{}}`, `[]`, `"x"`, `{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":-0,"messages":[{}]}}],"requests":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		reqs, err := parseMessageBatch(body)
		if err != nil {
			require.Equal(t, http.StatusBadRequest, err.status)
			require.NotEmpty(t, err.Message)
			return
		}
		var doc map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(body, &doc))
		var list []map[string]json.RawMessage
		require.NoError(t, json.Unmarshal(doc["requests"], &list))
		require.Len(t, reqs, len(list))
		seen := map[string]bool{}
		for i, r := range list {
			var id string
			require.NoError(t, json.Unmarshal(r["custom_id"], &id))
			require.Equal(t, id, reqs[i].customID)
			require.True(t, validCustomID(id) && !seen[id], id)
			seen[id] = true
			var params map[string]json.RawMessage
			require.NoError(t, json.Unmarshal(r["params"], &params))
			var model string
			require.NoError(t, json.Unmarshal(params["model"], &model))
			require.Equal(t, model, reqs[i].model)
			require.GreaterOrEqual(t, reqs[i].maxTokens, int64(0))
		}
	})
}
