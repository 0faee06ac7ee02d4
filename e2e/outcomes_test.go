package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// items builds requests: good ones and ones whose custom_id carries an
// emulator trigger (fail-once, fail-always, never-finish).
func items(key string, good int, trigger string, bad int) []contract.RequestItem {
	return append(chatRequests(key+"-ok", good), chatRequests(key+"-"+trigger, bad)...)
}

// mergedResults fetches a job's merged results and checks every original
// custom_id is listed exactly once.
func (f *fleet) mergedResults(key string, want []contract.RequestItem) map[string]map[string]any {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	data, err := ops.Results(ctx, f.JS, key)
	require.NoError(f.t, err)
	got := map[string]map[string]any{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l map[string]any
		require.NoError(f.t, json.Unmarshal(sc.Bytes(), &l))
		id := l["custom_id"].(string)
		_, dup := got[id]
		require.False(f.t, dup, "custom_id %s listed twice", id)
		got[id] = l
	}
	require.Len(f.t, got, len(want))
	for _, it := range want {
		require.Contains(f.t, got, it.CustomID)
	}
	return got
}

// vendorInput reads the custom_ids of a vendor batch's input file.
func (f *fleet) vendorInput(fileID string) []string {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, f.EmuURL+"/files/"+fileID+"/content", nil)
	req.Header.Set("Authorization", "Bearer sk-test")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(f.t, err)
	defer resp.Body.Close()
	require.Equal(f.t, http.StatusOK, resp.StatusCode)
	data, _ := io.ReadAll(resp.Body)
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var l struct {
			CustomID string `json:"custom_id"`
		}
		require.NoError(f.t, json.Unmarshal([]byte(line), &l))
		ids = append(ids, l.CustomID)
	}
	sort.Strings(ids)
	return ids
}

// 5 jobs of 4 good + 2 fail-once requests end succeeded 6/6/0 after exactly
// one retry batch each, holding only the 2 failed custom_ids.
func TestPartialRetrySucceeds(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=200ms", "DELETE_INPUT_FILES=false"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	reqs := map[string][]contract.RequestItem{}
	for i := range 5 {
		k := fmt.Sprintf("retry-ok-%d", i)
		reqs[k] = items(k, 4, "fail-once", 2)
		f.publish(contract.Request{IdempotencyKey: k, Requests: reqs[k]}, true)
	}
	evs := fleettest.ReadN(t, completed, 5, 120*time.Second)
	for _, ev := range evs {
		require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, ev.IdempotencyKey)
		require.Equal(t, contract.Counts{Total: 6, Completed: 6}, ev.RequestCounts)
		require.Len(t, ev.BatchIDs, 2, "original + exactly one retry batch")
		res := f.mergedResults(ev.IdempotencyKey, reqs[ev.IdempotencyKey])
		for id, l := range res {
			require.Equal(t, "succeeded", l["status"], id)
			wantAttempt := 0.0
			if strings.Contains(id, "fail-once") {
				wantAttempt = 1
			}
			require.Equal(t, wantAttempt, l["attempt"], id)
		}
	}
	for _, r := range fleettest.ReadN(t, retries, 5, 10*time.Second) {
		require.Equal(t, 1, r.Attempt)
		require.Equal(t, 2, r.FailedCount)
		require.Equal(t, contract.RetryKey(r.RetryOf, 1), r.IdempotencyKey)
	}
	// The vendor saw 10 batches: one original and one retry per job; each
	// retry carries metadata retry_of and only the two failed requests.
	byKey := map[string]int{}
	for _, b := range f.vendorBatches() {
		byKey[b.Metadata[contract.MetaIdempotencyKey]]++
		if orig, ok := b.Metadata[contract.MetaRetryOf]; ok {
			require.Equal(t, contract.RetryKey(orig, 1), b.Metadata[contract.MetaIdempotencyKey])
			require.Equal(t, int64(2), b.RequestCounts.Total)
			require.Equal(t, []string{orig + "-fail-once-0", orig + "-fail-once-1"}, f.vendorInput(b.InputFileID))
		}
	}
	require.Len(t, byKey, 10)
	for k, n := range byKey {
		require.Equal(t, 1, n, k)
	}
	f.noMore(completed, "retry-ok-sentinel")
}

// Requests that always fail end partial after MAX_RETRY_ATTEMPTS retries;
// a 4xx failure is never retried.
func TestAlwaysFailingEndsPartial(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms", "MAX_RETRY_ATTEMPTS=2"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	reqs := append(items("always", 4, "fail-always", 2), chatRequests("always-fail-400", 1)...)
	f.publish(contract.Request{IdempotencyKey: "always", Requests: reqs}, true)
	ev := fleettest.ReadN(t, completed, 1, 120*time.Second)[0]
	require.Equal(t, contract.OutcomePartial, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 7, Completed: 4, Failed: 3}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 3, "original + MAX_RETRY_ATTEMPTS retries")
	res := f.mergedResults("always", reqs)
	require.Equal(t, "failed", res["always-fail-400-0"]["status"])
	require.Equal(t, 0.0, res["always-fail-400-0"]["attempt"], "a 400 is final at once")
	require.Equal(t, 2.0, res["always-fail-always-0"]["attempt"])
}

// A batch the vendor fails at validation ends failed with the vendor's
// errors, one vendor batch, no retry.
func TestInvalidInputFails(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publish(contract.Request{IdempotencyKey: "invalid-input", Requests: []contract.RequestItem{
		{CustomID: "a", Body: json.RawMessage(`{"model":"gpt-4o-mini","messages":[]}`)},
		{CustomID: "b", Body: json.RawMessage(`{"messages":[]}`)}, // no model
	}}, true)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.Len(t, ev.BatchIDs, 1)
	require.Equal(t, contract.Counts{Total: 2, Completed: 0, Failed: 2}, ev.RequestCounts)
	require.NotNil(t, ev.Error)
	require.NotEmpty(t, ev.Error.Code)
	t.Logf("vendor error: %s: %s", ev.Error.Code, ev.Error.Message)
	require.Equal(t, 1, f.batchesPerKey()["invalid-input"])
}

// An expiring batch resubmits its unfinished remainder; what never
// finishes ends the job expired, with what finished kept.
func TestExpiredResubmitsRemainder(t *testing.T) {
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_EXPIRE_AFTER=2s"},
		WorkerEnv:   []string{"RETRY_BACKOFF=100ms", "MAX_RETRY_ATTEMPTS=1"},
	})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	retries := subscribe[contract.Retry](f, contract.SubjectRetry)
	reqs := items("expiring", 3, "never-finish", 2)
	f.publish(contract.Request{IdempotencyKey: "expiring", Requests: reqs}, true)
	r := fleettest.ReadN(t, retries, 1, 60*time.Second)[0]
	require.Equal(t, 2, r.FailedCount, "only the unfinished remainder is resubmitted")
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeExpired, ev.Outcome)
	require.Equal(t, contract.Counts{Total: 5, Completed: 3, Failed: 2}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2)
	res := f.mergedResults("expiring", reqs)
	require.Equal(t, "succeeded", res["expiring-ok-0"]["status"])
	require.Equal(t, "failed", res["expiring-never-finish-0"]["status"])
}

// An invalid message is dead-lettered with its error and, having a valid
// key, ends as a failed batch.completed; the workers go on.
func TestInvalidMessageDeadLettered(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	f.publishRaw(contract.SubjectRequests, []byte(`{"idempotency_key":"bad-1","requests":[]}`), "")
	f.publishRaw(contract.SubjectRequests, []byte(`not json at all`), "")
	ev := fleettest.ReadN(t, completed, 1, 30*time.Second)[0]
	require.Equal(t, "bad-1", ev.IdempotencyKey)
	require.Equal(t, contract.OutcomeFailed, ev.Outcome)
	require.Equal(t, contract.CodeInvalidInput, ev.Error.Code)
	require.Equal(t, []string{}, ev.BatchIDs)
	require.Equal(t, map[string]string{}, ev.Metadata)
	fleettest.WaitFor(t, 10*time.Second, func() bool {
		l, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
		return err == nil && len(l) == 2
	}, "both invalid messages dead-lettered")
	letters, err := ops.ListDLQ(context.Background(), f.JS, contract.SubjectDLQRequests)
	require.NoError(t, err)
	// The two are handled concurrently: their letters come in either order.
	byCode := map[string]string{}
	for _, l := range letters {
		byCode[l.Headers[contract.HeaderErrorCode][0]] = l.Data
	}
	require.Contains(t, byCode, contract.CodeInvalidInput)
	require.Contains(t, byCode, contract.CodeInvalidJSON)
	require.Equal(t, "not json at all", byCode[contract.CodeInvalidJSON])
	f.noMore(completed, "dlq-sentinel")
}

// A producer's own uploaded input file is used as it is; its request count
// comes from the file, and its retries are built from the vendor's copy.
func TestInputFileID(t *testing.T) {
	f := startFleet(t, fleetOpts{WorkerEnv: []string{"RETRY_BACKOFF=100ms"}})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	req := contract.Request{IdempotencyKey: "from-file", Endpoint: contract.DefaultEndpoint, Requests: items("from-file", 3, "fail-once", 1)}
	data, err := req.JSONL()
	require.NoError(t, err)
	client := batchapi.New(batchapi.Config{APIKey: "sk-test", BaseURL: f.EmuURL})
	fileID, err := client.Upload(context.Background(), "producer.jsonl", data)
	require.NoError(t, err)
	f.publish(contract.Request{IdempotencyKey: "from-file", InputFileID: fileID}, true)
	ev := fleettest.ReadN(t, completed, 1, 60*time.Second)[0]
	require.Equal(t, contract.OutcomeSucceeded, ev.Outcome, "%+v", ev.Error)
	require.Equal(t, contract.Counts{Total: 4, Completed: 4}, ev.RequestCounts)
	require.Len(t, ev.BatchIDs, 2)
	f.mergedResults("from-file", req.Requests)
	// The producer's file is not the fleet's to delete.
	require.Len(t, f.vendorInput(fileID), 4)
}
