package emulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// fakeClock is a simulated Clock that tests advance by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// timeline is a Config with round durations on a simulated clock.
func timeline(t testing.TB) (*Emulator, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	e := New(Config{
		Clock:         clock,
		ValidatingFor: 10 * time.Second,
		InProgressFor: 100 * time.Second,
		FinalizingFor: 10 * time.Second,
		CancelDelay:   5 * time.Second,
		ExpireAfter:   24 * time.Hour,
		TickInterval:  time.Millisecond,
	})
	t.Cleanup(e.Close)
	return e, clock
}

func addFile(e *Emulator, lines ...string) string {
	data := strings.Join(lines, "\n")
	f := &file{ID: newFileID(), Object: "file", Bytes: int64(len(data)), Filename: "in.jsonl", Purpose: "batch", Status: "processed", data: contentOf([]byte(data))}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.files[f.ID] = f
	e.fileOrder = append(e.fileOrder, f)
	return f.ID
}

func line(customID, model string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`, customID, model)
}

func lines(n int, prefix string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = line(fmt.Sprintf("%s-%d", prefix, i), "m")
	}
	return out
}

// serve runs one request through the handler.
func serve(t testing.TB, e *Emulator, method, path, body string) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func createBatch(t testing.TB, e *Emulator, fileID string) batchJSON {
	t.Helper()
	code, body := serve(t, e, http.MethodPost, "/v1/batches",
		fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, fileID))
	require.Equal(t, http.StatusOK, code, string(body))
	var b batchJSON
	require.NoError(t, json.Unmarshal(body, &b))
	return b
}

func getBatch(t *testing.T, e *Emulator, id string) batchJSON {
	t.Helper()
	code, body := serve(t, e, http.MethodGet, "/v1/batches/"+id, "")
	require.Equal(t, http.StatusOK, code, string(body))
	var b batchJSON
	require.NoError(t, json.Unmarshal(body, &b))
	return b
}

type point struct {
	at          time.Duration
	status      string
	total, done int64
}

func TestTimelineOnSimulatedClock(t *testing.T) {
	t.Parallel()
	e, clock := timeline(t)
	t0 := clock.Now()
	id := createBatch(t, e, addFile(e, lines(10, "r")...)).ID

	// Requests complete every 10s from validatedAt (10s): 20s, 30s, ... 110s.
	for _, p := range []point{
		{0, StatusValidating, 0, 0},
		{10*time.Second - 1, StatusValidating, 0, 0},
		{10 * time.Second, StatusInProgress, 10, 0},
		{20*time.Second - 1, StatusInProgress, 10, 0},
		{20 * time.Second, StatusInProgress, 10, 1},
		{65 * time.Second, StatusInProgress, 10, 5},
		{110 * time.Second, StatusFinalizing, 10, 10},
		{120*time.Second - 1, StatusFinalizing, 10, 10},
		{120 * time.Second, StatusCompleted, 10, 10},
		{time.Hour, StatusCompleted, 10, 10},
	} {
		clock.Set(t0.Add(p.at))
		b := getBatch(t, e, id)
		require.Equal(t, p.status, b.Status, "at %s", p.at)
		require.Equal(t, p.total, b.RequestCounts.Total, "total at %s", p.at)
		require.Equal(t, p.done, b.RequestCounts.Completed, "completed at %s", p.at)
		require.Equal(t, p.status == StatusCompleted, b.OutputFileID != nil, "output file at %s", p.at)
	}
	b := getBatch(t, e, id)
	require.Equal(t, t0.Unix(), b.CreatedAt)
	require.Equal(t, t0.Add(10*time.Second).Unix(), *b.InProgressAt)
	require.Equal(t, t0.Add(110*time.Second).Unix(), *b.FinalizingAt)
	require.Equal(t, t0.Add(120*time.Second).Unix(), *b.CompletedAt)
	require.Equal(t, t0.Add(24*time.Hour).Unix(), *b.ExpiresAt)
	require.Nil(t, b.FailedAt)
	require.Nil(t, b.ErrorFileID)
}

func TestSchedulerFinishesUnpolledBatches(t *testing.T) {
	t.Parallel()
	e, clock := timeline(t)
	t0 := clock.Now()
	createBatch(t, e, addFile(e, lines(3, "r")...))
	require.Equal(t, 1, e.Stats().ActiveNow)

	clock.Set(t0.Add(120 * time.Second))
	require.Eventually(t, func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.active == 0 && e.batches[0].final
	}, 10*time.Second, time.Millisecond, "the scheduler must finish the batch without a read")

}

func TestMaxActiveIsExact(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	// The scheduler sleeps through this test: only reads and creates finish batches.
	e := New(Config{Clock: clock, ValidatingFor: time.Second, InProgressFor: time.Second, FinalizingFor: time.Second, TickInterval: time.Hour})
	t.Cleanup(e.Close)
	t0 := clock.Now()
	createBatch(t, e, addFile(e, lines(1, "a")...))
	createBatch(t, e, addFile(e, lines(1, "b")...))
	clock.Set(t0.Add(3 * time.Second)) // both done, unobserved
	createBatch(t, e, addFile(e, lines(1, "c")...))
	st := e.Stats()
	require.Equal(t, 1, st.ActiveNow)
	require.Equal(t, 2, st.MaxActive, "A and B finished before C was created")
}

func TestCancelTimeline(t *testing.T) {
	t.Parallel()
	e, clock := timeline(t)
	t0 := clock.Now()
	id := createBatch(t, e, addFile(e, lines(10, "r")...)).ID
	clock.Set(t0.Add(30 * time.Second)) // 2 requests done (20s, 30s)
	code, body := serve(t, e, http.MethodPost, "/v1/batches/"+id+"/cancel", "")
	require.Equal(t, http.StatusOK, code, string(body))

	for _, p := range []point{
		{30 * time.Second, StatusCancelling, 10, 2},
		{35*time.Second - 1, StatusCancelling, 10, 2},
		{35 * time.Second, StatusCancelled, 10, 2},
		{time.Hour, StatusCancelled, 10, 2},
	} {
		clock.Set(t0.Add(p.at))
		b := getBatch(t, e, id)
		require.Equal(t, p.status, b.Status, "at %s", p.at)
		require.Equal(t, p.done, b.RequestCounts.Completed, "at %s", p.at)
	}
	b := getBatch(t, e, id)
	require.Equal(t, t0.Add(30*time.Second).Unix(), *b.CancellingAt)
	require.Equal(t, t0.Add(35*time.Second).Unix(), *b.CancelledAt)
	require.Nil(t, b.FinalizingAt)
	require.Nil(t, b.CompletedAt)
	require.NotNil(t, b.InProgressAt)
}

func TestExpiryTimeline(t *testing.T) {
	t.Parallel()
	clock := newFakeClock()
	e := New(Config{Clock: clock, ValidatingFor: 10 * time.Second, InProgressFor: 100 * time.Second, ExpireAfter: 60 * time.Second})
	t.Cleanup(e.Close)
	t0 := clock.Now()
	// Expires before finalizing even without never-finish lines.
	id := createBatch(t, e, addFile(e, lines(10, "r")...)).ID
	for _, p := range []point{
		{60*time.Second - 1, StatusInProgress, 10, 4},
		{60 * time.Second, StatusExpired, 10, 5},
	} {
		clock.Set(t0.Add(p.at))
		b := getBatch(t, e, id)
		require.Equal(t, p.status, b.Status, "at %s", p.at)
		require.Equal(t, p.done, b.RequestCounts.Completed, "at %s", p.at)
	}
	b := getBatch(t, e, id)
	require.Equal(t, t0.Add(60*time.Second).Unix(), *b.ExpiredAt)
	require.NotNil(t, b.OutputFileID)
	require.NotNil(t, b.ErrorFileID)
	e.mu.Lock()
	defer e.mu.Unlock()
	require.Equal(t, 5, strings.Count(string(e.files[*b.ErrorFileID].data.bytes()), "batch_expired"))
}

// TestHundredThousandBatches checks the lazy design scales: creating,
// reading and finishing 100k batches (20k under -race) stays cheap.
func TestHundredThousandBatches(t *testing.T) {
	e, clock := timeline(t)
	t0 := clock.Now()
	fileID := addFile(e, line("a", "m"))
	began := time.Now()
	n := 100_000
	if raceEnabled {
		n = 20_000
	}
	var last string
	for range n {
		last = createBatch(t, e, fileID).ID
	}
	created := time.Since(began)
	require.Equal(t, n, e.Stats().ActiveNow)

	code, body := serve(t, e, http.MethodGet, "/v1/batches?limit=100", "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(body), last)

	began = time.Now()
	clock.Set(t0.Add(time.Hour))
	st := e.Stats() // finishes all 100k
	finished := time.Since(began)
	require.Zero(t, st.ActiveNow)
	require.Equal(t, n, st.MaxActive)
	require.Equal(t, StatusCompleted, getBatch(t, e, last).Status)
	t.Logf("created %d batches in %s, finished them in %s", n, created, finished)
	require.Less(t, finished, 30*time.Second)
}

func BenchmarkCreateBatch(b *testing.B) {
	e, _ := timeline(b)
	fileID := addFile(e, line("a", "m"))
	for b.Loop() {
		createBatch(b, e, fileID)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "batches/s")
}
