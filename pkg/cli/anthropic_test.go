package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// claudeLine is one line of an Anthropic batch request file.
func claudeLine(id, text string) string {
	return fmt.Sprintf(`{"custom_id": %q, "params": {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": %q}]}}`, id, text)
}

func TestAnthropicFileBecomesContractItems(t *testing.T) {
	t.Parallel()
	in := claudeLine("q-1", "One?") + "\n\n" +
		`{"custom_id":"q-2","params":{"model":"claude-haiku-4-5","max_tokens":10,"system":"terse","messages":[{"role":"user","content":"hi"}]}}` + "\n" +
		`  {"params": {"messages": [{"role": "user", "content": [{"type": "text", "text": "a\nb"}]}], "max_tokens": 1, "model": "claude-opus-4-1", "temperature": 0.5}, "custom_id": "Q_3-x"}` // no final newline
	req, err := readAnthropic(strings.NewReader(in), "claude-job-1")
	require.NoError(t, err)
	require.Equal(t, "claude-job-1", req.IdempotencyKey)
	require.Equal(t, contract.ProviderAnthropic, req.Provider)
	require.Equal(t, contract.AnthropicEndpoint, req.Endpoint)
	require.Equal(t, "/v1/messages", req.Endpoint)
	require.Empty(t, req.InputObject)
	require.Len(t, req.Requests, 3)
	wantIDs := []string{"q-1", "q-2", "Q_3-x"}
	wantBodies := []string{
		`{"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "One?"}]}`,
		`{"model":"claude-haiku-4-5","max_tokens":10,"system":"terse","messages":[{"role":"user","content":"hi"}]}`,
		`{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\nb"}]}], "max_tokens": 1, "model": "claude-opus-4-1", "temperature": 0.5}`,
	}
	for i, it := range req.Requests {
		require.Equal(t, wantIDs[i], it.CustomID)
		require.JSONEq(t, wantBodies[i], string(it.Body), "body of %s is its params", it.CustomID)
	}

	// The message as published decodes under the contract's rules to the same job.
	msg, err := json.Marshal(req)
	require.NoError(t, err)
	got, key, err := contract.Decode(msg)
	require.NoError(t, err)
	require.Equal(t, "claude-job-1", key)
	require.Equal(t, contract.ProviderAnthropic, got.Provider)
	require.Len(t, got.Requests, 3)
	require.JSONEq(t, wantBodies[2], string(got.Requests[2].Body))

	// By reference: the contract's input lines, url /v1/messages.
	var buf bytes.Buffer
	n, err := writeAnthropicJSONL(&buf, strings.NewReader(in))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	require.Len(t, lines, 3)
	for i, l := range lines {
		var v struct {
			CustomID string          `json:"custom_id"`
			Method   string          `json:"method"`
			URL      string          `json:"url"`
			Body     json.RawMessage `json:"body"`
		}
		require.NoError(t, json.Unmarshal([]byte(l), &v), l)
		require.Equal(t, wantIDs[i], v.CustomID)
		require.Equal(t, "POST", v.Method)
		require.Equal(t, "/v1/messages", v.URL)
		require.JSONEq(t, wantBodies[i], string(v.Body))
	}
}

func TestAnthropicBadLineNamesLineAndRule(t *testing.T) {
	t.Parallel()
	ok := claudeLine("r1", "fine")
	long := strings.Repeat("x", 65)
	tests := []struct {
		name, line, want string
	}{
		{"not JSON", `not json`, `line 2: not a JSON object`},
		{"truncated", `{"custom_id": "r2", "params": {"model": "m"`, `line 2: not a JSON object`},
		{"array", `[1, 2]`, `line 2: not a JSON object`},
		{"null", `null`, `line 2: not a JSON object`},
		{"no custom_id", `{"params": {"model": "m", "max_tokens": 1, "messages": [{}]}}`, `line 2: custom_id is required`},
		{"numeric custom_id", `{"custom_id": 7, "params": {"model": "m", "max_tokens": 1, "messages": [{}]}}`, `line 2: custom_id must be a string, got 7`},
		{"empty custom_id", claudeLine("", "x"), `line 2: custom_id is required`},
		{"custom_id with a space", claudeLine("a b", "x"), `line 2: custom_id "a b": an anthropic custom_id is 1..64 characters of [a-zA-Z0-9_-]`},
		{"custom_id with a dot", claudeLine("a.b", "x"), `line 2: custom_id "a.b": an anthropic custom_id`},
		{"custom_id of 65", claudeLine(long, "x"), `line 2: custom_id "` + long + `": an anthropic custom_id`},
		{"no params", `{"custom_id": "r2"}`, `line 2: params is required`},
		{"params a string", `{"custom_id": "r2", "params": "hello"}`, `line 2: params must be a JSON object (Messages API parameters), got "hello"`},
		{"no model", `{"custom_id": "r2", "params": {"max_tokens": 1, "messages": [{}]}}`, `line 2: params.model is required`},
		{"no max_tokens", `{"custom_id": "r2", "params": {"model": "m", "messages": [{}]}}`, `line 2: params.max_tokens is required`},
		{"fractional max_tokens", `{"custom_id": "r2", "params": {"model": "m", "max_tokens": 1.5, "messages": [{}]}}`, `line 2: params.max_tokens is required (an integer of at least 1)`},
		{"no messages", `{"custom_id": "r2", "params": {"model": "m", "max_tokens": 1, "messages": []}}`, `line 2: params.messages is required`},
		{"OpenAI line", `{"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": {}}`, `line 2: unknown field "body": a line is {"custom_id", "params"} (an OpenAI batch line? publish it without --provider anthropic)`},
		{"extra field", `{"custom_id": "r2", "params": {"model": "m", "max_tokens": 1, "messages": [{}]}, "note": 1}`, `line 2: unknown field "note"`},
		{"duplicate", claudeLine("r1", "again"), `line 2: custom_id "r1" is not unique (line 1 has it too)`},
	}
	for _, tt := range tests {
		_, err := readAnthropic(strings.NewReader(ok+"\n"+tt.line+"\n"+claudeLine("r3", "x")+"\n"), "k")
		require.Error(t, err, tt.name)
		require.Contains(t, err.Error(), tt.want, tt.name)
		require.NotContains(t, err.Error(), "\n", tt.name)
		require.NotContains(t, err.Error(), "requests[", "%s: names the line, not an index", tt.name)
	}

	_, err := readAnthropic(strings.NewReader("\n  \n"), "k")
	require.EqualError(t, err, "the file has no requests")
}

func TestAnthropicFileOfMoreThan100000Requests(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for i := range contract.MaxAnthropicRequests + 1 {
		fmt.Fprintf(&b, `{"custom_id":"r%d","params":{"model":"claude-haiku-4-5","max_tokens":1,"messages":[{"role":"user","content":"x"}]}}`+"\n", i)
	}
	n, err := scanAnthropic(strings.NewReader(b.String()), func(contract.RequestItem) error { return nil })
	require.EqualError(t, err, "line 100001: the file has more than 100000 requests, Anthropic's limit")
	require.Equal(t, contract.MaxAnthropicRequests, n)

	// Exactly the limit is accepted.
	exact := b.String()[:strings.LastIndex(strings.TrimSuffix(b.String(), "\n"), "\n")+1]
	n, err = scanAnthropic(strings.NewReader(exact), func(contract.RequestItem) error { return nil })
	require.NoError(t, err)
	require.Equal(t, contract.MaxAnthropicRequests, n)
}

// The command's errors are one line, exit status 1, and come before any
// connection (the NATS URL here answers nothing).
func TestPublishAnthropicErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(s), 0o644))
		return p
	}
	good := write("good.jsonl", claudeLine("a", "x")+"\n")
	bad := write("bad.jsonl", claudeLine("a", "x")+"\n"+claudeLine("no/slash", "x")+"\n")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--provider", "anthropic", "--key", "k1", bad}, `batchfleet: ` + bad + `: line 2: custom_id "no/slash": an anthropic custom_id is 1..64 characters of [a-zA-Z0-9_-]`},
		{[]string{"--provider", "anthropic", good}, `batchfleet: --key is required for an Anthropic JSONL file`},
		{[]string{"--provider", "anthropic", "--key", "bad key", good}, `batchfleet: --key "bad key": idempotency_key must be 1..128 characters`},
		{[]string{"--provider", "anthropic", "--key", "k:retry-1", good}, `batchfleet: --key "k:retry-1": idempotency_key must not end in`},
		{[]string{"--provider", "gemini", "--key", "k1", good}, `batchfleet: --provider "gemini": openai or anthropic`},
		{[]string{"--provider", "anthropic", "--key", "k1", filepath.Join(dir, "missing.jsonl")}, `batchfleet: open ` + filepath.Join(dir, "missing.jsonl")},
	} {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), append([]string{"publish", "--nats", "nats://127.0.0.1:1"}, tt.args...), &out, &errOut)
		require.Equal(t, 1, code, "%v", tt.args)
		require.True(t, strings.HasPrefix(errOut.String(), tt.want), "%v: %q", tt.args, errOut.String())
		require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "one line: %q", errOut.String())
		require.Empty(t, out.String())
	}
}

// lastRequest reads the batch.requests message published last.
func lastRequest(t *testing.T, js jetstream.JetStream) contract.Request {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream.Requests)
	require.NoError(t, err)
	m, err := s.GetLastMsgForSubject(ctx, contract.SubjectRequests)
	require.NoError(t, err)
	req, _, err := contract.Decode(m.Data)
	require.NoError(t, err)
	return req
}

func TestPublishAnthropicInline(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	path := filepath.Join(t.TempDir(), "claude.jsonl")
	require.NoError(t, os.WriteFile(path, []byte(claudeLine("a", "one")+"\n"+claudeLine("b", "two")+"\n"), 0o644))
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), []string{"publish", "--nats", ns.URL(), "--provider", "anthropic", "--key", "claude-inline", path}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "published claude-inline (2 requests, inline) to batch.requests\n", errOut.String())

	_, js := fleettest.Connect(t, ns.URL())
	req := lastRequest(t, js)
	require.Equal(t, "claude-inline", req.IdempotencyKey)
	require.Equal(t, contract.ProviderAnthropic, req.Provider)
	require.Equal(t, "/v1/messages", req.Endpoint)
	require.Empty(t, req.InputObject)
	require.Len(t, req.Requests, 2)
	require.Equal(t, "b", req.Requests[1].CustomID)
	require.JSONEq(t, `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"two"}]}`, string(req.Requests[1].Body))
}

// A file larger than one NATS message goes by reference: the contract's
// input lines in batch_intake under the job's key.
func TestPublishAnthropicLargeGoesAsInputObject(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t, func(o *server.Options) { o.MaxPayload = 16 << 10 })
	path := filepath.Join(t.TempDir(), "claude.jsonl")
	var b strings.Builder
	const n = 200
	for i := range n {
		b.WriteString(claudeLine(fmt.Sprintf("req-%03d", i), strings.Repeat("words ", 20)) + "\n")
	}
	require.NoError(t, os.WriteFile(path, []byte(b.String()), 0o644))
	require.Greater(t, b.Len(), 16<<10)
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), []string{"publish", "--nats", ns.URL(), "--provider", "anthropic", "--key", "claude-big", path}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "published claude-big (200 requests, input_object batch_intake/claude-big) to batch.requests\n", errOut.String())

	_, js := fleettest.Connect(t, ns.URL())
	req := lastRequest(t, js)
	require.Equal(t, contract.ProviderAnthropic, req.Provider)
	require.Equal(t, "/v1/messages", req.Endpoint)
	require.Equal(t, "claude-big", req.InputObject)
	require.Nil(t, req.Requests)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	obj, err := js.ObjectStore(ctx, contract.BucketIntake)
	require.NoError(t, err)
	r, err := obj.Get(ctx, "claude-big")
	require.NoError(t, err)
	defer r.Close()
	sc := bufio.NewScanner(r)
	i := 0
	for sc.Scan() {
		var v struct {
			CustomID string          `json:"custom_id"`
			Method   string          `json:"method"`
			URL      string          `json:"url"`
			Body     json.RawMessage `json:"body"`
		}
		require.NoError(t, json.Unmarshal(sc.Bytes(), &v))
		require.Equal(t, fmt.Sprintf("req-%03d", i), v.CustomID)
		require.Equal(t, "POST", v.Method)
		require.Equal(t, "/v1/messages", v.URL)
		require.Equal(t, "claude-sonnet-4-5", bodyField(t, v.Body, "model"))
		i++
	}
	require.NoError(t, sc.Err())
	require.Equal(t, n, i)
	_, _ = io.Copy(io.Discard, r)
}

func bodyField(t *testing.T, b []byte, field string) string {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(b, &m))
	s, _ := m[field].(string)
	return s
}
