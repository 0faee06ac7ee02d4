package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/results"
)

func TestDemoClaudeJobIsThreeClaudeRequests(t *testing.T) {
	t.Parallel()
	req, err := readAnthropic(bytes.NewReader(demoClaude), "claude-demo-1")
	require.NoError(t, err)
	require.Equal(t, contract.ProviderAnthropic, req.Provider)
	require.Len(t, req.Requests, 3)
	for _, it := range req.Requests {
		var body struct {
			Model     string `json:"model"`
			MaxTokens int    `json:"max_tokens"`
		}
		require.NoError(t, json.Unmarshal(it.Body, &body))
		require.Equal(t, "claude-sonnet-4-5", body.Model)
		require.Positive(t, body.MaxTokens)
	}
	_, known := results.DefaultPriceTable().Lookup("claude-sonnet-4-5")
	require.True(t, known, "the demo's model has a price")

	path, err := writeDemoClaude(t.TempDir())
	require.NoError(t, err)
	items, err := writeDemoItems(t.TempDir(), 7)
	require.NoError(t, err)
	data, err := os.ReadFile(items)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 3)
	for i, l := range lines {
		it, _, err := contract.DecodeItem([]byte(l))
		require.NoError(t, err, l)
		require.Equal(t, fmt.Sprintf("demo-item-7-%d", i+1), it.CustomID)
	}
	require.Equal(t, [][]string{
		{"publish", "--nats", "nats://n", "--key", "demo-7", "--wait", "examples/sample.jsonl"},
		{"publish", "--nats", "nats://n", "--provider", "anthropic", "--key", "claude-demo-7", "--wait", path},
		{"items", "publish", "--nats", "nats://n", "--wait", items},
	}, demoJobs("nats://n", 7, path, items))
}

// syncBuffer is a bytes.Buffer safe for the demo's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// `dev --demo` publishes the sample job and then the Claude job, and
// prints the batch.completed of each.
func TestDevDemoPublishesTheSampleAClaudeJobAndItems(t *testing.T) {
	t.Chdir("../..") // examples/sample.jsonl, as from the README
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- Execute(ctx, []string{"dev", "--demo", "--data", t.TempDir(), "--nats-listen", "127.0.0.1:-1",
			"--emulator", "127.0.0.1:0", "--ui", "", "--log", "json"}, &out, &errOut)
	}()
	var events []contract.Completed
	var items []contract.ItemCompleted
	deadline := time.Now().Add(90 * time.Second)
	for len(events) < 2 || len(items) < 3 {
		select {
		case c := <-code:
			t.Fatalf("dev exited with %d: %s", c, errOut.String())
		case <-time.After(100 * time.Millisecond):
		}
		require.True(t, time.Now().Before(deadline), "no two batch.completed and three batch.item.completed in 90s; stderr: %s", errOut.String())
		events, items = events[:0], items[:0]
		dec := json.NewDecoder(strings.NewReader(out.String()))
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				break
			}
			if strings.Contains(string(raw), `"custom_id"`) {
				var it contract.ItemCompleted
				require.NoError(t, json.Unmarshal(raw, &it))
				items = append(items, it)
				continue
			}
			var ev contract.Completed
			require.NoError(t, json.Unmarshal(raw, &ev))
			events = append(events, ev)
		}
	}
	for _, it := range items {
		require.Equal(t, contract.OutcomeSucceeded, it.Outcome, "%+v", it)
		require.Equal(t, map[string]string{"demo": "true"}, it.Metadata)
		require.True(t, strings.HasPrefix(it.JobKey, contract.PackKeyPrefix), it.JobKey)
	}
	cancel()
	require.Equal(t, 0, <-code, errOut.String())
	require.NotContains(t, errOut.String(), "demo:")

	sample, claude := events[0], events[1]
	require.True(t, strings.HasPrefix(sample.IdempotencyKey, "demo-"), sample.IdempotencyKey)
	require.Equal(t, contract.OutcomeSucceeded, sample.Outcome)
	require.Equal(t, contract.Counts{Total: 5, Completed: 5}, sample.RequestCounts)
	require.Equal(t, "claude-"+sample.IdempotencyKey, claude.IdempotencyKey)
	require.Contains(t, errOut.String(), "published "+claude.IdempotencyKey+" (3 requests, inline)")
	t.Logf("claude job %s: %s, %+v", claude.IdempotencyKey, claude.Outcome, claude.RequestCounts)
	require.Equal(t, contract.OutcomeSucceeded, claude.Outcome, "%+v", claude)
	require.Equal(t, contract.Counts{Total: 3, Completed: 3}, claude.RequestCounts)
}
