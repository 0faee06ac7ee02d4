package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// writeInput writes an OpenAI batch input file of n chat requests whose
// custom_ids are prefix-0..n-1; line bad (1-based, 0 = none) gets the url
// of another endpoint.
func writeInput(t *testing.T, w io.Writer, prefix string, n, bad int) {
	t.Helper()
	bw := bufio.NewWriter(w)
	for i := range n {
		url := "/v1/chat/completions"
		if i+1 == bad {
			url = "/v1/embeddings"
		}
		fmt.Fprintf(bw, `{"custom_id":"%s-%d","method":"POST","url":%q,"body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"request %d of a large job"}]}}`+"\n",
			prefix, i, url, i)
	}
	require.NoError(t, bw.Flush())
}

// putIntake puts an input file into batch_intake as a producer would.
func (f *fleet) putIntake(name, prefix string, n, bad int) {
	f.t.Helper()
	pr, pw := io.Pipe()
	go func() {
		writeInput(f.t, pw, prefix, n, bad)
		_ = pw.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(f.t, ops.PutIntake(ctx, f.JS, name, pr))
}

// resultLines streams a job's merged results and returns how many lines
// each custom_id has.
func (f *fleet) resultLines(key string) map[string]int {
	f.t.Helper()
	pr, pw := io.Pipe()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := ops.CopyResults(ctx, f.JS, key, pw)
		_ = pw.CloseWithError(err)
	}()
	per := map[string]int{}
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l struct {
			CustomID string `json:"custom_id"`
			Status   string `json:"status"`
		}
		require.NoError(f.t, json.Unmarshal(sc.Bytes(), &l))
		require.Equal(f.t, "succeeded", l.Status, l.CustomID)
		per[l.CustomID]++
	}
	require.NoError(f.t, sc.Err())
	return per
}

// TestLargeInputs publishes a 20,000-request file with `batchfleet
// publish` (too large for one NATS message, so it goes through the
// batch_intake object store) and checks its merged results; inputs that
// are too long, missing or have a bad line fail with a clear error and a
// dead-letter entry.
func TestLargeInputs(t *testing.T) {
	f := startFleet(t, fleetOpts{})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	dead := subscribe[json.RawMessage](f, contract.SubjectDLQRequests)

	const n = 20_000
	path := filepath.Join(t.TempDir(), "big.jsonl")
	file, err := os.Create(path)
	require.NoError(t, err)
	writeInput(t, file, "big", n, 0)
	require.NoError(t, file.Close())
	st, err := os.Stat(path)
	require.NoError(t, err)
	t.Logf("input file: %d requests, %d bytes", n, st.Size())

	cli := exec.Command(fleettest.BuildBinary(t, "cmd/batchfleet"), "publish", "-key", "big-20k", path)
	cli.Env = append(os.Environ(), "NATS_URL="+f.NATS.URL())
	out, err := cli.CombinedOutput()
	require.NoError(t, err, string(out))
	require.Contains(t, string(out), "input_object batch_intake/big-20k", "a file beyond the max payload goes by reference")

	// Bad inputs, put by a producer with the object store API.
	f.putIntake("too-long", "long", contract.MaxRequests+10_000, 0)
	f.putIntake("bad-url", "url", 10, 7)
	for _, r := range []contract.Request{
		{IdempotencyKey: "obj-too-long", InputObject: "too-long"},
		{IdempotencyKey: "obj-missing", InputObject: "nobody-put-this"},
		{IdempotencyKey: "obj-bad-url", InputObject: "bad-url"},
	} {
		f.publish(r, true)
	}

	evs := map[string]contract.Completed{}
	for _, ev := range fleettest.ReadN(t, completed, 4, 5*time.Minute) {
		_, dup := evs[ev.IdempotencyKey]
		require.False(t, dup, "second batch.completed for %s", ev.IdempotencyKey)
		evs[ev.IdempotencyKey] = ev
	}

	big := evs["big-20k"]
	require.Equal(t, contract.OutcomeSucceeded, big.Outcome, "%+v", big)
	require.Equal(t, contract.Counts{Total: n, Completed: n}, big.RequestCounts)
	require.Len(t, big.BatchIDs, 1)
	require.NotNil(t, big.Results)
	require.Equal(t, n, big.Results.Lines)
	per := f.resultLines("big-20k")
	require.Len(t, per, n)
	for id, c := range per {
		require.Equal(t, 1, c, "custom_id %s", id)
	}

	for key, want := range map[string]struct{ code, msg string }{
		"obj-too-long": {contract.CodeInvalidInput, "line 50001: the file has more than 50000 requests"},
		"obj-missing":  {contract.CodeInputNotFound, `input_object "nobody-put-this" is not in the batch_intake`},
		"obj-bad-url":  {contract.CodeInvalidInput, `line 7: url must be the job's endpoint "/v1/chat/completions", got "/v1/embeddings"`},
	} {
		ev := evs[key]
		require.Equal(t, contract.OutcomeFailed, ev.Outcome, key)
		require.NotNil(t, ev.Error, key)
		require.Equal(t, want.code, ev.Error.Code, key)
		require.Contains(t, ev.Error.Message, want.msg, key)
		require.Equal(t, contract.Counts{}, ev.RequestCounts, key)
		require.Empty(t, ev.BatchIDs, key)
	}
	letters := fleettest.ReadN(t, dead, 3, 30*time.Second)
	require.Len(t, letters, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	listed, err := ops.ListDLQ(ctx, f.JS, contract.SubjectDLQRequests)
	require.NoError(t, err)
	codes := map[string]int{}
	for _, l := range listed {
		codes[strings.Join(l.Headers[contract.HeaderErrorCode], ",")]++
	}
	require.Equal(t, map[string]int{contract.CodeInvalidInput: 2, contract.CodeInputNotFound: 1}, codes)

	// The fleet deletes the intake object of a finished job, failed ones too.
	store, err := jobstore.Open(ctx, f.JS, jobstore.Settings{})
	require.NoError(t, err)
	for _, name := range []string{"big-20k", "too-long", "bad-url"} {
		fleettest.WaitFor(t, 10*time.Second, func() bool {
			_, _, err := store.OpenObject(ctx, jobstore.BucketIntake, name)
			return errors.Is(err, jobstore.ErrNotFound)
		}, "intake object "+name+" deleted")
	}
	require.NoError(t, stream.Ensure(ctx, f.JS, stream.Settings{}, stream.Requests))
	require.Equal(t, 1, f.batchesPerKey()["big-20k"])
}
