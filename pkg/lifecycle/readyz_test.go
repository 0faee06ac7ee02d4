package lifecycle_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
)

// probe GETs path and returns the status and body.
func probe(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// awaitProbe polls url until it answers status (a probe has no event to
// await) and returns the body.
func awaitProbe(t *testing.T, url string, status int) string {
	t.Helper()
	var code int
	var body string
	require.Eventually(t, func() bool {
		code, body = probe(t, url)
		return code == status
	}, 20*time.Second, 50*time.Millisecond, "%s never answered %d (last %d %q)", url, status, code, body)
	return body
}

// /readyz is ready only while NATS and Redis answer: it fails while Redis
// is down and passes once it is back; /healthz (liveness) stays ok.
func TestReadyzFollowsRedis(t *testing.T) {
	ns := fleettest.StartNATS(t)
	rd := fleettest.StartRedis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	vars := map[string]string{
		"NATS_URL": ns.URL(), "REDIS_URL": rd.URL(), "OPENAI_API_KEY": "sk-test",
		"OPENAI_BASE_URL": "http://127.0.0.1:1/v1", "STOP_TIMEOUT": "200ms", "METRICS_ADDR": addr,
	}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- lifecycle.Run(ctx, "test", func(k string) (string, bool) { v, ok := vars[k]; return v, ok }, io.Discard,
			func(context.Context, *lifecycle.Infra) (lifecycle.Runner, error) {
				return runFunc(func(ctx context.Context) error { <-ctx.Done(); return nil }), nil
			})
	}()
	defer func() { cancel(); require.NoError(t, <-errc) }()

	base := "http://" + addr
	require.Equal(t, "ready\n", awaitProbe(t, base+"/readyz", http.StatusOK))

	rd.Kill()
	body := awaitProbe(t, base+"/readyz", http.StatusServiceUnavailable)
	require.True(t, strings.HasPrefix(body, "not ready: redis:"), body)
	code, _ := probe(t, base+"/healthz")
	require.Equal(t, http.StatusOK, code, "liveness does not depend on Redis")

	rd.Restart(t)
	require.Equal(t, "ready\n", awaitProbe(t, base+"/readyz", http.StatusOK))
}
