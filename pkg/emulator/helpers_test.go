package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

const testKey = "sk-test-emulator-key"

// fast is a Config whose batches finish in about a second.
func fast() emulator.Config {
	return emulator.Config{
		APIKey:        testKey,
		ValidatingFor: 50 * time.Millisecond,
		InProgressFor: 500 * time.Millisecond,
		FinalizingFor: 50 * time.Millisecond,
		CancelDelay:   100 * time.Millisecond,
		TickInterval:  10 * time.Millisecond,
	}
}

type harness struct {
	emu    *emulator.Emulator
	srv    *httptest.Server
	client openai.Client
}

// start serves cfg through httptest and returns an openai-go client for it
// that never retries, so every fault is visible.
func start(t *testing.T, cfg emulator.Config, opts ...option.RequestOption) harness {
	t.Helper()
	emu := emulator.New(cfg)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		emu.Close()
	})
	base := []option.RequestOption{
		option.WithBaseURL(srv.URL + "/v1"), option.WithAPIKey(testKey), option.WithMaxRetries(0),
		option.WithHTTPClient(srv.Client()),
	}
	return harness{emu: emu, srv: srv, client: openai.NewClient(append(base, opts...)...)}
}

func chatLine(customID, model string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"Say hello to %s"}]}}`,
		customID, model, customID)
}

func chatLines(model string, ids ...string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = chatLine(id, model)
	}
	return out
}

func (h harness) upload(t *testing.T, lines ...string) string {
	t.Helper()
	data := strings.Join(lines, "\n") + "\n"
	f, err := h.client.Files.New(context.Background(), openai.FileNewParams{
		File:    openai.File(strings.NewReader(data), "input.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	require.NoError(t, err)
	return f.ID
}

func (h harness) create(t *testing.T, fileID string, endpoint openai.BatchNewParamsEndpoint, md map[string]string) *openai.Batch {
	t.Helper()
	b, err := h.client.Batches.New(context.Background(), openai.BatchNewParams{
		InputFileID:      fileID,
		Endpoint:         endpoint,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Metadata:         md,
	})
	require.NoError(t, err)
	return b
}

// submit uploads chat lines and creates a batch of them.
func (h harness) submit(t *testing.T, lines ...string) *openai.Batch {
	t.Helper()
	return h.create(t, h.upload(t, lines...), openai.BatchNewParamsEndpointV1ChatCompletions, nil)
}

// await polls the batch until its status is want, failing on another
// terminal status or after the deadline. It returns every observed batch.
func (h harness) await(t *testing.T, id string, want openai.BatchStatus) []*openai.Batch {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var seen []*openai.Batch
	for {
		b, err := h.client.Batches.Get(context.Background(), id)
		require.NoError(t, err)
		seen = append(seen, b)
		if b.Status == want {
			return seen
		}
		switch b.Status {
		case openai.BatchStatusCompleted, openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCancelled:
			t.Fatalf("batch %s reached %s, want %s: %s", id, b.Status, want, b.RawJSON())
		}
		require.True(t, time.Now().Before(deadline), "batch %s still %s, want %s", id, b.Status, want)
		time.Sleep(5 * time.Millisecond) // poll interval, not synchronisation
	}
}

// resultLine is one line of an output or error file.
type resultLine struct {
	ID       string `json:"id"`
	CustomID string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	raw string
}

func (h harness) content(t *testing.T, fileID string) []resultLine {
	t.Helper()
	require.NotEmpty(t, fileID)
	resp, err := h.client.Files.Content(context.Background(), fileID)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	var out []resultLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l resultLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		require.NoError(t, dec.Decode(&l), sc.Text())
		l.raw = sc.Text()
		out = append(out, l)
	}
	require.NoError(t, sc.Err())
	return out
}

func byCustomID(lines []resultLine) map[string]resultLine {
	m := make(map[string]resultLine, len(lines))
	for _, l := range lines {
		m[l.CustomID] = l
	}
	return m
}

// admin GETs an admin endpoint into v.
func (h harness) admin(t *testing.T, method, path string, body io.Reader, v any) {
	t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	require.NoError(t, err)
	resp, err := h.srv.Client().Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
	if v != nil {
		require.NoError(t, json.Unmarshal(b, v), string(b))
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		require.True(t, time.Now().Before(deadline), "timed out waiting for %s", what)
		time.Sleep(5 * time.Millisecond)
	}
}
