package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// itemLine is one line of an items file.
func itemLine(id, text string) string {
	return fmt.Sprintf(`{"custom_id": %q, "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": %q}]}}`, id, text)
}

func writeItems(t *testing.T, lines ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "items.jsonl")
	require.NoError(t, os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o644))
	return p
}

// itemsOnStream reads every message on batch.items.
func itemsOnStream(t *testing.T, js jetstream.JetStream) []*jetstream.RawStreamMsg {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream.Items)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		out = append(out, m)
	}
	return out
}

func TestItemsPublishPutsOneMessagePerItem(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	path := writeItems(t,
		itemLine("a-1", "one <b>&</b>"),
		"",
		`{"custom_id": "a_2", "provider": "anthropic", "body": {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "two"}]}, "metadata": {"team": "x"}}`,
		`  {"body": {"model": "text-embedding-3-small", "input": "three"}, "endpoint": "/v1/embeddings", "custom_id": "A3"}  `,
	)
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), []string{"items", "publish", "--nats", ns.URL(), path}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "published 3 items to batch.items\n", errOut.String())
	require.Empty(t, out.String())

	_, js := fleettest.Connect(t, ns.URL())
	msgs := itemsOnStream(t, js)
	require.Len(t, msgs, 3)
	want := []struct{ id, provider, endpoint, model string }{
		{"a-1", contract.ProviderOpenAI, contract.DefaultEndpoint, "gpt-4o-mini"},
		{"a_2", contract.ProviderAnthropic, contract.AnthropicEndpoint, "claude-haiku-4-5"},
		{"A3", contract.ProviderOpenAI, "/v1/embeddings", "text-embedding-3-small"},
	}
	for i, m := range msgs {
		require.Equal(t, contract.SubjectItems, m.Subject)
		require.Equal(t, want[i].id, m.Header.Get("Nats-Msg-Id"))
		it, id, err := contract.DecodeItem(m.Data)
		require.NoError(t, err)
		require.Equal(t, want[i].id, id)
		require.Equal(t, want[i].provider, it.Provider)
		require.Equal(t, want[i].endpoint, it.Endpoint)
		require.Equal(t, want[i].model, it.Model())
		require.NotContains(t, string(m.Data), "\n")
	}
	require.Contains(t, string(msgs[0].Data), `"content":"one <b>&</b>"`, "the body as written, compact")
	require.JSONEq(t, `{"team":"x"}`, string(mustJSON(t, mustItem(t, msgs[1].Data).Metadata)))

	// Again, within the stream's duplicate window: the stream takes none.
	out.Reset()
	errOut.Reset()
	code = Execute(context.Background(), []string{"items", "publish", "--nats", ns.URL(), "-o", "json", path}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.JSONEq(t, `{"published": 3, "duplicates": 3}`, out.String())
	require.Empty(t, errOut.String())
	require.Len(t, itemsOnStream(t, js), 3)
}

func mustItem(t *testing.T, data []byte) contract.Item {
	t.Helper()
	it, _, err := contract.DecodeItem(data)
	require.NoError(t, err)
	return it
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// "-" reads the file from stdin.
func TestItemsPublishFromStdin(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	var out, errOut bytes.Buffer
	root := New(&out, &errOut)
	root.SetIn(strings.NewReader(itemLine("s-1", "x") + "\n" + itemLine("s-2", "y")))
	root.SetArgs(LongFlags(root, []string{"items", "publish", "-nats", ns.URL(), "-"}))
	require.NoError(t, root.ExecuteContext(context.Background()))
	require.Equal(t, "published 2 items to batch.items\n", errOut.String())
	_, js := fleettest.Connect(t, ns.URL())
	msgs := itemsOnStream(t, js)
	require.Len(t, msgs, 2)
	require.Equal(t, "s-2", msgs[1].Header.Get("Nats-Msg-Id"))

	root = New(&out, &errOut)
	root.SetIn(strings.NewReader(itemLine("s-3", "x") + "\n" + itemLine("s 4", "y")))
	root.SetArgs([]string{"items", "publish", "--nats", ns.URL(), "-"})
	require.EqualError(t, root.ExecuteContext(context.Background()),
		`stdin: line 2: custom_id "s 4" must be 1..64 characters of [A-Za-z0-9_-]`)
	require.Len(t, itemsOnStream(t, js), 2)
}

// A bad line refuses the whole file: nothing is published, the error
// names the line and the rule.
func TestItemsPublishRefusesABadFile(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	require.NoError(t, stream.Ensure(context.Background(), js, stream.Settings{}, stream.Items))
	ok := itemLine("r1", "fine")
	for _, tt := range []struct {
		name, line, want string
	}{
		{"bad custom_id", itemLine("r.2", "x"), `line 2: custom_id "r.2" must be 1..64 characters of [A-Za-z0-9_-]`},
		{"long custom_id", itemLine(strings.Repeat("x", 65), "x"), `line 2: custom_id "xxxx`},
		{"no custom_id", `{"body": {"model": "m"}}`, `line 2: custom_id is required`},
		{"custom_id a number", `{"custom_id": 7, "body": {"model": "m"}}`, `line 2: custom_id must be a string, got 7`},
		{"no body.model", `{"custom_id": "r2", "body": {"messages": []}}`, `line 2: body.model is required`},
		{"no body", `{"custom_id": "r2"}`, `line 2: body must be a JSON object`},
		{"bad provider", `{"custom_id": "r2", "provider": "gemini", "body": {"model": "m"}}`, `line 2: provider "gemini" is not one of openai, anthropic`},
		{"bad endpoint", `{"custom_id": "r2", "endpoint": "/v1/nope", "body": {"model": "m"}}`, `line 2: endpoint "/v1/nope" is not one of`},
		{"reserved metadata", `{"custom_id": "r2", "body": {"model": "m"}, "metadata": {"idempotency_key": "k"}}`, `line 2: metadata key "idempotency_key" is reserved`},
		{"not JSON", `{"custom_id": "r2", "body": {"model"`, `line 2: not a JSON object`},
		{"OpenAI batch line", `{"custom_id": "r2", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}`, `line 2: unknown field "method": an item is {"custom_id", "body"} with optional "provider", "endpoint", "metadata" (an OpenAI batch line?`},
		{"duplicate", itemLine("r1", "again"), `line 2: custom_id "r1" is not unique (line 1 has it too)`},
	} {
		path := writeItems(t, ok, tt.line, itemLine("r3", "x"))
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), []string{"items", "publish", "--nats", ns.URL(), "--wait", path}, &out, &errOut)
		require.Equal(t, 1, code, tt.name)
		require.True(t, strings.HasPrefix(errOut.String(), "batchfleet: "+path+": "+tt.want), "%s: %q", tt.name, errOut.String())
		require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "%s: one line: %q", tt.name, errOut.String())
		require.Empty(t, out.String(), tt.name)
	}
	require.Empty(t, itemsOnStream(t, js), "nothing published")
}

// An item larger than one NATS message of the server refuses the file.
func TestItemsPublishRefusesAnItemLargerThanAMessage(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t, func(o *server.Options) { o.MaxPayload = 4 << 10 })
	path := writeItems(t, itemLine("m-1", "small"), itemLine("m-2", strings.Repeat("big ", 1<<10)), itemLine("m-3", "small"))
	var out, errOut bytes.Buffer
	code := Execute(context.Background(), []string{"items", "publish", "--nats", ns.URL(), path}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Equal(t, "batchfleet: "+path+": line 2: the item is 4242 bytes as published; this server's messages take at most 3072 (max_payload 4096 less 1024 for headers)\n", errOut.String())
	_, js := fleettest.Connect(t, ns.URL())
	_, err := js.Stream(context.Background(), stream.Items)
	require.ErrorIs(t, err, jetstream.ErrStreamNotFound, "nothing published")
}

// Errors before any connection (the NATS URL answers nothing).
func TestItemsPublishUsageErrors(t *testing.T) {
	t.Parallel()
	empty := writeItems(t, "", "  ")
	good := writeItems(t, itemLine("u1", "x"))
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "batchfleet: items publish takes one FILE.jsonl (- for stdin)"},
		{[]string{empty}, "batchfleet: " + empty + ": the file has no items"},
		{[]string{"--since", "1h", good}, "batchfleet: --since applies only with --wait"},
		{[]string{"--timeout", "1m", good}, "batchfleet: --timeout applies only with --wait"},
		{[]string{"--wait", "--since", "soon", good}, `batchfleet: since "soon" is neither a duration`},
		{[]string{"-o", "yaml", good}, `batchfleet: unknown output format "yaml"`},
		{[]string{filepath.Join(t.TempDir(), "missing.jsonl")}, "batchfleet: open "},
	} {
		var out, errOut bytes.Buffer
		code := Execute(context.Background(), append([]string{"items", "publish", "--nats", "nats://127.0.0.1:1"}, tt.args...), &out, &errOut)
		require.Equal(t, 1, code, "%v", tt.args)
		require.True(t, strings.HasPrefix(errOut.String(), tt.want), "%v: %q", tt.args, errOut.String())
		require.Equal(t, 1, strings.Count(errOut.String(), "\n"), "one line: %q", errOut.String())
		require.Empty(t, out.String())
	}
}

// fakeFleet answers each batch.items message with a batch.item.completed
// (Nats-Msg-Id <custom_id>:item), as the fleet does, except for the
// custom_ids in skip (completed earlier, or never); after answers it calls
// after with the custom_id (to publish more events).
func fakeFleet(t *testing.T, js jetstream.JetStream, skip []string, after func(id string)) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{}, stream.Items, stream.Events))
	c, err := js.CreateOrUpdateConsumer(ctx, stream.Items, jetstream.ConsumerConfig{Durable: "fake-fleet", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	var mu sync.Mutex // held while answering; the cleanup waits for it
	stopped := false
	cc, err := c.Consume(func(m jetstream.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		it, id, err := contract.DecodeItem(m.Data())
		if err != nil {
			t.Errorf("fake fleet: %s: %v", m.Data(), err)
		}
		if !slices.Contains(skip, id) {
			completeItem(t, js, id, contract.OutcomeSucceeded, it.Metadata, true)
			if after != nil {
				after(id)
			}
		}
		_ = m.Ack()
	})
	require.NoError(t, err)
	t.Cleanup(func() {
		cc.Stop()
		mu.Lock()
		stopped = true
		mu.Unlock()
	})
}

// completeItem publishes a batch.item.completed (with the fleet's
// Nats-Msg-Id when msgID).
func completeItem(t *testing.T, js jetstream.JetStream, id, outcome string, meta map[string]string, msgID bool) {
	ev := contract.ItemCompleted{CustomID: id, Outcome: outcome, JobKey: "pack-1", BatchID: "batch_1", Metadata: meta}
	if meta == nil {
		ev.Metadata = map[string]string{}
	}
	var opts []stream.PublishOpt
	if msgID {
		opts = append(opts, stream.WithMsgID(contract.ItemCompletedMsgID(id)))
	}
	if _, err := stream.Publish(context.Background(), js, contract.SubjectItemCompleted, ev, opts...); err != nil {
		t.Errorf("publish %s of %s: %v", contract.SubjectItemCompleted, id, err)
	}
}

func completedLines(t *testing.T, out string) []contract.ItemCompleted {
	t.Helper()
	var evs []contract.ItemCompleted
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var ev contract.ItemCompleted
		require.NoError(t, json.Unmarshal([]byte(l), &ev), l)
		evs = append(evs, ev)
	}
	return evs
}

// --wait prints the one event of each of the file's items, those of an
// earlier run included, and nothing else; it ends when all are in.
func TestItemsPublishWaitPrintsTheFilesEvents(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	require.NoError(t, stream.Ensure(context.Background(), js, stream.Settings{}, stream.Events))
	// Completed before this run: the fleet will not answer it again.
	completeItem(t, js, "done-1", contract.OutcomeFailed, nil, true)
	completeItem(t, js, "other-0", contract.OutcomeSucceeded, nil, true)
	fakeFleet(t, js, []string{"done-1"}, func(id string) {
		if id == "w-1" {
			completeItem(t, js, "w-1", contract.OutcomeExpired, nil, false) // a second event: ignored
			completeItem(t, js, "other-1", contract.OutcomeSucceeded, nil, true)
		}
	})
	path := writeItems(t,
		`{"custom_id": "w-1", "body": {"model": "gpt-4o-mini"}, "metadata": {"n": "1"}}`,
		itemLine("done-1", "earlier"),
		itemLine("w-2", "two"),
	)
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := Execute(ctx, []string{"items", "publish", "-wait", "--nats", ns.URL(), path}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	require.Equal(t, "published 3 items to batch.items\n3 items: 2 succeeded, 1 failed (1 completed before this run)\n", errOut.String())

	evs := completedLines(t, out.String())
	require.Len(t, evs, 3, out.String())
	got := map[string]contract.ItemCompleted{}
	for _, ev := range evs {
		got[ev.CustomID] = ev
	}
	require.Len(t, got, 3, "each custom_id once: %s", out.String())
	require.Equal(t, contract.OutcomeFailed, got["done-1"].Outcome)
	require.Equal(t, contract.OutcomeSucceeded, got["w-1"].Outcome, "the first event of w-1")
	require.Equal(t, map[string]string{"n": "1"}, got["w-1"].Metadata)
	require.Equal(t, contract.OutcomeSucceeded, got["w-2"].Outcome)
	require.Equal(t, "done-1", evs[0].CustomID, "the earlier event comes first")
}

// --timeout ends the wait with an error naming the missing items.
func TestItemsPublishWaitTimeout(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	fakeFleet(t, js, []string{"t-2"}, nil)
	path := writeItems(t, itemLine("t-1", "x"), itemLine("t-2", "never answered"))
	var out, errOut bytes.Buffer
	start := time.Now()
	code := Execute(context.Background(), []string{"items", "publish", "--wait", "--timeout", "1s", "--nats", ns.URL(), path}, &out, &errOut)
	require.Equal(t, 1, code)
	require.Less(t, time.Since(start), 15*time.Second)
	require.Equal(t, "published 2 items to batch.items\n"+
		"2 items: 1 succeeded, 0 failed, 1 missing\n"+
		"batchfleet: timed out after 1s: 1 of 2 items still missing their batch.item.completed (t-2)\n", errOut.String())
	evs := completedLines(t, out.String())
	require.Len(t, evs, 1)
	require.Equal(t, "t-1", evs[0].CustomID)
}

// Ctrl-C ends the wait: the outcomes so far and an error.
func TestItemsPublishWaitInterrupted(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	fakeFleet(t, js, []string{"i-1"}, nil)
	path := writeItems(t, itemLine("i-1", "x"))
	var out, errOut syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- Execute(ctx, []string{"items", "publish", "--wait", "--nats", ns.URL(), path}, &out, &errOut)
	}()
	fleettest.WaitFor(t, 10*time.Second, func() bool { return strings.Contains(errOut.String(), "published 1 items") }, "published")
	cancel()
	select {
	case c := <-code:
		require.Equal(t, 1, c)
	case <-time.After(10 * time.Second):
		t.Fatal("items publish --wait did not stop on Ctrl-C")
	}
	require.Equal(t, "published 1 items to batch.items\n1 items: 0 succeeded, 0 failed, 1 missing\n"+
		"batchfleet: interrupted: 1 of 1 items still missing their batch.item.completed (i-1)\n", errOut.String())
	require.Empty(t, out.String())
}

// An item whose ack fails is an error naming its line.
func TestItemsPublishFailedAck(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := context.Background()
	cfg, err := stream.Settings{}.Config(stream.Items)
	require.NoError(t, err)
	cfg.MaxMsgs, cfg.Discard = 1, jetstream.DiscardNew // the second item is refused
	_, err = js.CreateStream(ctx, cfg)
	require.NoError(t, err)
	path := writeItems(t, itemLine("f-1", "x"), itemLine("f-2", "y"))
	var out, errOut bytes.Buffer
	code := Execute(ctx, []string{"items", "publish", "--nats", ns.URL(), path}, &out, &errOut)
	require.Equal(t, 1, code)
	require.True(t, strings.HasPrefix(errOut.String(), "batchfleet: "+path+`: line 2: publish custom_id "f-2" to batch.items: `), errOut.String())
	require.Contains(t, errOut.String(), ": 1 of 2 items published (publishing the file again is safe")
	require.Len(t, itemsOnStream(t, js), 1)
}
