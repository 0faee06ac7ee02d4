package e2e

// End-to-end tests of single requests (contract v1.1, "Single requests";
// issue #14): items published one per message on batch.items are packed
// into vendor batches by the submitters' packers and answered one
// batch.item.completed each.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// item builds one batch.items message of model; metadata echoes its index.
func item(id, model string, i int) []byte {
	data, _ := json.Marshal(contract.Item{CustomID: id, Body: json.RawMessage(fmt.Sprintf(
		`{"model":%q,"messages":[{"role":"user","content":"item %d: say something"}]}`, model, i)),
		Metadata: map[string]string{"i": fmt.Sprint(i)}})
	return data
}

// itemsOf builds n items "<prefix>-<i>" over models in turn, with their
// custom_ids.
func itemsOf(prefix string, n int, models ...string) ([][]byte, []string) {
	var msgs [][]byte
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%05d", prefix, i)
		ids = append(ids, id)
		msgs = append(msgs, item(id, models[i%len(models)], i))
	}
	return msgs, ids
}

// publishItems publishes messages on batch.items, pipelined, with each
// custom_id as Nats-Msg-Id when ids is set.
func (f *fleet) publishItems(msgs [][]byte, ids []string) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(f.t, stream.EnsureMissing(ctx, f.JS, stream.Settings{}, stream.Items))
	var futs []jetstream.PubAckFuture
	for i, data := range msgs {
		// The stall wait covers a slow server (a loaded CI machine): the
		// default 200ms gives up while 4,000 publishes are unacknowledged.
		opts := []jetstream.PublishOpt{jetstream.WithStallWait(time.Minute)}
		if ids != nil && ids[i] != "" {
			opts = append(opts, jetstream.WithMsgID(ids[i]))
		}
		fut, err := f.JS.PublishMsgAsync(&nats.Msg{Subject: contract.SubjectItems, Data: data}, opts...)
		require.NoError(f.t, err)
		futs = append(futs, fut)
	}
	select {
	case <-f.JS.PublishAsyncComplete():
	case <-ctx.Done():
		f.t.Fatal("items not acknowledged in time")
	}
	for _, fut := range futs {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			f.t.Fatalf("publish item: %v", err)
		}
	}
}

// readItems reads one batch.item.completed per id, failing on a second or
// an unknown custom_id.
func readItems(t *testing.T, ch <-chan contract.ItemCompleted, ids []string, timeout time.Duration) map[string]contract.ItemCompleted {
	t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[string]contract.ItemCompleted{}
	for _, ev := range fleettest.ReadN(t, ch, len(ids), timeout) {
		require.True(t, want[ev.CustomID], "batch.item.completed for unexpected custom_id %q", ev.CustomID)
		_, dup := got[ev.CustomID]
		require.False(t, dup, "second batch.item.completed for %s", ev.CustomID)
		got[ev.CustomID] = ev
	}
	return got
}

// itemsNoMore publishes a sentinel item of model after everything else and
// waits for its answer: packed after the others in its group's order, any
// second answer to an earlier item would have come before it.
func (f *fleet) itemsNoMore(ch <-chan contract.ItemCompleted, sentinel, model string) {
	f.t.Helper()
	f.publishItems([][]byte{item(sentinel, model, 0)}, []string{sentinel})
	for {
		select {
		case ev := <-ch:
			if ev.CustomID == sentinel {
				require.Equal(f.t, contract.OutcomeSucceeded, ev.Outcome)
				return
			}
			f.t.Fatalf("unexpected extra batch.item.completed: %s %s", ev.CustomID, ev.Outcome)
		case <-time.After(90 * time.Second):
			f.t.Fatalf("sentinel item %s never completed", sentinel)
		}
	}
}

// packBatches returns the vendor batches of pack jobs (by model), and the
// requests they carried in all.
func (f *fleet) packBatches() (map[string][]emulator.BatchInfo, int) {
	byModel := map[string][]emulator.BatchInfo{}
	requests := 0
	for _, b := range f.vendorBatches() {
		if !strings.HasPrefix(b.Metadata[contract.MetaIdempotencyKey], contract.PackKeyPrefix) {
			continue
		}
		byModel[b.Model] = append(byModel[b.Model], b)
		requests += int(b.RequestCounts.Total)
	}
	return byModel, requests
}

// 10,000 items over two models, packs of at most 2,500: exactly two packs
// per model, every custom_id answered once with its metadata, and an item
// republished afterwards yields no second vendor request and no second
// event.
func TestItemsPackedAndAnswered(t *testing.T) {
	// DEDUP_WINDOW 1s: the republish below comes after the streams'
	// de-duplication window, so only the custom_id claims can stop it.
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"PACK_MAX_REQUESTS=2500", "PACK_MAX_AGE=10s", "SUBMIT_RATE=0", "DEDUP_WINDOW=1s"}})
	f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
	models := []string{"gpt-4o-mini", "gpt-4.1-mini"}
	const n = 10000
	msgs, ids := itemsOf("it", n, models...)
	start := time.Now()
	f.publishItems(msgs, ids)
	t.Logf("published %d items in %s", n, time.Since(start).Round(time.Millisecond))
	got := readItems(t, answers, ids, 4*time.Minute)
	t.Logf("%d batch.item.completed, %s after the first publish", len(got), time.Since(start).Round(time.Millisecond))
	for i, id := range ids {
		ev := got[id]
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%s: %+v", id, ev.Error)
		require.NotNil(t, ev.Response)
		require.Equal(t, 200, ev.Response.StatusCode)
		require.Equal(t, fmt.Sprint(i), ev.Metadata["i"], "metadata echoed")
		require.True(t, strings.HasPrefix(ev.JobKey, contract.PackKeyPrefix), ev.JobKey)
		require.NotEmpty(t, ev.BatchID)
		require.Contains(t, string(ev.Response.Body), models[i%2], "the response of the item's own model")
	}
	byModel, requests := f.packBatches()
	require.Equal(t, n, requests, "vendor requests")
	for _, m := range models {
		require.Len(t, byModel[m], 2, "packs of %s", m)
		for _, b := range byModel[m] {
			require.EqualValues(t, 2500, b.RequestCounts.Total, "pack %s", b.Metadata[contract.MetaIdempotencyKey])
		}
	}

	// Republished later (past the de-duplication window): remembered, no
	// second request or event.
	f.publishItems(msgs[:100], nil)
	f.itemsNoMore(answers, "it-sentinel", models[0])
	t.Logf("republished 100, sentinel answered %s after the first publish", time.Since(start).Round(time.Millisecond))
	copies := 0
	for _, p := range f.procs["submitter"] {
		for _, l := range p.Lines() {
			var e struct {
				Copies int `json:"copies"`
			}
			if json.Unmarshal([]byte(l), &e) == nil {
				copies += e.Copies
			}
		}
	}
	require.Equal(t, 100, copies, "the republished items were stopped by their claims")
	_, requests = f.packBatches()
	require.Equal(t, n+1, requests, "vendor requests after republishing 100 items and one sentinel")
}

// A packer killed with SIGKILL while its pack is open loses and
// duplicates nothing: the other submitter's packer takes the group over
// and re-reads the open pack's items from the group's checkpoint.
func TestPackerKilledMidPack(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"PACK_MAX_AGE=8s", "PACK_LOCK_TTL=3s", "SUBMIT_RATE=0"}})
	subs := f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
	const n = 3000
	msgs, ids := itemsOf("kill", n, "gpt-4o-mini")
	f.publishItems(msgs[:n/2], ids[:n/2])
	// Kill the group's leader while its pack is open.
	var lead *fleettest.Process
	fleettest.WaitFor(t, 20*time.Second, func() bool {
		for _, p := range subs {
			for _, l := range p.Lines() {
				if strings.Contains(l, "leading pack group") {
					lead = p
					return true
				}
			}
		}
		return false
	}, "a packer leads the group")
	fleettest.WaitFor(t, 20*time.Second, func() bool {
		st, err := f.JS.Stream(context.Background(), stream.Items)
		return err == nil && st.CachedInfo().State.Msgs == 0
	}, "half of the items staged (batch.items drained)")
	lead.Kill()
	t.Logf("killed the leading packer (pid %d) with %d items staged", lead.Pid(), n/2)
	f.publishItems(msgs[n/2:], ids[n/2:])
	f.start("submitter", 1)
	got := readItems(t, answers, ids, 3*time.Minute)
	for _, id := range ids {
		require.Equal(t, contract.OutcomeSucceeded, got[id].Outcome, id)
	}
	f.itemsNoMore(answers, "kill-sentinel", "gpt-4o-mini")
	byModel, requests := f.packBatches()
	require.Equal(t, n+1, requests, "vendor requests: each item once")
	t.Logf("%d items answered once each by %d packs", n, len(byModel["gpt-4o-mini"]))
}

// An item that is invalid or too large gets its own failed
// batch.item.completed (when its custom_id is valid) and a dead letter on
// batch.dlq.items; the others go on.
func TestInvalidItems(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"PACK_MAX_AGE=1s", "PACK_MAX_BYTES=4096", "SUBMIT_RATE=0"}})
	f.startAll()
	answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
	dead := make(chan *nats.Msg, 10)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	require.NoError(t, stream.Ensure(ctx, f.JS, stream.Settings{}, stream.DLQ))
	c, err := f.JS.OrderedConsumer(ctx, stream.DLQ, jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.SubjectDLQItems}})
	require.NoError(t, err)
	cc, err := c.Consume(func(m jetstream.Msg) { dead <- &nats.Msg{Data: m.Data(), Header: m.Headers()} })
	require.NoError(t, err)
	t.Cleanup(cc.Stop)

	big := fmt.Sprintf(`{"custom_id":"too-big","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}}`, strings.Repeat("x", 8000))
	msgs := [][]byte{
		item("good-1", "gpt-4o-mini", 1),
		[]byte(`{"custom_id":"no-model","body":{"messages":[]}}`),
		[]byte(big),
		[]byte(`not json`),
		[]byte(`{"custom_id":"bad id!","body":{"model":"gpt-4o-mini"}}`),
		item("good-2", "gpt-4o-mini", 2),
	}
	start := time.Now()
	f.publishItems(msgs, nil)
	got := readItems(t, answers, []string{"good-1", "good-2", "no-model", "too-big"}, 90*time.Second)
	t.Logf("4 items answered %s after their publish", time.Since(start).Round(time.Millisecond))
	require.Equal(t, contract.OutcomeSucceeded, got["good-1"].Outcome)
	require.Equal(t, contract.OutcomeSucceeded, got["good-2"].Outcome)
	require.Equal(t, contract.OutcomeFailed, got["no-model"].Outcome)
	require.Equal(t, contract.CodeInvalidInput, got["no-model"].Error.Code)
	require.Contains(t, got["no-model"].Error.Message, "body.model")
	require.Equal(t, contract.OutcomeFailed, got["too-big"].Outcome)
	require.Contains(t, got["too-big"].Error.Message, "PACK_MAX_BYTES")
	require.Empty(t, got["too-big"].JobKey, "refused at intake: no pack")
	codes := map[string]int{}
	for _, m := range fleettest.ReadN(t, dead, 4, 30*time.Second) {
		require.NotEmpty(t, m.Header.Get(contract.HeaderError))
		codes[m.Header.Get(contract.HeaderErrorCode)]++
	}
	require.Equal(t, map[string]int{contract.CodeInvalidInput: 3, contract.CodeInvalidJSON: 1}, codes, "dead letters by code")
	f.itemsNoMore(answers, "invalid-sentinel", "gpt-4o-mini")
	t.Logf("sentinel answered %s after the first publish", time.Since(start).Round(time.Millisecond))
}

// A pack the vendor refuses with token_limit_exceeded (two packs of one
// model over the vendor's enqueued token limit at once) waits and goes
// again; every item is answered once.
func TestPackTokenLimit(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_ENQUEUED_TOKEN_LIMIT=4000", "EMULATOR_IN_PROGRESS_FOR=2s"},
		WorkerEnv:   []string{"PACK_MAX_REQUESTS=400", "PACK_MAX_AGE=2s", "TOKEN_LIMIT_REQUEUE_DELAY=500ms", "SUBMIT_RATE=0"},
	})
	f.startAll()
	answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	const n = 1200
	msgs, ids := itemsOf("tok", n, "gpt-4o-mini")
	f.publishItems(msgs, ids)
	got := readItems(t, answers, ids, 3*time.Minute)
	for _, id := range ids {
		require.Equal(t, contract.OutcomeSucceeded, got[id].Outcome, id)
	}
	refused := 0
	for _, b := range f.vendorBatches() {
		if b.Status == emulator.StatusFailed {
			refused++
		}
	}
	require.Positive(t, refused, "the vendor refused a pack (the test exercised the limit)")
	for _, r := range fleettest.ReadN(t, retries, refused, 10*time.Second) {
		require.Equal(t, "token_limit_exceeded", r.Reason)
		require.True(t, strings.HasPrefix(r.IdempotencyKey, contract.PackKeyPrefix), r.IdempotencyKey)
	}
	t.Logf("%d packs refused for the token limit, re-queued; %d items answered once each", refused, n)
}

// A worker killed at each step between staging and answering (the pack
// sealed but not stored, the job published but the group's state not
// advanced, the answers half published) loses and duplicates nothing:
// the next leader rebuilds the sealed pack from its stage range, the job
// key absorbs a second publish, and the fan-out resumes after its last
// recorded chunk.
func TestPackCrashWindows(t *testing.T) {
	for _, tc := range []struct{ point, kind string }{
		{"pack/after-seal", "submitter"},
		{"pack/after-publish", "submitter"},
		{"pack/fanout-after-chunk", "notifier"},
	} {
		t.Run(strings.ReplaceAll(tc.point, "/", "_"), func(t *testing.T) {
			t.Parallel() // mostly waiting for a kill and a takeover
			f := startFleet(t, fleetOpts{WorkerEnv: []string{"PACK_MAX_AGE=1s", "PACK_LOCK_TTL=3s", "SUBMIT_RATE=0"}})
			armed := f.start(tc.kind, 1, failpoint.Env+"="+tc.point+"=kill")[0]
			if tc.kind == "submitter" {
				f.start("notifier", 1)
			} else {
				f.start("submitter", 1)
			}
			f.start("poller", 1)
			answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
			const n = 2500
			msgs, ids := itemsOf("crash", n, "gpt-4o-mini")
			f.publishItems(msgs, ids)
			awaitKilled(t, armed, 60*time.Second)
			f.start(tc.kind, 1)
			got := readItems(t, answers, ids, 2*time.Minute)
			for _, id := range ids {
				require.Equal(t, contract.OutcomeSucceeded, got[id].Outcome, id)
			}
			f.itemsNoMore(answers, "crash-sentinel", "gpt-4o-mini")
			byModel, requests := f.packBatches()
			require.Equal(t, n+1, requests, "vendor requests: each item once")
			t.Logf("killed at %s: %d items answered once each, %d vendor batches", tc.point, n, len(byModel["gpt-4o-mini"]))
		})
	}
}

// Single requests of both providers: Anthropic items are packed into an
// Anthropic Message Batch (custom_ids rewritten to the pack's tags on the
// way in and back on the way out) and answered like OpenAI ones.
func TestItemsOfBothProviders(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"PACK_MAX_AGE=1s", "SUBMIT_RATE=0"}})
	f.startAll()
	answers := subscribe[contract.ItemCompleted](f, contract.SubjectItemCompleted)
	var msgs [][]byte
	var ids []string
	for i := range 6 {
		id := fmt.Sprintf("both-%d", i)
		ids = append(ids, id)
		if i%2 == 0 {
			msgs = append(msgs, item(id, "gpt-4o-mini", i))
			continue
		}
		data, _ := json.Marshal(contract.Item{CustomID: id, Provider: contract.ProviderAnthropic,
			Body:     json.RawMessage(fmt.Sprintf(`{"model":%q,"max_tokens":64,"messages":[{"role":"user","content":"item %d"}]}`, claudeModel, i)),
			Metadata: map[string]string{"i": fmt.Sprint(i)}})
		msgs = append(msgs, data)
	}
	f.publishItems(msgs, ids)
	got := readItems(t, answers, ids, 90*time.Second)
	for i, id := range ids {
		ev := got[id]
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%s: %+v", id, ev.Error)
		require.Equal(t, fmt.Sprint(i), ev.Metadata["i"])
		if i%2 == 1 {
			require.Contains(t, ev.JobKey, "claude", "an Anthropic pack")
			require.Contains(t, string(ev.Response.Body), `"type":"message"`, "a Message")
		}
	}
	providers := map[string]int{}
	for _, b := range f.vendorBatches() {
		providers[b.Provider]++
	}
	require.Equal(t, map[string]int{emulator.ProviderOpenAI: 1, emulator.ProviderAnthropic: 1}, providers, "one pack per provider")
}
