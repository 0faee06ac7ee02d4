package results_test

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func mustParse(t *testing.T, s string) results.Line {
	t.Helper()
	l, err := results.ParseLine([]byte(s))
	require.NoError(t, err)
	return l
}

type added struct {
	attempt int
	line    string
}

func TestMergedPrecedence(t *testing.T) {
	t.Parallel()
	ok0 := added{0, okLine("a", 1, 1)}
	ok1 := added{1, strings.Replace(okLine("a", 2, 2), "batch_req_ok_a", "batch_req_ok_a1", 1)}
	f500 := added{0, failLine("a", 500, "server_error", "")}
	f400 := added{1, failLine("a", 400, "invalid_request_error", "invalid_value")}
	exp2 := added{2, errLine("a", "batch_expired")}
	tests := []struct {
		name string
		adds []added
		want added // the kept one
	}{
		{"success wins over an earlier failure", []added{f500, ok1}, ok1},
		{"success wins over a later failure", []added{ok0, f400, exp2}, ok0},
		{"success wins when added after a later failure", []added{exp2, ok0}, ok0},
		{"latest failure wins", []added{f500, f400}, f400},
		{"latest failure wins whatever the order", []added{exp2, f500, f400}, exp2},
		{"first success is kept", []added{ok0, ok1}, ok0},
		{"earliest success is kept whatever the order", []added{ok1, ok0}, ok0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var m results.Merged
			for _, a := range tt.adds {
				m.Add(a.attempt, mustParse(t, a.line))
			}
			got, ok := m.Get("a")
			require.True(t, ok)
			wl := mustParse(t, tt.want.line)
			want := results.Result{Attempt: tt.want.attempt, Outcome: wl.Outcome(), Reason: wl.Reason(), StatusCode: wl.StatusCode}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("kept result (-want +got):\n%s", diff)
			}
			require.Equal(t, 1, m.Len())
			completed, failed := m.Counts()
			require.Equal(t, 1, completed+failed)
		})
	}
}

func TestMergedUsageKeptAndBilled(t *testing.T) {
	t.Parallel()
	var m results.Merged
	m.Add(0, mustParse(t, okLine("a", 10, 1)))
	m.Add(0, mustParse(t, failLine("b", 500, "server_error", "")))
	// b succeeded in the retry, a too (e.g. a redelivered retry input): both billed.
	m.Add(1, mustParse(t, strings.Replace(okLine("a", 100, 10), "batch_req_ok_a", "batch_req_ok_a_retry", 1)))
	m.Add(1, mustParse(t, okLine("b", 20, 2)))
	m.Add(1, mustParse(t, `{"id":"x","custom_id":"e","response":{"status_code":200,"body":{"model":"text-embedding-3-small","usage":{"prompt_tokens":7,"total_tokens":7}}}}`))

	kept, billed := m.Usage()
	require.Equal(t, results.Usage{InputTokens: 37, OutputTokens: 3, TotalTokens: 40}, kept)
	require.Equal(t, results.Usage{InputTokens: 137, OutputTokens: 13, TotalTokens: 150}, billed)

	keptBy, billedBy := m.UsageByModel()
	require.Equal(t, map[string]results.Usage{
		"gpt-4o-mini-2024-07-18": {InputTokens: 30, OutputTokens: 3, TotalTokens: 33},
		"text-embedding-3-small": {InputTokens: 7, TotalTokens: 7},
	}, keptBy)
	require.Equal(t, results.Usage{InputTokens: 130, OutputTokens: 13, TotalTokens: 143}, billedBy["gpt-4o-mini-2024-07-18"])
	require.Equal(t, map[string]results.Usage{"gpt-4o-mini-2024-07-18": {InputTokens: 10, OutputTokens: 1, TotalTokens: 11}}, m.BilledByModel(0))
	require.Equal(t, results.Usage{InputTokens: 7, TotalTokens: 7}, m.BilledByModel(1)["text-embedding-3-small"])

	usd, known := m.Cost(results.DefaultPriceTable())
	require.True(t, known)
	want := (130*0.15 + 13*0.60 + 7*0.02) / 1e6 * 0.5
	require.InDelta(t, want, usd, 1e-15)

	m.Add(2, mustParse(t, `{"id":"y","custom_id":"z","response":{"status_code":200,"body":{"model":"mystery","usage":{"input_tokens":1}}}}`))
	usd2, known := m.Cost(results.DefaultPriceTable())
	require.False(t, known)
	require.InDelta(t, usd, usd2, 1e-15)
}

func TestMergedPendingFailedCounts(t *testing.T) {
	t.Parallel()
	var m results.Merged
	m.Add(0, mustParse(t, okLine("ok", 1, 1)))
	m.Add(0, mustParse(t, failLine("bad", 400, "invalid_request_error", "")))
	m.Add(0, mustParse(t, failLine("flaky", 503, "server_error", "")))
	m.Add(0, mustParse(t, errLine("late", "batch_expired")))
	m.Add(0, mustParse(t, errLine("gone", "batch_cancelled")))

	completed, failed := m.Counts()
	require.Equal(t, 1, completed)
	require.Equal(t, 4, failed)
	require.Equal(t, []string{"bad", "flaky", "gone", "late"}, m.Failed(false))
	require.Equal(t, []string{"flaky", "late"}, m.Failed(true))
	require.Equal(t, []string{"z", "never"}, m.Pending([]string{"ok", "z", "bad", "flaky", "never", "late", "gone"}))

	// The retry fixes flaky, late fails permanently this time.
	m.Add(1, mustParse(t, okLine("flaky", 1, 1)))
	m.Add(1, mustParse(t, failLine("late", 400, "invalid_request_error", "")))
	completed, failed = m.Counts()
	require.Equal(t, 2, completed)
	require.Equal(t, 3, failed)
	require.Empty(t, m.Failed(true))

	var empty results.Merged
	require.Zero(t, empty.Len())
	require.Empty(t, empty.Failed(false))
	require.Equal(t, []string{"a"}, empty.Pending([]string{"a"}))
	_, ok := empty.Get("a")
	require.False(t, ok)
}

// TestMergedShuffled feeds three attempts' lines in random orders and
// interleavings: the merged file must be the same every time.
func TestMergedShuffled(t *testing.T) {
	t.Parallel()
	const n = 300
	var lines []added
	for i := range n {
		id := fmt.Sprintf("req-%03d", i)
		switch i % 6 {
		case 0: // succeeds at once
			lines = append(lines, added{0, okLine(id, 1, 1)})
		case 1: // 500 then success
			lines = append(lines, added{0, failLine(id, 500, "server_error", "")}, added{1, okLine(id, 2, 2)})
		case 2: // expired twice, then permanent
			lines = append(lines, added{0, errLine(id, "batch_expired")}, added{1, errLine(id, "batch_expired")},
				added{2, failLine(id, 400, "invalid_request_error", "")})
		case 3: // 429 three times
			for a := range 3 {
				lines = append(lines, added{a, strings.Replace(failLine(id, 429, "requests", "rate_limit_exceeded"),
					"batch_req_", fmt.Sprintf("batch_req_%d", a), 1)})
			}
		case 4: // permanent at once
			lines = append(lines, added{0, failLine(id, 400, "invalid_request_error", "bad")})
		case 5: // missing from every file: pending
		}
	}
	merge := func(order []added) string {
		var m results.Merged
		var seg bytes.Buffer
		w := results.NewWriter(&seg)
		for _, a := range order {
			l := mustParse(t, a.line)
			m.Add(a.attempt, l)
			require.NoError(t, w.Write(a.attempt, l))
		}
		_, err := w.Flush()
		require.NoError(t, err)
		var buf bytes.Buffer
		written, err := m.Merge(&buf, &seg)
		require.NoError(t, err)
		require.Equal(t, m.Len(), written)
		completed, failed := m.Counts()
		require.Equal(t, n/6*2, completed)
		require.Equal(t, n/6*3, failed)
		require.Len(t, m.Failed(true), n/6)
		lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
		slices.Sort(lines) // Merge keeps the sources' order
		return strings.Join(lines, "\n")
	}
	want := merge(lines)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		shuffled := append([]added(nil), lines...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(want, merge(shuffled)); diff != "" {
			t.Fatalf("shuffled merge differs (-want +got):\n%s", diff)
		}
	}
}

func TestWriterMerge(t *testing.T) {
	t.Parallel()
	var m results.Merged
	var seg bytes.Buffer
	w := results.NewWriter(&seg)
	for _, a := range []added{
		{1, `{"id":"batch_req_2","custom_id":"b","response":null,"error":{"code":"batch_expired","message":"too late"}}`},
		{0, `{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"req_1","body":{"model":"m","x":"<&>"}},"error":null}`},
		{0, `{"id":"batch_req_3","custom_id":"c","response":{"status_code":400,"request_id":"req_3","body":{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}}},"error":null}`},
		{0, `{"id":"batch_req_0","custom_id":"b","response":{"status_code":500,"request_id":"req_0","body":{}},"error":null}`},
	} {
		l := mustParse(t, a.line)
		m.Add(a.attempt, l)
		require.NoError(t, w.Write(a.attempt, l))
	}
	n, err := w.Flush()
	require.NoError(t, err)
	require.Equal(t, 4, n)
	var buf bytes.Buffer
	n, err = m.Merge(&buf, bytes.NewReader(seg.Bytes()))
	require.NoError(t, err)
	require.Equal(t, 3, n)
	want := `{"custom_id":"b","status":"failed","attempt":1,"status_code":0,"error":{"code":"batch_expired","message":"too late"},"reason":"batch_expired","batch_request_id":"batch_req_2"}
{"custom_id":"a","status":"succeeded","attempt":0,"status_code":200,"body":{"model":"m","x":"<&>"},"batch_request_id":"batch_req_1","request_id":"req_1"}
{"custom_id":"c","status":"failed","attempt":0,"status_code":400,"body":{"error":{"message":"no","type":"invalid_request_error","param":null,"code":null}},"reason":"invalid_request_error","batch_request_id":"batch_req_3","request_id":"req_3"}
`
	if diff := cmp.Diff(want, buf.String()); diff != "" {
		t.Fatalf("Merge (-want +got):\n%s", diff)
	}

	back, err := results.ReadMerged(bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	for _, id := range []string{"a", "b", "c"} {
		w, _ := m.Get(id)
		g, ok := back.Get(id)
		require.True(t, ok)
		if diff := cmp.Diff(w, g); diff != "" {
			t.Fatalf("ReadMerged %q (-want +got):\n%s", id, diff)
		}
	}
	var again bytes.Buffer
	_, err = back.Merge(&again, bytes.NewReader(buf.Bytes()))
	require.NoError(t, err)
	require.Equal(t, buf.String(), again.String())
	kept, billed := back.Usage()
	require.Equal(t, kept, billed)

	// A kept result missing from the sources is an error, not a short file.
	_, err = back.Merge(io.Discard, strings.NewReader(""))
	require.ErrorContains(t, err, "0 of 3 kept results")
}

// AddMerged skips the lines of the attempt being merged again: its own
// files are added afresh, so a rewrite interrupted after the merged file
// was replaced gives the same result when it runs again.
func TestAddMergedSkipsLaterAttempts(t *testing.T) {
	t.Parallel()
	merged := `{"custom_id":"a","status":"succeeded","attempt":1,"status_code":200,"body":{}}
{"custom_id":"b","status":"failed","attempt":0,"status_code":500,"body":{}}
`
	var m results.Merged
	require.NoError(t, m.AddMerged(strings.NewReader(merged), 1))
	require.Equal(t, 1, m.Len())
	_, ok := m.Get("a")
	require.False(t, ok)
	require.ErrorIs(t, m.AddMerged(strings.NewReader(merged+merged), 1), results.ErrInvalidLine)
}

func TestReadMergedRejects(t *testing.T) {
	t.Parallel()
	ok := `{"custom_id":"a","status":"succeeded","attempt":0,"status_code":200,"body":{}}`
	tests := []struct {
		name, in, wantErr string
	}{
		{"not JSON", "nope", "line 1: results: invalid line: not a JSON object"},
		{"missing custom_id", `{"status":"failed","error":{}}`, "missing custom_id"},
		{"duplicate", ok + "\n" + ok, "line 2: results: invalid line: custom_id \"a\" twice"},
		{"status mismatch", `{"custom_id":"a","status":"succeeded","status_code":500}`, "does not match"},
		{"unknown status", `{"custom_id":"a","status":"done","status_code":200}`, "does not match"},
		{"no response nor error", `{"custom_id":"a","status":"failed","status_code":0}`, "neither response nor error"},
		{"body without status", `{"custom_id":"a","status":"failed","body":{},"error":{}}`, "body without status_code"},
		{"bad status", `{"custom_id":"a","status":"failed","status_code":1000}`, "invalid status_code"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := results.ReadMerged(strings.NewReader(tt.in))
			require.ErrorIs(t, err, results.ErrInvalidLine)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestAddFile(t *testing.T) {
	t.Parallel()
	var m results.Merged
	require.NoError(t, m.AddFile(0, strings.NewReader(okLine("a", 1, 1)+"\n"+errLine("b", "batch_expired")+"\n")))
	require.NoError(t, m.AddFile(1, strings.NewReader(okLine("b", 1, 1)+"\n")))
	completed, failed := m.Counts()
	require.Equal(t, 2, completed)
	require.Zero(t, failed)
	require.ErrorIs(t, m.AddFile(2, strings.NewReader("{}\n")), results.ErrInvalidLine)
}
