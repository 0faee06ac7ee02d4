package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/dashboard"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

const user, password = "operator", "s3cret-pass"

// TestDashboard runs one fleet with a job in each state and checks the
// pages over HTTP, read-only and with actions, then in a browser.
func TestDashboard(t *testing.T) {
	f := startFleet(t)
	f.seed(t)
	t.Run("read-only", func(t *testing.T) { testReadOnly(t, f) })
	t.Run("browser", func(t *testing.T) { testBrowser(t, f) })
	t.Run("actions", func(t *testing.T) { testActions(t, f) })
}

// client speaks to one dashboard server; it never follows redirects.
type client struct {
	t    *testing.T
	base string
	auth bool
}

type response struct {
	Status int
	Header http.Header
	Body   string
}

func (c *client) do(method, path string, hdr http.Header) response {
	c.t.Helper()
	req, err := http.NewRequest(method, c.base+path, nil)
	require.NoError(c.t, err)
	if c.auth {
		req.SetBasicAuth(user, password)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	hc := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	resp, err := hc.Do(req)
	require.NoError(c.t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(c.t, err)
	return response{Status: resp.StatusCode, Header: resp.Header, Body: string(body)}
}

func (c *client) get(path string) response { c.t.Helper(); return c.do(http.MethodGet, path, nil) }

func serve(t *testing.T, o dashboard.Options) string {
	h, err := dashboard.New(o)
	require.NoError(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func testReadOnly(t *testing.T, f *fixture) {
	c := &client{t: t, base: serve(t, dashboard.Options{JS: f.JS, Store: f.Store})}

	r := c.get("/healthz")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "ok\n", r.Body)

	r = c.get("/")
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, `<meta http-equiv="refresh" content="5">`)
	require.Contains(t, r.Body, keyRunning, "newest unfinished jobs")
	require.Contains(t, r.Body, "notifier", "workers seen")
	require.Contains(t, r.Body, "read-only")
	require.Contains(t, r.Header.Get("Content-Security-Policy"), "default-src 'none'")

	// A running job: no cancel button, and the endpoint refuses.
	r = c.get("/jobs/" + keyRunning)
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, "in_progress")
	require.NotContains(t, r.Body, "/cancel")
	require.NotContains(t, r.Body, "<form method=\"post\"")
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, "/jobs/"+keyRunning+"/cancel", nil).Status)
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, "/dlq/replay", nil).Status)
	r = c.get("/dlq")
	require.Equal(t, http.StatusOK, r.Status)
	require.NotContains(t, r.Body, "Replay webhooks")
	require.Contains(t, r.Body, "webhook_undeliverable")
	require.Contains(t, r.Body, `href="/jobs/dash.ok:1"`, "a dead letter links its job")

	// A finished job, its key escaped in links, its metadata as text.
	r = c.get("/jobs/" + url.PathEscape(keyOK))
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, "succeeded")
	require.Contains(t, r.Body, `href="/jobs/dash.ok:1/results"`)
	require.NotContains(t, r.Body, hostile)
	require.Contains(t, r.Body, "&lt;script&gt;")
	require.NotContains(t, r.Body, `http-equiv="refresh"`, "a completed job does not change")

	r = c.get("/jobs/no-such-job")
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Contains(t, r.Body, "No job has the key")
	r = c.get("/jobs/a%2Fb")
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Contains(t, r.Body, "is not an idempotency key")

	// Results: the merged JSONL, streamed.
	r = c.get("/jobs/" + url.PathEscape(keyOK) + "/results")
	require.Equal(t, http.StatusOK, r.Status)
	require.Equal(t, "application/x-ndjson", r.Header.Get("Content-Type"))
	require.Equal(t, `inline; filename="dash.ok_1.jsonl"`, r.Header.Get("Content-Disposition"))
	want, err := ops.Results(context.Background(), f.JS, keyOK)
	require.NoError(t, err)
	require.Equal(t, string(want), r.Body)
	ids := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(r.Body))
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
			Status   string `json:"status"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &l))
		ids[l.CustomID] = l.Status
	}
	require.Equal(t, map[string]string{"ok-0": "succeeded", "ok-1": "succeeded", "ok-2": "succeeded"}, ids)
	r = c.get("/jobs/" + keyRunning + "/results")
	require.Equal(t, http.StatusNotFound, r.Status)
	require.Contains(t, r.Body, "has no merged results")

	// Filters: the ones the CLI takes, and clear 400s for bad ones.
	r = c.get("/jobs?status=final&outcome=partial&since=1h")
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, keyPartial)
	require.NotContains(t, r.Body, keyOK)
	r = c.get("/jobs?key_prefix=dash-&model=gpt-4o-mini&since=" + url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)))
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, keyRunning)
	require.NotContains(t, r.Body, keyOK)
	for _, tc := range []struct{ query, msg string }{
		{"status=bogus", "unknown status"},
		{"outcome=great", "unknown outcome"},
		{"status=active&outcome=partial", "only known for final jobs"},
		{"since=yesterday", "neither a duration"},
		{"since=-2h", "must not be negative"},
		{"limit=ten", "limit"},
		{"offset=-1", "offset"},
		{"limit=100000", "at most 1000"},
	} {
		r := c.get("/jobs?" + tc.query)
		require.Equal(t, http.StatusBadRequest, r.Status, tc.query)
		require.Contains(t, r.Body, "Bad filter", tc.query)
		require.Contains(t, r.Body, tc.msg, tc.query)
	}

	// Paging: two final jobs a page, the next link carries the filters.
	r = c.get("/jobs?status=final&limit=2")
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, `href="/jobs?limit=2&amp;offset=2&amp;status=final"`)
	next := c.get("/jobs?limit=2&offset=2&status=final")
	require.Equal(t, http.StatusOK, next.Status)
	require.Contains(t, next.Body, "Jobs 3–4")
	require.Contains(t, next.Body, `href="/jobs?limit=2&amp;status=final"`, "previous page")

	r = c.get("/nowhere")
	require.Equal(t, http.StatusNotFound, r.Status)
}

func testActions(t *testing.T, f *fixture) {
	_, err := dashboard.New(dashboard.Options{JS: f.JS, Store: f.Store, AllowActions: true})
	require.ErrorContains(t, err, "required when AllowActions")
	_, err = dashboard.New(dashboard.Options{JS: f.JS, Store: f.Store, User: user})
	require.ErrorContains(t, err, "both")

	base := serve(t, dashboard.Options{JS: f.JS, Store: f.Store, AllowActions: true, User: user, Password: password,
		WebhookSecret: webhookSecret})
	anon := &client{t: t, base: base}
	c := &client{t: t, base: base, auth: true}

	// Every page needs the credentials; /healthz does not.
	for _, path := range []string{"/", "/jobs", "/jobs/" + keyRunning, "/dlq", "/static/style.css"} {
		r := anon.get(path)
		require.Equal(t, http.StatusUnauthorized, r.Status, path)
		require.Contains(t, r.Header.Get("WWW-Authenticate"), "Basic realm=")
	}
	wrong := &client{t: t, base: strings.Replace(base, "http://", "http://"+user+":wrong@", 1)}
	require.Equal(t, http.StatusUnauthorized, wrong.get("/").Status)
	require.Equal(t, http.StatusOK, anon.get("/healthz").Status)
	r := c.get("/")
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, "actions enabled")

	// Replay the dead-lettered webhooks once the subscriber is back.
	r = c.get("/dlq")
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, "Replay webhooks")
	dead, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQWebhooks)
	require.NoError(t, err)
	require.NotEmpty(t, dead)
	f.Hook.OK.Store(true)
	require.Equal(t, http.StatusForbidden, c.do(http.MethodPost, "/dlq/replay", http.Header{"Sec-Fetch-Site": {"cross-site"}}).Status)
	r = c.do(http.MethodPost, "/dlq/replay", http.Header{"Sec-Fetch-Site": {"same-origin"}})
	require.Equal(t, http.StatusOK, r.Status)
	require.Contains(t, r.Body, "delivered and removed from the stream")
	require.Equal(t, len(dead), strings.Count(r.Body, ">delivered<"), r.Body)
	require.EqualValues(t, len(dead), f.Hook.Delivered.Load())
	left, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQWebhooks)
	require.NoError(t, err)
	require.Empty(t, left)

	// Cancel: the button is there; cross-origin POSTs are refused; a
	// same-origin one cancels the job and redirects back.
	r = c.get("/jobs/" + keyCancelled)
	require.Contains(t, r.Body, `action="/jobs/dash-cancel/cancel"`)
	for _, h := range []http.Header{{"Sec-Fetch-Site": {"cross-site"}}, {"Origin": {"https://evil.example"}}} {
		r := c.do(http.MethodPost, "/jobs/"+keyCancelled+"/cancel", h)
		require.Equal(t, http.StatusForbidden, r.Status, h)
		require.Contains(t, r.Body, "Cross-origin request refused")
	}
	require.Equal(t, http.StatusUnauthorized, anon.do(http.MethodPost, "/jobs/"+keyCancelled+"/cancel", nil).Status)
	j, err := f.Store.Get(context.Background(), keyCancelled)
	require.NoError(t, err)
	require.False(t, j.CancelRequested, "no refused request cancelled the job")

	r = c.do(http.MethodPost, "/jobs/"+keyCancelled+"/cancel", http.Header{"Sec-Fetch-Site": {"same-origin"}, "Origin": {base}})
	require.Equal(t, http.StatusSeeOther, r.Status, r.Body)
	require.Equal(t, "/jobs/dash-cancel?notice=cancel", r.Header.Get("Location"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ev, err := ops.WaitCompleted(ctx, f.JS, keyCancelled)
	require.NoError(t, err)
	require.Equal(t, contract.OutcomeCancelled, ev.Outcome)
	r = c.get("/jobs/dash-cancel?notice=cancel")
	require.Contains(t, r.Body, "Cancel requested")
	require.Contains(t, r.Body, "cancelled")
	require.NotContains(t, r.Body, "Cancel job", "no button on a final job")

	r = c.do(http.MethodPost, "/jobs/"+keyCancelled+"/cancel", nil)
	require.Equal(t, http.StatusConflict, r.Status)
	require.Contains(t, r.Body, "already final")
	require.Equal(t, http.StatusNotFound, c.do(http.MethodPost, "/jobs/no-such-job/cancel", nil).Status)
}

func TestNewRejectsMissingParts(t *testing.T) {
	_, err := dashboard.New(dashboard.Options{})
	require.ErrorContains(t, err, "Options.JS and Options.Store are required")
}
