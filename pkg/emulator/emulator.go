package emulator

import (
	"container/heap"
	"context"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Emulator is an in-memory OpenAI Files + Batch API. It is an http.Handler
// serving /v1/... (the OpenAI API) and /_emulator/... (the admin API); mount
// it with httptest.NewServer or use [Server]. Close it to stop its
// background goroutines.
type Emulator struct {
	cfg   Config
	clock Clock
	log   zerolog.Logger
	mux   *http.ServeMux

	fmu    sync.Mutex // guards faults and frnd; taken after mu, never before
	faults Faults
	frnd   *rand.Rand

	mu         sync.Mutex
	rnd        *rand.Rand
	files      map[string]*file
	fileOrder  []*file
	batches    []*batch
	byID       map[string]*batch
	sched      schedule
	failedOnce map[string]bool
	enqueued   map[string]int64 // model -> estimated input tokens of active batches
	active     int
	maxActive  int
	created    int64

	calls *callLog
	hooks *webhookQueue

	wake   chan struct{}
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a running emulator for cfg with defaults filled in
// ([Config.WithDefaults]). It panics if the result is invalid, like
// httptest.NewServer does on failure: call [Config.Validate] first for
// configuration from users.
func New(cfg Config) *Emulator {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		panic("emulator: " + err.Error())
	}
	seed := uint64(cfg.Seed)
	e := &Emulator{
		cfg:        cfg,
		clock:      cfg.Clock,
		log:        cfg.Logger.With().Str("component", "emulator").Logger(),
		mux:        http.NewServeMux(),
		faults:     cfg.Faults,
		frnd:       rand.New(rand.NewPCG(seed, 0x5eed)),
		rnd:        rand.New(rand.NewPCG(seed, 0xba7c4)),
		files:      map[string]*file{},
		byID:       map[string]*batch{},
		failedOnce: map[string]bool{},
		enqueued:   map[string]int64{},
		calls:      newCallLog(cfg.CallLogSize),
		wake:       make(chan struct{}, 1),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.hooks = newWebhookQueue()
	e.routes()
	e.wg.Add(1)
	go e.runScheduler()
	if cfg.WebhookURL != "" {
		key, _ := webhookKey(cfg.WebhookSecret)
		for range webhookWorkers {
			e.wg.Add(1)
			go e.deliverWebhooks(key)
		}
	}
	return e
}

// Close stops the scheduler and webhook delivery (a delivery under way is
// abandoned) and waits for them. The handler keeps answering reads; it is
// safe to call Close more than once.
func (e *Emulator) Close() {
	e.cancel()
	e.hooks.close()
	e.wg.Wait()
}

// ServeHTTP serves the OpenAI API under /v1 and the admin API under /_emulator.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) { e.mux.ServeHTTP(w, r) }

func (e *Emulator) routes() {
	e.api("POST /v1/files", OpUpload, e.handleUpload)
	e.api("GET /v1/files", OpFileList, e.handleListFiles)
	e.api("GET /v1/files/{id}", OpFileGet, e.handleGetFile)
	e.api("GET /v1/files/{id}/content", OpContent, e.handleFileContent)
	e.api("DELETE /v1/files/{id}", OpFileDelete, e.handleDeleteFile)
	e.api("POST /v1/batches", OpCreate, e.handleCreateBatch)
	e.api("GET /v1/batches", OpList, e.handleListBatches)
	e.api("GET /v1/batches/{id}", OpGet, e.handleGetBatch)
	e.api("POST /v1/batches/{id}/cancel", OpCancel, e.handleCancelBatch)
	e.api("/v1/", OpOther, func(c *call) {
		c.fail(notFound("", "unknown_url", "Invalid URL (%s %s)", c.r.Method, c.r.URL.Path))
	})
	e.mux.HandleFunc("GET /_emulator/batches", e.handleAdminBatches)
	e.mux.HandleFunc("GET /_emulator/calls", e.handleAdminCalls)
	e.mux.HandleFunc("GET /_emulator/stats", e.handleAdminStats)
	e.mux.HandleFunc("GET /_emulator/faults", e.handleAdminGetFaults)
	e.mux.HandleFunc("PUT /_emulator/faults", e.handleAdminPutFaults)
	e.mux.HandleFunc("POST /_emulator/reset-stats", e.handleAdminResetStats)
}

// call is one /v1 request being handled.
type call struct {
	w       http.ResponseWriter
	r       *http.Request
	op      string
	batchID string
	status  int
	started time.Time
}

func (c *call) json(status int, v any) {
	c.status = status
	writeJSON(c.w, status, v)
}

func (c *call) fail(err *apiError) {
	c.status = err.status
	writeError(c.w, err)
}

// api registers a /v1 route: latency, auth and fault injection run before
// the handler, and every call is counted and logged.
func (e *Emulator) api(pattern, op string, h func(*call)) {
	e.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, op: op, started: time.Now()}
		if op == OpGet || op == OpCancel {
			c.batchID = r.PathValue("id")
		}
		defer func() { e.calls.add(c, time.Now()) }()
		f := e.Faults()
		if !sleepCtx(r.Context(), f.Latency) {
			c.status = statusClientClosed
			return
		}
		if err := e.authorize(r); err != nil {
			c.fail(err)
			return
		}
		if op != OpOther && e.injectFault(c, f) {
			return
		}
		h(c)
	})
}

// statusClientClosed logs a call the client abandoned during Latency.
const statusClientClosed = 499

// sleepCtx waits d unless ctx ends first; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (e *Emulator) authorize(r *http.Request) *apiError {
	h := r.Header.Get("Authorization")
	key, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(key) == "" {
		return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "", "",
			"You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
	}
	if e.cfg.APIKey != "" && key != e.cfg.APIKey {
		return newAPIError(http.StatusUnauthorized, typeInvalidRequest, "", "invalid_api_key",
			"Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.", redactKey(key))
	}
	return nil
}

func redactKey(k string) string {
	if len(k) <= 8 {
		return "****"
	}
	return k[:3] + strings.Repeat("*", 4) + k[len(k)-4:]
}

// injectFault answers c with an injected 429 or 5xx and reports whether it did.
func (e *Emulator) injectFault(c *call, f Faults) bool {
	rl, se := f.rates(c.op)
	if rl == 0 && se == 0 {
		return false
	}
	e.fmu.Lock()
	roll, pick := e.frnd.Float64(), e.frnd.IntN(2)
	e.fmu.Unlock()
	var err *apiError
	switch {
	case roll < rl:
		err = errRateLimited()
	case roll < rl+se:
		err = errServer([]int{http.StatusInternalServerError, http.StatusServiceUnavailable}[pick])
	default:
		return false
	}
	secs := max(1, int(math.Ceil(f.RetryAfter.Seconds())))
	c.w.Header().Set("Retry-After", strconv.Itoa(secs))
	c.fail(err)
	return true
}

// Faults returns a copy of the fault injection in force.
func (e *Emulator) Faults() Faults {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	f := e.faults
	f.Ops = maps.Clone(f.Ops)
	return f
}

// SetFaults replaces the fault injection in force; unset RetryAfter
// defaults to 1s.
func (e *Emulator) SetFaults(f Faults) error {
	f = f.withDefaults()
	if err := f.Validate(); err != nil {
		return err
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.faults = f
	return nil
}

// runScheduler finishes batches when they turn terminal even if nobody
// polls them, so webhooks go out and the active count stays exact. It
// sleeps until the earliest terminal time, but at most TickInterval so a
// simulated Clock is followed too.
func (e *Emulator) runScheduler() {
	defer e.wg.Done()
	t := time.NewTimer(e.cfg.TickInterval)
	defer t.Stop()
	for {
		e.mu.Lock()
		now := e.clock.Now()
		e.runDueLocked(now)
		next := e.nextDueLocked()
		e.mu.Unlock()
		wait := e.cfg.TickInterval
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(now), time.Millisecond))
		}
		t.Reset(wait)
		select {
		case <-e.ctx.Done():
			return
		case <-e.wake:
		case <-t.C:
		}
	}
}

func (e *Emulator) schedule(b *batch) {
	heap.Push(&e.sched, scheduled{at: b.terminalAt, b: b})
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Batches returns every batch ever created, oldest first, as of now.
func (e *Emulator) Batches() []BatchInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	e.runDueLocked(now)
	out := make([]BatchInfo, 0, len(e.batches))
	for _, b := range e.batches {
		e.advanceLocked(b, now)
		v := e.viewLocked(b, now)
		info := BatchInfo{
			ID: b.id, Status: v.Status, Metadata: b.metadata, CreatedAt: b.created,
			RequestCounts: v.RequestCounts, Endpoint: b.endpoint, InputFileID: b.inputFileID,
			OutputFileID: b.outputFileID, ErrorFileID: b.errorFileID,
		}
		if v.Model != nil {
			info.Model = *v.Model
		}
		if !now.Before(b.terminalAt) {
			info.TerminalAt = b.terminalAt
		}
		out = append(out, info)
	}
	return out
}

// Stats are the emulator's counters (Emulator.Stats, GET /_emulator/stats).
type Stats struct {
	// BatchesCreated counts batches created since start or the last reset.
	BatchesCreated int64 `json:"batches_created"`
	// ActiveNow counts batches validating, in_progress, finalizing or cancelling.
	ActiveNow int `json:"active_now"`
	// MaxActive is the highest ActiveNow since start or the last reset.
	MaxActive int `json:"max_active"`
	// CallsByOp counts /v1 calls by operation (OpCreate, OpGet, ...),
	// including those answered with an injected fault.
	CallsByOp map[string]int64 `json:"calls_by_op"`
}

// Stats returns the counters as of now.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	e.runDueLocked(e.clock.Now())
	s := Stats{BatchesCreated: e.created, ActiveNow: e.active, MaxActive: e.maxActive}
	e.mu.Unlock()
	s.CallsByOp = e.calls.byOp()
	return s
}

// ResetStats zeroes BatchesCreated and CallsByOp, sets MaxActive to
// ActiveNow and empties the call log. Batches and files are kept.
func (e *Emulator) ResetStats() {
	e.mu.Lock()
	e.runDueLocked(e.clock.Now())
	e.created = 0
	e.maxActive = e.active
	e.mu.Unlock()
	e.calls.reset()
}

// Calls returns the logged /v1 calls, oldest first; with batchID != "" only
// the calls about that batch (get, cancel, and the create that made it).
func (e *Emulator) Calls(batchID string) []Call {
	return e.calls.list(batchID)
}
