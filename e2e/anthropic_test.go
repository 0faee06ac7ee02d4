package e2e

// End-to-end tests of Anthropic jobs (contract v1.1, "Providers"; issue
// #13): the fleet runs them through the emulator's Message Batches API
// with the guarantees it gives OpenAI jobs. Anthropic batches carry no
// metadata: the emulator's admin view links a batch to its job only
// through its custom_ids, which the fleet makes "<tag>-<n>" (tag =
// batchapi.JobTag of the vendor idempotency key), and request outcomes
// are chosen through params.metadata.user_id, which the fleet leaves as
// it is.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

const claudeModel = "claude-sonnet-4-5"

// anthropicEnv keeps the Anthropic runs fast: quick retries, short call
// deadlines and margins (a create whose answer is lost is searched for
// 2.5s after it started), no fleet-wide create rate.
var anthropicEnv = []string{"RETRY_BACKOFF=200ms", "VENDOR_CALL_TIMEOUT=2s", "SUBMIT_CREATE_MARGIN=500ms", "SUBMIT_RATE=0"}

// anthropicRequests builds an Anthropic job's requests: good ones, then
// one per trigger word (emulator.TriggerFailOnce, ...), which chooses the
// request's outcome through its params.metadata.user_id (unique per
// request, so "fail-once" fails once per request). custom_ids are
// "<key>-ok-<i>" and "<key>-<trigger>-<i>"; the prompt of request i is
// 8*i characters longer than that of request i-1, so its Message's
// input_tokens tell which request it answers.
func anthropicRequests(key string, good int, triggers ...string) []contract.RequestItem {
	var out []contract.RequestItem
	add := func(name string, trigger bool) {
		i := len(out)
		id := fmt.Sprintf("%s-%s-%d", key, name, i)
		userID := "user-" + id
		if trigger {
			userID = name + "-" + id
		}
		prompt := fmt.Sprintf("request %d of %s %s", i, key, strings.Repeat("x", 8*i))
		out = append(out, contract.RequestItem{CustomID: id, Body: []byte(fmt.Sprintf(
			`{"model":%q,"max_tokens":64,"messages":[{"role":"user","content":%q}],"metadata":{"user_id":%q}}`,
			claudeModel, prompt, userID))})
	}
	for range good {
		add("ok", false)
	}
	for _, tr := range triggers {
		add(tr, true)
	}
	return out
}

// anthropicJob is an Anthropic batch.requests message.
func anthropicJob(key string, reqs []contract.RequestItem) contract.Request {
	return contract.Request{IdempotencyKey: key, Provider: contract.ProviderAnthropic, Requests: reqs}
}

// requireMessage checks a merged results line is a success whose body is
// the Message the emulator answered for a request of vendor key tagKey,
// and returns its input_tokens.
func requireMessage(t *testing.T, l map[string]any, tagKey string, attempt int) float64 {
	t.Helper()
	id := l["custom_id"]
	require.Equal(t, "succeeded", l["status"], "%s: %v", id, l)
	require.Equal(t, float64(http.StatusOK), l["status_code"], id)
	require.Equal(t, float64(attempt), l["attempt"], id)
	body, ok := l["body"].(map[string]any)
	require.True(t, ok, "%s: body is not an object: %v", id, l["body"])
	require.Equal(t, "message", body["type"], id)
	require.Equal(t, "assistant", body["role"], id)
	require.Equal(t, claudeModel, body["model"], id)
	require.True(t, strings.HasPrefix(fmt.Sprint(body["id"]), "msg_"), "%s: message id %v", id, body["id"])
	content, _ := body["content"].([]any)
	require.Len(t, content, 1, id)
	text := fmt.Sprint(content[0].(map[string]any)["text"])
	// The emulator's reply names the vendor custom_id it answered.
	require.Contains(t, text, "reply to request "+batchapi.JobTag(tagKey)+"-", id)
	usage, _ := body["usage"].(map[string]any)
	require.NotNil(t, usage, id)
	return usage["input_tokens"].(float64)
}

// requireFailed checks a merged results line is a failure with the given
// error code, from the given attempt.
func requireFailed(t *testing.T, l map[string]any, code string, attempt int) {
	t.Helper()
	id := l["custom_id"]
	require.Equal(t, "failed", l["status"], "%s: %v", id, l)
	require.Equal(t, float64(attempt), l["attempt"], "%s: %v", id, l)
	e, ok := l["error"].(map[string]any)
	require.True(t, ok, "%s: no error object: %v", id, l)
	require.Equal(t, code, e["code"], "%s: %v", id, l)
}

// anthBatch is one of the emulator's Anthropic batches, attributed to a
// job through the tag of its custom_ids.
type anthBatch struct {
	emulator.BatchInfo
	VendorKey string // the job's key or a retry key (key:retry-n)
	Job       string
	Cancelled bool // a cancel of it was accepted
}

// Ran reports whether any of its requests executed.
func (b anthBatch) Ran() bool { return b.RequestCounts.Completed+b.RequestCounts.Failed > 0 }

// anthropicBatches returns every Anthropic batch the emulator holds,
// attributed to one of jobs (or to one of their first maxRetry retry
// keys). It fails on a batch of no such job, and on one whose custom_ids
// are not "<tag>-0".."<tag>-<n-1>" of a single tag.
func (f *fleet) anthropicBatches(jobs []string, maxRetry int) []anthBatch {
	f.t.Helper()
	tags := map[string]string{}
	for _, j := range jobs {
		tags[batchapi.JobTag(j)] = j
		for n := 1; n <= maxRetry; n++ {
			tags[batchapi.JobTag(contract.RetryKey(j, n))] = contract.RetryKey(j, n)
		}
	}
	var list struct {
		Data []emulator.BatchInfo `json:"data"`
	}
	f.adminGet("/_emulator/batches?provider="+emulator.ProviderAnthropic, &list)
	cancelled := map[string]bool{}
	for _, c := range f.calls(emulator.OpAnthropicCancel) {
		if c.Status == http.StatusOK {
			cancelled[c.BatchID] = true
		}
	}
	var out []anthBatch
	for _, b := range list.Data {
		require.Equal(f.t, emulator.ProviderAnthropic, b.Provider)
		require.True(f.t, strings.HasPrefix(b.ID, "msgbatch_"), b.ID)
		require.NotEmpty(f.t, b.CustomIDs, b.ID)
		tag, _, ok := batchapi.ParseAnthropicCustomID(b.CustomIDs[0])
		require.True(f.t, ok, "batch %s: custom_id %q is not the fleet's <tag>-<n>", b.ID, b.CustomIDs[0])
		seen := map[int]bool{}
		for _, id := range b.CustomIDs {
			t2, n, ok := batchapi.ParseAnthropicCustomID(id)
			require.True(f.t, ok && t2 == tag, "batch %s mixes custom_ids %q and %q", b.ID, b.CustomIDs[0], id)
			seen[n] = true
		}
		for n := range len(b.CustomIDs) {
			require.True(f.t, seen[n], "batch %s: custom_ids %v are not %s-0..%d", b.ID, b.CustomIDs, tag, len(b.CustomIDs)-1)
		}
		key, ok := tags[tag]
		require.True(f.t, ok, "batch %s (tag %s, %d requests) belongs to no job of the test", b.ID, tag, len(b.CustomIDs))
		job, _ := contract.SplitRetryKey(key)
		out = append(out, anthBatch{BatchInfo: b, VendorKey: key, Job: job, Cancelled: cancelled[b.ID]})
	}
	return out
}

// countCalls counts logged calls of op answered with status.
func (f *fleet) countCalls(op string, status int) int {
	f.t.Helper()
	n := 0
	for _, c := range f.calls(op) {
		if c.Status == status {
			n++
		}
	}
	return n
}

// checkAnthropicPromises checks the fleet's promises for Anthropic jobs
// against the emulator's batches: every batch is in its job's batch_ids,
// every msgbatch_ id of a job is a batch of that job, and no vendor key
// has two batches that were not cancelled. It returns the batches by
// vendor key.
func (f *fleet) checkAnthropicPromises(got map[string]contract.Completed, batches []anthBatch) map[string][]anthBatch {
	f.t.Helper()
	byKey := map[string][]anthBatch{}
	byID := map[string]anthBatch{}
	for _, b := range batches {
		ev, ok := got[b.Job]
		require.True(f.t, ok, "batch %s of job %s, which has no batch.completed", b.ID, b.Job)
		require.Contains(f.t, ev.BatchIDs, b.ID, "orphan: vendor batch %s of %s (%s) not in its batch_ids", b.ID, b.Job, b.VendorKey)
		byKey[b.VendorKey] = append(byKey[b.VendorKey], b)
		byID[b.ID] = b
	}
	for key, ev := range got {
		for _, id := range ev.BatchIDs {
			if strings.HasPrefix(id, "msgbatch_") {
				b, ok := byID[id]
				require.True(f.t, ok, "%s lists %s, which the emulator does not hold", key, id)
				require.Equal(f.t, key, b.Job, "%s lists %s, a batch of %s", key, id, b.Job)
			}
		}
	}
	for key, bs := range byKey {
		live := 0
		for _, b := range bs {
			if !b.Cancelled {
				live++
			}
		}
		require.LessOrEqual(f.t, live, 1, "vendor key %s has %d batches not cancelled: %+v", key, live, bs)
	}
	return byKey
}

// anthropicNoMore is noMore with an Anthropic sentinel job.
func (f *fleet) anthropicNoMore(completed <-chan contract.Completed, sentinel string) {
	f.t.Helper()
	f.publish(anthropicJob(sentinel, anthropicRequests(sentinel, 1)), true)
	for {
		select {
		case ev := <-completed:
			if ev.IdempotencyKey == sentinel {
				return
			}
			f.t.Fatalf("unexpected extra batch.completed: %s %s", ev.IdempotencyKey, ev.Outcome)
		case <-time.After(60 * time.Second):
			f.t.Fatalf("sentinel %s never completed", sentinel)
		}
	}
}

// 2 jobs of 3 requests end succeeded, one vendor batch each whose
// custom_ids are the fleet's "<tag>-<n>"; the merged results carry the
// producer's custom_ids, each with the Message answering its own request.
func TestAnthropicHappyPath(t *testing.T) {
	// Batches run 2s, so every one is seen in_progress before it ends.
	f := startFleet(t, fleetOpts{EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=2s"}, WorkerEnv: anthropicEnv})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	started := subscribe[contract.State](f, contract.StateSubject(contract.StatusInProgress))
	ended := subscribe[contract.State](f, contract.StateSubject(contract.StatusCompleted))
	reqs := map[string][]contract.RequestItem{}
	var keys []string
	for i := range 2 {
		k := fmt.Sprintf("anth-happy-%d", i)
		keys = append(keys, k)
		reqs[k] = anthropicRequests(k, 3)
		req := anthropicJob(k, reqs[k])
		req.Metadata = map[string]string{"job": k}
		f.publish(req, true)
	}
	got, _ := f.readOneEach(completed, keys, 60*time.Second)
	for _, k := range keys {
		ev := got[k]
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%s: %+v", k, ev.Error)
		require.Equal(t, contract.Counts{Total: 3, Completed: 3}, ev.RequestCounts, k)
		require.Len(t, ev.BatchIDs, 1, k)
		require.True(t, strings.HasPrefix(ev.BatchIDs[0], "msgbatch_"), ev.BatchIDs[0])
		require.Equal(t, map[string]string{"job": k}, ev.Metadata)
		require.Nil(t, ev.Error)
		require.NotNil(t, ev.Results)
		require.Equal(t, 3, ev.Results.Lines)
		res := f.mergedResults(k, reqs[k])
		prev := 0.0
		for _, it := range reqs[k] { // in request order: prompts grow
			tokens := requireMessage(t, res[it.CustomID], k, 0)
			require.Greater(t, tokens, prev, "%s got the Message of another request (input_tokens %v after %v)", it.CustomID, tokens, prev)
			prev = tokens
		}
	}
	byKey := f.checkAnthropicPromises(got, f.anthropicBatches(keys, 0))
	for _, k := range keys {
		require.Len(t, byKey[k], 1, "vendor batches of %s", k)
		b := byKey[k][0]
		require.False(t, b.Cancelled)
		require.Equal(t, emulator.StatusEnded, b.Status)
		require.Equal(t, int64(3), b.RequestCounts.Completed)
		want := []string{batchapi.AnthropicCustomID(batchapi.JobTag(k), 0), batchapi.AnthropicCustomID(batchapi.JobTag(k), 1), batchapi.AnthropicCustomID(batchapi.JobTag(k), 2)}
		require.ElementsMatch(t, want, b.CustomIDs, "the vendor saw the fleet's custom_ids, not the producer's")
	}
	// One batch.state.in_progress and one batch.state.completed ("ended"
	// mapped to completed) per batch.
	seen := map[string]bool{}
	for _, st := range fleettest.ReadN(t, started, 2, 10*time.Second) {
		require.Contains(t, keys, st.IdempotencyKey)
		require.Equal(t, got[st.IdempotencyKey].BatchIDs[0], st.BatchID)
		require.False(t, seen[st.BatchID], "second state.in_progress for %s", st.BatchID)
		seen[st.BatchID] = true
	}
	for _, st := range fleettest.ReadN(t, ended, 2, 10*time.Second) {
		require.Contains(t, keys, st.IdempotencyKey)
		require.Equal(t, got[st.IdempotencyKey].BatchIDs[0], st.BatchID)
		require.Equal(t, contract.StatusInProgress, st.From)
		require.True(t, seen[st.BatchID])
		seen[st.BatchID] = false
	}
	st := f.stats()
	require.Zero(t, st.CallsByOp[emulator.OpCreate]+st.CallsByOp[emulator.OpUpload], "an Anthropic job reached the OpenAI API")
	require.Equal(t, int64(2), st.CallsByOp[emulator.OpAnthropicCreate])
	f.anthropicNoMore(completed, "anth-happy-sentinel")
}

// A retryable errored request (api_error, once) and a rate_limit_error
// one are retried in one retry batch under "<key>:retry-1"; an
// invalid_request_error is final. The job ends partial: the api_error one
// succeeded in the retry, the others failed.
func TestAnthropicPartialRetry(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: append([]string{"MAX_RETRY_ATTEMPTS=1"}, anthropicEnv...)})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	const key = "anth-partial"
	reqs := anthropicRequests(key, 2, emulator.TriggerFailOnce, emulator.TriggerFail400, emulator.TriggerFail429)
	f.publish(anthropicJob(key, reqs), true)
	r := fleettest.ReadN(t, retries, 1, 60*time.Second)[0]
	require.Equal(t, contract.RetryKey(key, 1), r.IdempotencyKey)
	require.Equal(t, key, r.RetryOf)
	require.Equal(t, 1, r.Attempt)
	require.Equal(t, 2, r.FailedCount, "the api_error and rate_limit_error requests, not the invalid_request_error one")
	require.Contains(t, []string{"api_error", "rate_limit_error"}, r.Reason)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, key, ev.IdempotencyKey)
	require.Equal(t, contract.OutcomePartial, ev.Outcome, "%+v", ev.Error)
	require.Equal(t, contract.Counts{Total: 5, Completed: 3, Failed: 2}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2, "original + exactly one retry batch")
	res := f.mergedResults(key, reqs)
	requireMessage(t, res[key+"-ok-0"], key, 0)
	requireMessage(t, res[key+"-ok-1"], key, 0)
	requireMessage(t, res[key+"-fail-once-2"], contract.RetryKey(key, 1), 1)
	requireFailed(t, res[key+"-fail-400-3"], "invalid_request_error", 0)
	require.Equal(t, float64(http.StatusBadRequest), res[key+"-fail-400-3"]["status_code"])
	requireFailed(t, res[key+"-fail-429-4"], "rate_limit_error", 1)
	byKey := f.checkAnthropicPromises(map[string]contract.Completed{key: ev}, f.anthropicBatches([]string{key}, 1))
	require.Len(t, byKey[key], 1)
	require.Len(t, byKey[contract.RetryKey(key, 1)], 1)
	require.Len(t, byKey[contract.RetryKey(key, 1)][0].CustomIDs, 2, "the retry batch holds only the retryable requests")
	f.anthropicNoMore(completed, "anth-partial-sentinel")
}

// batch.cancel cancels a running Message Batch: what ran is kept, the
// rest is canceled, the job ends cancelled without a retry.
func TestAnthropicCancel(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: anthropicEnv})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	cancelled := subscribe[contract.State](f, contract.StateSubject(contract.StatusCancelled))
	const key = "anth-cancel"
	// The never-finish request holds the batch in_progress until cancelled.
	reqs := anthropicRequests(key, 2, emulator.TriggerNeverFinish)
	f.publish(anthropicJob(key, reqs), true)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		for _, b := range f.anthropicBatches([]string{key}, 0) {
			if b.RequestCounts.Completed == 2 {
				return true
			}
		}
		return false
	}, "the two good requests ran at the vendor")
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"`+key+`"}`), "")
	st := fleettest.ReadN(t, cancelled, 1, 30*time.Second)[0]
	require.Equal(t, key, st.IdempotencyKey)
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, key, ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeCancelled, ev.Outcome, "%+v", ev.Error)
	require.Equal(t, contract.Counts{Total: 3, Completed: 2, Failed: 1}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 1, "no retry after a cancel")
	require.Equal(t, st.BatchID, ev.BatchIDs[0])
	res := f.mergedResults(key, reqs)
	requireMessage(t, res[key+"-ok-0"], key, 0)
	requireMessage(t, res[key+"-ok-1"], key, 0)
	requireFailed(t, res[key+"-never-finish-2"], "batch_cancelled", 0)
	byKey := f.checkAnthropicPromises(map[string]contract.Completed{key: ev}, f.anthropicBatches([]string{key}, 0))
	require.Len(t, byKey[key], 1)
	require.True(t, byKey[key][0].Cancelled, "the vendor batch was cancelled")
	f.publishRaw(contract.SubjectCancel, []byte(`{"idempotency_key":"`+key+`"}`), "")
	f.anthropicNoMore(completed, "anth-cancel-sentinel")
}

// A Message Batch reaching its (emulated) 24h limit with requests unrun:
// the expired remainder, and only it, is resubmitted as a retry batch,
// where part of it runs.
//
// The emulator runs a batch's requests evenly over IN_PROGRESS_FOR from
// VALIDATING_FOR after its creation, whatever their number, so with
// EXPIRE_AFTER shorter than both every batch, a retry included, expires
// with its last requests unrun: the job cannot end succeeded, it ends
// expired with what ran kept. Here: 6 requests run at 0.6s, 1.1s, ...,
// 3.1s and expire at 2s: 3 run; the retry's 3 run at 1.1s, 2.1s, 3.1s: 1
// runs.
func TestAnthropicExpiredRemainder(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_VALIDATING_FOR=100ms", "EMULATOR_IN_PROGRESS_FOR=3s", "EMULATOR_EXPIRE_AFTER=2s"},
		WorkerEnv:   append([]string{"MAX_RETRY_ATTEMPTS=1"}, anthropicEnv...),
	})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	expired := subscribe[contract.State](f, contract.StateSubject(contract.StatusExpired))
	const key = "anth-expiring"
	reqs := anthropicRequests(key, 6)
	f.publish(anthropicJob(key, reqs), true)
	r := fleettest.ReadN(t, retries, 1, 60*time.Second)[0]
	require.Equal(t, contract.RetryKey(key, 1), r.IdempotencyKey)
	require.Equal(t, 3, r.FailedCount, "only the expired remainder is resubmitted")
	require.Equal(t, "batch_expired", r.Reason)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, key, ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeExpired, ev.Outcome, "%+v", ev.Error)
	require.Equal(t, contract.Counts{Total: 6, Completed: 4, Failed: 2}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2)
	// Both batches were published expired ("ended" with expired requests).
	states := fleettest.ReadN(t, expired, 2, 10*time.Second)
	require.ElementsMatch(t, ev.BatchIDs, []string{states[0].BatchID, states[1].BatchID})
	res := f.mergedResults(key, reqs)
	byAttempt := map[string]int{}
	for _, it := range reqs {
		l := res[it.CustomID]
		switch {
		case l["status"] == "succeeded" && l["attempt"] == 0.0:
			requireMessage(t, l, key, 0)
			byAttempt["ran first"]++
		case l["status"] == "succeeded":
			requireMessage(t, l, contract.RetryKey(key, 1), 1)
			byAttempt["ran in the retry"]++
		default:
			requireFailed(t, l, "batch_expired", 1)
			byAttempt["expired twice"]++
		}
	}
	require.Equal(t, map[string]int{"ran first": 3, "ran in the retry": 1, "expired twice": 2}, byAttempt)
	byKey := f.checkAnthropicPromises(map[string]contract.Completed{key: ev}, f.anthropicBatches([]string{key}, 1))
	require.Len(t, byKey[key], 1)
	require.Len(t, byKey[contract.RetryKey(key, 1)], 1)
	require.Len(t, byKey[contract.RetryKey(key, 1)][0].CustomIDs, 3, "the retry batch holds only the remainder")
	f.anthropicNoMore(completed, "anth-expiring-sentinel")
}

// An Anthropic job whose custom_id breaks Anthropic's rule is
// dead-lettered and ends failed invalid_input, never reaching the vendor.
func TestAnthropicInvalidCustomID(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: anthropicEnv})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	const key = "anth-bad-id"
	reqs := anthropicRequests(key, 2)
	reqs[1].CustomID = "bad id!"
	f.publish(anthropicJob(key, reqs), true)
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, key, ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.NotNil(t, ev.Error)
	require.Equal(t, contract.CodeInvalidInput, ev.Error.Code, ev.Error.Message)
	require.Empty(t, ev.BatchIDs)
	fleettest.WaitFor(t, 10*time.Second, func() bool {
		l, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
		return err == nil && len(l) == 1
	}, "the invalid message dead-lettered")
	letters, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
	require.NoError(t, err)
	require.Equal(t, contract.CodeInvalidInput, letters[0].Headers[contract.HeaderErrorCode][0])
	require.Contains(t, letters[0].Data, `"bad id!"`)
	f.anthropicNoMore(completed, "anth-bad-id-sentinel")
	require.Equal(t, int64(1), f.stats().CallsByOp[emulator.OpAnthropicCreate], "only the sentinel reached the vendor")
}

// Two workers of each kind; a submitter is SIGKILLed right after a create
// (before it recorded the batch), a poller and a notifier mid-run: each
// of 10 jobs ends succeeded exactly once, and no key has two live batches.
func TestAnthropicWorkersKilled(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=1500ms"},
		WorkerEnv: append([]string{"SUBMIT_LOCK_TTL=3s", "POLL_LEASE=3s", "RESCUE_INTERVAL=2s", "RESCUE_AFTER=10s"},
			anthropicEnv...),
	})
	subVictim := f.start("submitter", 1, failpoint.Env+"=submit/after-create=kill@2")[0]
	f.start("submitter", 1)
	pollVictim := f.start("poller", 1)[0]
	f.start("poller", 1)
	notifyVictim := f.start("notifier", 1, failpoint.Env+"=notify/after-attempt-final=kill@1")[0]
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	ended := subscribe[contract.State](f, contract.StateSubject(contract.StatusCompleted))
	var keys []string
	for i := range 10 {
		k := fmt.Sprintf("anth-kill-%02d", i)
		keys = append(keys, k)
		f.publish(anthropicJob(k, anthropicRequests(k, 3)), true)
	}
	kill := func(name string, p *fleettest.Process) {
		select {
		case <-p.Done():
			t.Logf("%s was killed by its failpoint", name)
		default:
			p.Kill()
			t.Logf("%s SIGKILLed", name)
		}
	}
	// Mid-run: the first batch has ended, the others run.
	fleettest.ReadN(t, ended, 1, 60*time.Second)
	kill("the poller", pollVictim)
	kill("the submitter", subVictim)
	got := map[string]contract.Completed{}
	first := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	got[first.IdempotencyKey] = first
	kill("the notifier", notifyVictim)
	rest, _ := f.readOneEach(completed, slices.DeleteFunc(slices.Clone(keys), func(k string) bool { return k == first.IdempotencyKey }), 90*time.Second)
	for k, ev := range rest {
		got[k] = ev
	}
	require.Len(t, got, len(keys))
	for _, k := range keys {
		require.Equal(t, contract.OutcomeSucceeded, got[k].Outcome, "%s: %+v", k, got[k].Error)
		require.Equal(t, contract.Counts{Total: 3, Completed: 3}, got[k].RequestCounts, k)
	}
	byKey := f.checkAnthropicPromises(got, f.anthropicBatches(keys, 0))
	extra := 0
	for _, k := range keys {
		require.NotEmpty(t, byKey[k], k)
		extra += len(byKey[k]) - 1
		for _, b := range byKey[k] {
			if b.Cancelled && b.Ran() {
				t.Logf("NOTE: %s: cancelled duplicate %s had run %d requests", k, b.ID, b.RequestCounts.Completed+b.RequestCounts.Failed)
			}
		}
	}
	t.Logf("%d jobs completed once each; %d cancelled duplicates", len(keys), extra)
	f.anthropicNoMore(completed, "anth-kill-sentinel")
}

// The vendor answers some creates 529 overloaded_error and drops the
// answer of others after creating the batch. 8 jobs with distinct request
// counts all succeed exactly once; each key ends with exactly one batch
// not cancelled; every batch the vendor holds is in its job's batch_ids,
// cancelled duplicates included; and a duplicate was cancelled before any
// of its requests ran.
//
// The fleet takes a 529 on a create, like a lost answer, as an unknown
// outcome: it searches for the batch before it creates again, first when
// the create's deadline and margin have passed (2.5s here), then after a
// backoff that grows with the tries (4s, 8s, 16s, +-20%). A batch found
// running is cancelled (a duplicate), one found ended is adopted. The
// emulator starts a batch's requests 11s after its creation and runs them
// for 0.5s: searches up to 9.6s find it not yet running, later ones find
// it ended, so no search can meet a batch half run.
func TestAnthropicDroppedCreatesAnd529(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_VALIDATING_FOR=11s"},
		// Failed creates count as tries: the budget is not what this tests.
		WorkerEnv: append([]string{"SUBMIT_MAX_TRIES=12"}, anthropicEnv...),
	})
	f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	var keys []string
	count := map[string]int{}
	reqs := map[string][]contract.RequestItem{}
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			k := fmt.Sprintf("anth-drop-%d", i)
			keys = append(keys, k)
			count[k] = i + 1
			reqs[k] = anthropicRequests(k, i+1)
			f.publish(anthropicJob(k, reqs[k]), true)
		}
	}
	// Three jobs meet a vendor refusing every create 529,
	f.setFaults(emulator.Faults{Ops: map[string]emulator.OpFaults{emulator.OpAnthropicCreate: {OverloadedRate: 1}}})
	publish(0, 3)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		return f.countCalls(emulator.OpAnthropicCreate, emulator.StatusOverloaded) >= 3
	}, "creates refused 529")
	// three more one dropping every create answer,
	f.setFaults(emulator.Faults{DropAfterCreateRate: 1})
	publish(3, 6)
	fleettest.WaitFor(t, 30*time.Second, func() bool {
		return f.countCalls(emulator.OpAnthropicCreate, 0) >= 3
	}, "create answers dropped")
	// and from then on 10% of creates are refused and 40% of the others
	// lose their answer.
	f.setFaults(emulator.Faults{DropAfterCreateRate: 0.4,
		Ops: map[string]emulator.OpFaults{emulator.OpAnthropicCreate: {OverloadedRate: 0.1}}})
	publish(6, 8)
	got, _ := f.readOneEach(completed, keys, 180*time.Second)
	for _, k := range keys {
		ev := got[k]
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%s: %+v", k, ev.Error)
		require.Equal(t, contract.Counts{Total: count[k], Completed: count[k]}, ev.RequestCounts, k)
		res := f.mergedResults(k, reqs[k])
		for _, it := range reqs[k] {
			requireMessage(t, res[it.CustomID], k, 0)
		}
	}
	f.setFaults(emulator.Faults{})
	byKey := f.checkAnthropicPromises(got, f.anthropicBatches(keys, 0))
	dups := 0
	for _, k := range keys {
		live := 0
		for _, b := range byKey[k] {
			require.Len(t, b.CustomIDs, count[k], b.ID)
			if b.Cancelled {
				dups++
				require.False(t, b.Ran(), "%s: cancelled duplicate %s ran %d requests", k, b.ID, b.RequestCounts.Completed+b.RequestCounts.Failed)
				continue
			}
			live++
			require.Equal(t, int64(count[k]), b.RequestCounts.Completed, b.ID)
		}
		require.Equal(t, 1, live, "batches not cancelled of %s", k)
		require.Len(t, got[k].BatchIDs, len(byKey[k]), "%s: batch_ids %v", k, got[k].BatchIDs)
	}
	refused := f.countCalls(emulator.OpAnthropicCreate, emulator.StatusOverloaded)
	dropped := f.countCalls(emulator.OpAnthropicCreate, 0)
	require.GreaterOrEqual(t, dropped, 3)
	require.Positive(t, dups, "no lost create left a duplicate: the test did not exercise the cancel")
	adopted := 0
	for _, p := range f.procs["submitter"] {
		for _, l := range p.Lines() {
			if strings.Contains(l, "adopted the ended vendor batch") {
				adopted++
			}
		}
	}
	t.Logf("%d creates refused 529, %d answers dropped after the batch was made: %d cancelled duplicates (listed in batch_ids), %d adopted",
		refused, dropped, dups, adopted)
	f.anthropicNoMore(completed, "anth-drop-sentinel")
}

// OpenAI and Anthropic jobs run in one fleet at once, each through its
// own API, each with its outcome (one partial of each).
func TestMixedProviders(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: anthropicEnv})
	f.start("submitter", 2)
	f.start("poller", 1)
	f.start("notifier", 1)
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	reqs := map[string][]contract.RequestItem{}
	var openaiKeys, anthKeys, keys []string
	for i := range 4 {
		ko, ka := fmt.Sprintf("mixed-oa-%d", i), fmt.Sprintf("mixed-an-%d", i)
		openaiKeys, anthKeys = append(openaiKeys, ko), append(anthKeys, ka)
		reqs[ko], reqs[ka] = chatRequests(ko, 3), anthropicRequests(ka, 3)
		if i == 3 {
			reqs[ko] = items(ko, 2, emulator.TriggerFail400, 1)
			reqs[ka] = anthropicRequests(ka, 2, emulator.TriggerFail400)
		}
		f.publish(contract.Request{IdempotencyKey: ko, Requests: reqs[ko]}, true)
		f.publish(anthropicJob(ka, reqs[ka]), true)
	}
	keys = append(append(keys, openaiKeys...), anthKeys...)
	got, _ := f.readOneEach(completed, keys, 90*time.Second)
	for i, k := range keys {
		ev := got[k]
		want, counts := contract.OutcomeSucceeded, contract.Counts{Total: 3, Completed: 3}
		if i%4 == 3 {
			want, counts = contract.OutcomePartial, contract.Counts{Total: 3, Completed: 2, Failed: 1}
		}
		require.Equal(t, want, ev.Outcome, "%s: %+v", k, ev.Error)
		require.Equal(t, counts, ev.RequestCounts, k)
		require.Len(t, ev.BatchIDs, 1, k)
		prefix := "batch_"
		if strings.HasPrefix(k, "mixed-an-") {
			prefix = "msgbatch_"
		}
		require.True(t, strings.HasPrefix(ev.BatchIDs[0], prefix), "%s ran as %s", k, ev.BatchIDs[0])
	}
	resO := f.mergedResults("mixed-oa-3", reqs["mixed-oa-3"])
	require.Equal(t, "succeeded", resO["mixed-oa-3-ok-0"]["status"])
	require.Equal(t, "failed", resO["mixed-oa-3-fail-400-0"]["status"])
	resA := f.mergedResults("mixed-an-3", reqs["mixed-an-3"])
	requireMessage(t, resA["mixed-an-3-ok-0"], "mixed-an-3", 0)
	requireFailed(t, resA["mixed-an-3-fail-400-2"], "invalid_request_error", 0)
	// OpenAI batches: one per OpenAI key, none for an Anthropic key.
	perKey := map[string]int{}
	for _, b := range f.vendorBatches() {
		if b.Provider == emulator.ProviderOpenAI {
			perKey[b.Metadata[contract.MetaIdempotencyKey]]++
		}
	}
	want := map[string]int{}
	for _, k := range openaiKeys {
		want[k] = 1
	}
	require.Equal(t, want, perKey)
	byKey := f.checkAnthropicPromises(got, f.anthropicBatches(anthKeys, 0))
	for _, k := range anthKeys {
		require.Len(t, byKey[k], 1, k)
	}
	require.Len(t, byKey, len(anthKeys))
	f.noMore(completed, "mixed-sentinel")
}
