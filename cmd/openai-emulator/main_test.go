package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// runMainEnv makes the test binary run main, so a test can signal a real process.
const runMainEnv = "OPENAI_EMULATOR_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

var baseURLPattern = regexp.MustCompile(`^http://127\.0\.0\.1:[1-9][0-9]*/v1$`)

// listening parses a "listening" log line and returns its base_url.
func listening(line string) (string, bool) {
	var entry struct {
		Msg     string `json:"msg"`
		BaseURL string `json:"base_url"`
	}
	if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "listening" {
		return "", false
	}
	return entry.BaseURL, true
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestRunServesUntilContextEnds(t *testing.T) {
	env := map[string]string{"EMULATOR_ADDR": "127.0.0.1:0", "EMULATOR_API_KEY": "sk-secret-key", "EMULATOR_VALIDATING_FOR": "10ms",
		"EMULATOR_REPLY_BYTES": "2048"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, out) }()

	var baseURL string
	require.Eventually(t, func() bool {
		for _, l := range strings.Split(out.String(), "\n") {
			if u, ok := listening(l); ok {
				baseURL = u
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "no listening line in %q", out.String())
	require.Regexp(t, baseURLPattern, baseURL)
	require.NotContains(t, out.String(), "sk-secret-key", "the API key must not be logged")
	require.Contains(t, out.String(), `"reply_bytes":2048`, "the config line shows the environment")

	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	client := openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey("sk-secret-key"), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Transport: tr}))
	page, err := client.Batches.List(ctx, openai.BatchListParams{})
	require.NoError(t, err)
	require.Empty(t, page.Data)
	_, err = client.Batches.List(ctx, openai.BatchListParams{}, option.WithAPIKey("sk-other-key"))
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, http.StatusUnauthorized, apiErr.StatusCode)

	// The same port and key serve Anthropic's Message Batches API.
	claude := anthropic.NewClient(aoption.WithoutEnvironmentDefaults(), aoption.WithBaseURL(strings.TrimSuffix(baseURL, "/v1")),
		aoption.WithAPIKey("sk-secret-key"), aoption.WithMaxRetries(0), aoption.WithHTTPClient(&http.Client{Transport: tr}))
	require.Contains(t, out.String(), `"anthropic_base_url":"`+strings.TrimSuffix(baseURL, "/v1")+`"`)
	msgPage, err := claude.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Empty(t, msgPage.Data)
	_, err = claude.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{}, aoption.WithAPIKey("sk-other-key"))
	var msgErr *anthropic.Error
	require.ErrorAs(t, err, &msgErr)
	require.Equal(t, http.StatusUnauthorized, msgErr.StatusCode)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

func TestRunRejectsBadEnv(t *testing.T) {
	for _, env := range []map[string]string{
		{"EMULATOR_LATENCY": "fast"},
		{"EMULATOR_ADDR": "256.0.0.1:x"},
		{"LOG_LEVEL": "loud"},
		{"EMULATOR_REPLY_BYTES": "-1"},
	} {
		err := run(context.Background(), func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
		require.Error(t, err, "%v", env)
	}
}

func TestSIGTERMStopsGracefully(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "EMULATOR_ADDR=127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var baseURL string
	deadline := time.After(20 * time.Second)
	for baseURL == "" {
		select {
		case l, ok := <-lines:
			require.True(t, ok, "process exited before listening: %s", stderr.String())
			baseURL, _ = listening(l)
		case <-deadline:
			t.Fatal("no listening line")
		}
	}
	require.Regexp(t, baseURLPattern, baseURL)

	req, err := http.NewRequest(http.MethodGet, baseURL+"/batches", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer any")
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	for range lines { // drain until the process closes stdout
	}
	require.NoError(t, cmd.Wait(), stderr.String())
}
