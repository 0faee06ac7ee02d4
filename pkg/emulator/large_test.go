package emulator

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

// Sizes of the large batch: OpenAI's limits, 50,000 requests in a file of
// up to 200 MB. The race detector slows parsing and encoding ~10x, so the
// race build runs a tenth of it; BenchmarkLargeBatch always runs it whole.
const (
	largeLines     = 50_000
	largeLineBytes = 4_000 // 200 MB of input
	largeReply     = 1_250 // ~2 KB output lines: ~100 MB of output
)

// largeInput generates an input file of n chat requests of lineBytes bytes
// each on the fly, so the test itself holds none of it.
type largeInput struct {
	n, lineBytes int
	next         int
	line         []byte
	off          int
}

const filler = "All work and no play makes a long prompt. "

func (g *largeInput) size() int64 { return int64(g.n) * int64(g.lineBytes) }

func (g *largeInput) Read(p []byte) (int, error) {
	if g.off == len(g.line) {
		if g.next == g.n {
			return 0, io.EOF
		}
		g.line = g.render(g.line[:0], g.next)
		g.next++
		g.off = 0
	}
	n := copy(p, g.line[g.off:])
	g.off += n
	return n, nil
}

func (g *largeInput) render(dst []byte, i int) []byte {
	dst = fmt.Appendf(dst, `{"custom_id":"req-%06d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`, i)
	const tail = `"}]}}` + "\n"
	for pad := g.lineBytes - len(dst) - len(tail); pad > 0; {
		n := min(pad, len(filler))
		dst = append(dst, filler[:n]...)
		pad -= n
	}
	if len(dst)+len(tail) != g.lineBytes {
		panic(fmt.Sprintf("line %d is %d bytes, want %d", i, len(dst)+len(tail), g.lineBytes))
	}
	return append(dst, tail...)
}

// uploadStreaming POSTs body as the file part of a multipart upload without
// buffering it: with its Content-Length, or chunked when chunked is set.
// It answers the file's ID.
func uploadStreaming(tb testing.TB, client *http.Client, baseURL string, body io.Reader, size int64, chunked bool) string {
	tb.Helper()
	status, raw := postFile(tb, client, baseURL, body, size, chunked)
	require.Equal(tb, http.StatusOK, status, string(raw))
	var f struct {
		ID    string `json:"id"`
		Bytes int64  `json:"bytes"`
	}
	require.NoError(tb, json.Unmarshal(raw, &f))
	require.Equal(tb, size, f.Bytes)
	return f.ID
}

func postFile(tb testing.TB, client *http.Client, baseURL string, body io.Reader, size int64, chunked bool) (int, []byte) {
	tb.Helper()
	var frame bytes.Buffer
	mw := multipart.NewWriter(&frame)
	require.NoError(tb, mw.WriteField("purpose", "batch"))
	_, err := mw.CreateFormFile("file", "large.jsonl")
	require.NoError(tb, err)
	head := frame.Len()
	require.NoError(tb, mw.Close()) // appends the closing boundary
	req, err := http.NewRequest(http.MethodPost, baseURL+"/files",
		io.MultiReader(bytes.NewReader(frame.Bytes()[:head]), body, bytes.NewReader(frame.Bytes()[head:])))
	require.NoError(tb, err)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer k")
	req.ContentLength = int64(frame.Len()) + size
	if chunked {
		req.ContentLength = -1
	}
	resp, err := client.Do(req)
	require.NoError(tb, err)
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return resp.StatusCode, raw
}

// TestUploadLimit: a file of MaxFileBytes is accepted and one byte more is
// 413 file_too_large, with and without Content-Length.
func TestUploadLimit(t *testing.T) {
	t.Parallel()
	emu := New(Config{MaxFileBytes: 10_000})
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		srv.Close()
		emu.Close()
	})
	for _, chunked := range []bool{false, true} {
		data := bytes.Repeat([]byte("0123456789\n"), 1000)[:10_000]
		status, raw := postFile(t, srv.Client(), srv.URL+"/v1", bytes.NewReader(data), int64(len(data)), chunked)
		require.Equal(t, http.StatusOK, status, string(raw))
		var f struct{ ID string }
		require.NoError(t, json.Unmarshal(raw, &f))
		emu.mu.Lock()
		require.Equal(t, data, emu.files[f.ID].data.bytes(), "chunked=%t", chunked)
		emu.mu.Unlock()

		data = append(data, '\n')
		status, raw = postFile(t, srv.Client(), srv.URL+"/v1", bytes.NewReader(data), int64(len(data)), chunked)
		require.Equal(t, http.StatusRequestEntityTooLarge, status, string(raw))
		require.Contains(t, string(raw), `"code":"file_too_large"`)
	}
}

// heapWatch samples HeapInuse until stopped and keeps the peak.
type heapWatch struct {
	stop, done chan struct{}
	once       sync.Once
	peak       uint64
}

func watchHeap() *heapWatch {
	w := &heapWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			w.peak = max(w.peak, ms.HeapInuse)
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// Peak stops the sampling, if still running, and returns the highest
// HeapInuse seen.
func (w *heapWatch) Peak() uint64 {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return w.peak
}

func heapAfterGC() runtime.MemStats {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}

// largeRun is what one large batch cost the process.
type largeRun struct {
	in, out  int64         // input and output file bytes
	peak     int64         // peak HeapInuse growth while uploading, running and downloading
	retained int64         // heap growth after GC, both files still stored
	took     time.Duration // upload to downloaded output
}

// runLargeBatch uploads g through plain HTTP (chunked or with its
// Content-Length), runs it as a chat batch on an immediate timeline and
// downloads its output through openai-go, checking every custom_id comes
// back exactly once.
func runLargeBatch(tb testing.TB, g *largeInput, replyBytes int, chunked bool) largeRun {
	tb.Helper()
	emu := New(Config{
		ValidatingFor: time.Nanosecond, InProgressFor: time.Nanosecond, FinalizingFor: time.Nanosecond,
		TickInterval: time.Millisecond, ReplyBytes: replyBytes,
		CallLogSize: 100, // the default ring is 10 MB of the baseline, which GC pacing would double
	})
	var uploads []int64
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/files" {
			mu.Lock()
			uploads = append(uploads, r.ContentLength)
			mu.Unlock()
		}
		emu.ServeHTTP(w, r)
	}))
	defer func() {
		srv.Close()
		emu.Close()
	}()
	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("k"),
		option.WithMaxRetries(0), option.WithHTTPClient(srv.Client()))
	ctx := context.Background()

	base := heapAfterGC()
	watch := watchHeap()
	defer watch.Peak() // stops it if the test fails
	began := time.Now()
	fileID := uploadStreaming(tb, srv.Client(), srv.URL+"/v1", g, g.size(), chunked)
	emu.mu.Lock()
	stored := emu.files[fileID].data
	emu.mu.Unlock()
	var reserved int
	for _, block := range stored.blocks {
		reserved += cap(block)
	}
	require.Less(tb, float64(reserved), 1.01*float64(g.size()), "the upload is stored once, in %d blocks", len(stored.blocks))
	if !chunked {
		require.Len(tb, stored.blocks, 1, "an upload of known length is one buffer")
	}
	b, err := client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
	})
	require.NoError(tb, err)
	deadline := time.Now().Add(10 * time.Minute) // two shared cores: generous
	for b.Status != openai.BatchStatusCompleted {
		require.NotContains(tb, []openai.BatchStatus{openai.BatchStatusFailed, openai.BatchStatusExpired, openai.BatchStatusCancelled}, b.Status, b.RawJSON())
		require.True(tb, time.Now().Before(deadline), "batch still %s", b.Status)
		time.Sleep(10 * time.Millisecond) // poll interval, not synchronisation
		b, err = client.Batches.Get(ctx, b.ID)
		require.NoError(tb, err)
	}
	require.EqualValues(tb, g.n, b.RequestCounts.Completed, b.RawJSON())
	require.Empty(tb, b.ErrorFileID)
	out := downloadOutput(tb, client, b.OutputFileID, g.n, replyBytes)
	took := time.Since(began)
	peak := watch.Peak()
	after := heapAfterGC()

	mu.Lock()
	require.Len(tb, uploads, 1)
	require.Equal(tb, chunked, uploads[0] < 0, "Content-Length the emulator saw: %d", uploads[0])
	mu.Unlock()
	return largeRun{
		in: g.size(), out: out, took: took,
		peak:     int64(peak) - int64(base.HeapInuse),
		retained: int64(after.HeapAlloc) - int64(base.HeapAlloc),
	}
}

// downloadOutput streams the output file and checks it has one successful
// line per request, each custom_id once, and returns its size. It decodes
// only the first reply whole: the test's own garbage counts in the heap.
func downloadOutput(tb testing.TB, client openai.Client, fileID string, n, replyBytes int) int64 {
	tb.Helper()
	resp, err := client.Files.Content(context.Background(), fileID)
	require.NoError(tb, err)
	defer func() { _ = resp.Body.Close() }()
	seen := make([]bool, n)
	var size int64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if size == 0 {
			var l struct {
				Response struct {
					Body openai.ChatCompletion `json:"body"`
				} `json:"response"`
			}
			require.NoError(tb, json.Unmarshal(sc.Bytes(), &l))
			require.Len(tb, l.Response.Body.Choices, 1)
			require.GreaterOrEqual(tb, len(l.Response.Body.Choices[0].Message.Content), replyBytes)
		}
		size += int64(len(sc.Bytes())) + 1
		var l struct {
			CustomID string `json:"custom_id"`
			Response struct {
				StatusCode int `json:"status_code"`
			} `json:"response"`
		}
		require.NoError(tb, json.Unmarshal(sc.Bytes(), &l))
		require.Equal(tb, http.StatusOK, l.Response.StatusCode)
		i, err := strconv.Atoi(strings.TrimPrefix(l.CustomID, "req-"))
		require.NoError(tb, err, l.CustomID)
		require.True(tb, i >= 0 && i < n && !seen[i], "custom_id %s out of range or repeated", l.CustomID)
		seen[i] = true
	}
	require.NoError(tb, sc.Err())
	for i, ok := range seen {
		require.True(tb, ok, "custom_id req-%06d missing from the output", i)
	}
	return size
}

// TestLargeBatch runs a 200 MB, 50,000-request batch (a tenth of it under
// -race) uploaded with and without Content-Length, and checks the
// emulator holds one copy of each file: the heap grows by at most 2.5x
// (input + output) at its peak and keeps about input + output.
func TestLargeBatch(t *testing.T) {
	n := largeLines
	if raceEnabled {
		n /= 10
	}
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%t", chunked), func(t *testing.T) {
			run := runLargeBatch(t, &largeInput{n: n, lineBytes: largeLineBytes}, largeReply, chunked)
			files := float64(run.in + run.out)
			t.Logf("input %.1f MB, output %.1f MB in %s: peak heap +%.1f MB (%.2fx input+output), retained +%.1f MB",
				mb(run.in), mb(run.out), run.took.Round(time.Millisecond), mb(run.peak), float64(run.peak)/files, mb(run.retained))
			require.Less(t, float64(run.peak), 2.5*files, "peak heap growth")
			require.Less(t, float64(run.retained), 1.25*files, "heap kept after the batch")
		})
	}
}

func mb(n int64) float64 { return float64(n) / 1e6 }

// BenchmarkLargeBatch runs the full 200 MB, 50,000-request batch: upload
// with Content-Length, execution and download. It reports throughput of
// input plus output bytes and the peak heap growth.
func BenchmarkLargeBatch(b *testing.B) {
	var peak, bytes int64
	for b.Loop() {
		run := runLargeBatch(b, &largeInput{n: largeLines, lineBytes: largeLineBytes}, largeReply, false)
		peak = max(peak, run.peak)
		bytes += run.in + run.out
	}
	b.ReportMetric(mb(bytes)/b.Elapsed().Seconds(), "MB/s")
	b.ReportMetric(mb(peak), "peak-heap-MB")
}
