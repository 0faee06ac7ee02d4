package devfleet_test

import (
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/devfleet"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// The README's run command: the whole fleet in one process takes the
// shipped sample job to batch.completed.
func TestDevFleetRunsTheSample(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan devfleet.Addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- devfleet.Run(ctx, devfleet.Options{
			DataDir: t.TempDir(), NATSAddr: "127.0.0.1:-1", EmulatorAddr: "127.0.0.1:0", Log: io.Discard,
			Ready: func(a devfleet.Addrs) { ready <- a },
		})
	}()
	var a devfleet.Addrs
	select {
	case a = <-ready:
	case err := <-errc:
		t.Fatalf("dev fleet did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dev fleet did not start in 30s")
	}
	defer func() {
		cancel()
		require.NoError(t, <-errc)
	}()
	// The workers' ANTHROPIC_BASE_URL: the emulator's root, to which
	// anthropic-sdk-go adds /v1/messages/batches.
	require.Equal(t, strings.TrimSuffix(a.OpenAIBaseURL, "/v1"), a.AnthropicBaseURL)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, a.AnthropicBaseURL+"/v1/messages/batches", nil)
	require.NoError(t, err)
	hreq.Header.Set("x-api-key", "sk-dev")
	hreq.Header.Set("anthropic-version", "2023-06-01")
	resp, err := http.DefaultClient.Do(hreq)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	require.Contains(t, string(body), `"data"`)

	_, js := fleettest.Connect(t, a.NATSURL)
	f, err := os.Open("../../examples/sample.jsonl")
	require.NoError(t, err)
	defer f.Close()
	req, err := ops.RequestFromJSONL("dev-sample", f, nil)
	require.NoError(t, err)
	require.NoError(t, ops.Publish(ctx, js, req))
	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	ev, err := ops.WaitCompleted(wctx, js, "dev-sample")
	require.NoError(t, err)
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 5, Completed: 5}, ev.RequestCounts)
	results, err := ops.Results(ctx, js, "dev-sample")
	require.NoError(t, err)
	require.Equal(t, 5, len(splitLines(results)))
}

func splitLines(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == '\n' {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	return out
}
