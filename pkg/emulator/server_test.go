package emulator_test

import (
	"context"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

func TestServerLifecycle(t *testing.T) {
	t.Parallel()
	never := emulator.NewServer("127.0.0.1:0", emulator.Config{})
	require.NoError(t, never.Stop(context.Background()), "stopping a server never started is safe")
	require.Empty(t, never.BaseURL())

	srv := emulator.NewServer("127.0.0.1:0", fast())
	require.NoError(t, srv.Start(context.Background()))
	require.Error(t, srv.Start(context.Background()), "second start")
	require.Regexp(t, regexp.MustCompile(`^http://127\.0\.0\.1:\d+/v1$`), srv.BaseURL())

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := openai.NewClient(option.WithBaseURL(srv.BaseURL()), option.WithAPIKey(testKey),
		option.WithMaxRetries(0), option.WithHTTPClient(&http.Client{Transport: tr}))
	_, err := client.Batches.List(context.Background(), openai.BatchListParams{})
	require.NoError(t, err)
	require.EqualValues(t, 1, srv.Emulator().Stats().CallsByOp[emulator.OpList])

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, srv.Stop(ctx))
	require.NoError(t, srv.Close(), "stop is idempotent")
	_, err = client.Batches.List(context.Background(), openai.BatchListParams{})
	require.Error(t, err, "stopped server must not answer")
}

func TestFailureRate(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.FailureRate = 1
	h := start(t, cfg)
	b := h.submit(t, chatLines("m", "a", "b", "c")...)
	seen := h.await(t, b.ID, openai.BatchStatusCompleted)
	done := seen[len(seen)-1]
	require.EqualValues(t, 3, done.RequestCounts.Failed)
	require.Empty(t, done.OutputFileID)
	for _, l := range h.content(t, done.ErrorFileID) {
		require.Equal(t, 500, l.Response.StatusCode)
	}

	require.NoError(t, h.emu.SetFaults(emulator.Faults{FailureRate: 0}))
	b = h.submit(t, chatLines("m", "a", "b", "c")...)
	seen = h.await(t, b.ID, openai.BatchStatusCompleted)
	require.EqualValues(t, 3, seen[len(seen)-1].RequestCounts.Completed)
}
