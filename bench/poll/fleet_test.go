package pollbench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// staggerClock is the emulator's clock: wall time plus an offset that is
// non-zero only while batches are seeded. The emulator plans a batch's
// whole lifecycle from its creation time, so batches created at once with
// the same timings would all complete together; creating them in waves
// with a growing offset spreads their completions over the stagger window
// while every batch exists (is tracked) from the start. A batch "created"
// in the future is simply validating until then.
type staggerClock struct{ off atomic.Int64 }

func (c *staggerClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// meter wraps the emulator and counts batch GETs per poller (by API key)
// and per batch, with the interval between consecutive GETs of a batch.
type meter struct {
	next http.Handler

	mu        sync.Mutex
	total     int64
	listed    int64 // List calls
	byKey     map[string]int64
	batches   map[string]*batchGets
	intervals []time.Duration
}

type batchGets struct {
	n    int32
	last time.Time
}

func newMeter(next http.Handler) *meter {
	return &meter{next: next, byKey: map[string]int64{}, batches: map[string]*batchGets{}}
}

func (m *meter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/v1/batches" {
		m.mu.Lock()
		m.listed++
		m.mu.Unlock()
	}
	if id, ok := strings.CutPrefix(r.URL.Path, "/v1/batches/"); ok && r.Method == http.MethodGet && !strings.Contains(id, "/") {
		now := time.Now()
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		m.mu.Lock()
		m.total++
		m.byKey[key]++
		g := m.batches[id]
		if g == nil {
			g = &batchGets{}
			m.batches[id] = g
		} else {
			m.intervals = append(m.intervals, now.Sub(g.last))
		}
		g.n++
		g.last = now
		m.mu.Unlock()
	}
	m.next.ServeHTTP(w, r)
}

func (m *meter) gets() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}

func (m *meter) lists() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.listed
}

func (m *meter) getsBy(key string) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byKey[key]
}

// getsOf returns the GET count of each batch.
func (m *meter) getsOf(ids []string) []int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]int, len(ids))
	for i, id := range ids {
		if g := m.batches[id]; g != nil {
			out[i] = int(g.n)
		}
	}
	return out
}

func (m *meter) intervalSample() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]time.Duration(nil), m.intervals...)
}

// vendorClient speaks to the emulator's /v1 API over HTTP, as the
// submitters would; seeding goes through it so the emulator validates
// every create exactly as in production.
type vendorClient struct {
	hc   *http.Client
	base string // ends in /v1
}

func (v vendorClient) do(ctx context.Context, method, path, ctype string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, v.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer pollbench-seed")
	req.Header.Set("Content-Type", ctype)
	resp, err := v.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: read: %w", method, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

// inputLine is the whole input file every seeded batch references: one
// request, so request_counts move once (at finalizing) and the adaptive
// backoff is reset only by status changes.
const inputLine = `{"custom_id":"r-0","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}`

func (v vendorClient) upload(ctx context.Context) (string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("purpose", "batch"); err != nil {
		return "", err
	}
	fw, err := mw.CreateFormFile("file", "pollbench.jsonl")
	if err != nil {
		return "", err
	}
	if _, err := io.WriteString(fw, inputLine+"\n"); err != nil {
		return "", err
	}
	if err := mw.Close(); err != nil {
		return "", err
	}
	var f struct {
		ID string `json:"id"`
	}
	if err := v.do(ctx, http.MethodPost, "/files", mw.FormDataContentType(), &buf, &f); err != nil {
		return "", fmt.Errorf("upload input: %w", err)
	}
	return f.ID, nil
}

func (v vendorClient) create(ctx context.Context, fileID, key string) (string, error) {
	body, err := json.Marshal(map[string]any{
		"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h",
		"metadata": map[string]string{contract.MetaIdempotencyKey: key},
	})
	if err != nil {
		return "", err
	}
	var b struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := v.do(ctx, http.MethodPost, "/batches", "application/json", bytes.NewReader(body), &b); err != nil {
		return "", fmt.Errorf("create batch %q: %w", key, err)
	}
	if b.ID == "" || b.Status != "validating" {
		return "", fmt.Errorf("create batch %q: got id %q status %q", key, b.ID, b.Status)
	}
	return b.ID, nil
}

// seed uploads one input file and creates n batches referencing it, in
// waves whose creation time is pushed stagger/waves further each, so their
// completions spread evenly over the stagger window. It returns the batch
// ids by index; key(i) is batch i's idempotency key.
func seed(ctx context.Context, v vendorClient, clock *staggerClock, n int, stagger time.Duration, key func(int) string) ([]string, error) {
	fileID, err := v.upload(ctx)
	if err != nil {
		return nil, err
	}
	defer clock.off.Store(0)
	waves := min(n, 240)
	ids := make([]string, n)
	for w := range waves {
		lo, hi := w*n/waves, (w+1)*n/waves
		clock.off.Store(int64(stagger) * int64(w) / int64(waves))
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(16)
		for i := lo; i < hi; i++ {
			g.Go(func() error {
				id, err := v.create(gctx, fileID, key(i))
				ids[i] = id
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	return ids, nil
}
