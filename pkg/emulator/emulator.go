package emulator

import (
	"container/heap"
	"context"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Emulator is an in-memory OpenAI Files + Batch API and Anthropic Message
// Batches API. It is an http.Handler serving /v1/... (both vendor APIs) and
// /_emulator/... (the admin API); mount it with httptest.NewServer or use
// [Server]. Close it to stop its background goroutines.
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
	msgBatches []*msgBatch          // Anthropic Message Batches, deleted ones too
	msgByID    map[string]*msgBatch // undeleted Message Batches
	ord        int64                // batches of either API created so far
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
		msgByID:    map[string]*msgBatch{},
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

// ServeHTTP serves the OpenAI and Anthropic APIs under /v1 and the admin
// API under /_emulator.
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
	e.anthropicRoutes()
	e.mux.HandleFunc("GET /_emulator/batches", e.handleAdminBatches)
	e.mux.HandleFunc("GET /_emulator/calls", e.handleAdminCalls)
	e.mux.HandleFunc("GET /_emulator/stats", e.handleAdminStats)
	e.mux.HandleFunc("GET /_emulator/faults", e.handleAdminGetFaults)
	e.mux.HandleFunc("PUT /_emulator/faults", e.handleAdminPutFaults)
	e.mux.HandleFunc("POST /_emulator/reset-stats", e.handleAdminResetStats)
}

// call is one /v1 request being handled.
type call struct {
	w         http.ResponseWriter
	r         *http.Request
	op        string
	batchID   string
	requestID string // Anthropic's request-id
	status    int
	started   time.Time
	logged    bool // added to the call log before the handler returned
}

func (c *call) json(status int, v any) {
	c.status = status
	writeJSON(c.w, status, v)
}

func (c *call) fail(err *apiError) {
	c.status = err.status
	writeError(c.w, err)
}

// api registers an OpenAI /v1 route: latency, auth and fault injection run
// before the handler, and every call is counted and logged.
func (e *Emulator) api(pattern, op string, h func(*call)) {
	e.route(pattern, op, func(c *call, f Faults) bool {
		if err := e.authorize(c.r); err != nil {
			c.fail(err)
			return false
		}
		return op == OpOther || !e.injectFault(c, f)
	}, h)
}

// route registers a /v1 route of either API: after Latency, guard checks
// auth and injects faults, answering c itself when it returns false; then
// h handles the call. Every call is counted and logged.
func (e *Emulator) route(pattern, op string, guard func(*call, Faults) bool, h func(*call)) {
	e.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		c := &call{w: w, r: r, op: op, started: time.Now()}
		if slices.Contains(batchPathOps, op) {
			c.batchID = r.PathValue("id")
		}
		defer func() {
			if !c.logged {
				e.calls.add(c, time.Now())
			}
		}()
		f := e.Faults()
		if !sleepCtx(r.Context(), f.Latency) {
			c.status = statusClientClosed
			return
		}
		if guard(c, f) {
			h(c)
		}
	})
}

// batchPathOps are the operations whose path {id} is a batch ID, logged
// with the call.
var batchPathOps = []string{OpGet, OpCancel, OpAnthropicGet, OpAnthropicCancel, OpAnthropicDelete, OpAnthropicResults}

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
	r := f.rates(c.op)
	if r.RateLimitRate == 0 && r.ServerErrorRate == 0 {
		return false
	}
	roll, pick := e.rollFault()
	var err *apiError
	switch {
	case roll < r.RateLimitRate:
		err = errRateLimited()
	case roll < r.RateLimitRate+r.ServerErrorRate:
		err = errServer([]int{http.StatusInternalServerError, http.StatusServiceUnavailable}[pick])
	default:
		return false
	}
	setRetryAfter(c.w, f)
	c.fail(err)
	return true
}

// rollFault draws the roll that decides an injected fault and a coin that
// picks between its two kinds of server error.
func (e *Emulator) rollFault() (roll float64, pick int) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.frnd.Float64(), e.frnd.IntN(2)
}

// setRetryAfter sends f.RetryAfter in whole seconds, at least 1.
func setRetryAfter(w http.ResponseWriter, f Faults) {
	secs := max(1, int(math.Ceil(f.RetryAfter.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
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

func (e *Emulator) schedule(b *batch) { e.pushDue(scheduled{at: b.terminalAt, b: b}) }

func (e *Emulator) scheduleMsg(m *msgBatch) { e.pushDue(scheduled{at: m.terminalAt, m: m}) }

// pushDue adds s to the schedule and wakes the scheduler to look at it.
func (e *Emulator) pushDue(s scheduled) {
	heap.Push(&e.sched, s)
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Batches returns every batch ever created through either API, oldest
// first, as of now: Anthropic Message Batches with Provider "anthropic",
// deleted ones included.
func (e *Emulator) Batches() []BatchInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	e.runDueLocked(now)
	out := make([]BatchInfo, 0, len(e.batches)+len(e.msgBatches))
	i, j := 0, 0
	for i < len(e.batches) || j < len(e.msgBatches) {
		if j == len(e.msgBatches) || i < len(e.batches) && e.batches[i].ord < e.msgBatches[j].ord {
			out = append(out, e.batchInfoLocked(e.batches[i], now))
			i++
			continue
		}
		m := e.msgBatches[j]
		e.advanceMsgLocked(m, now)
		out = append(out, m.infoLocked(now))
		j++
	}
	return out
}

func (e *Emulator) batchInfoLocked(b *batch, now time.Time) BatchInfo {
	e.advanceLocked(b, now)
	v := e.viewLocked(b, now)
	info := BatchInfo{
		ID: b.id, Provider: ProviderOpenAI, Status: v.Status, Metadata: b.metadata, CreatedAt: b.created,
		RequestCounts: v.RequestCounts, Endpoint: b.endpoint, InputFileID: b.inputFileID,
		OutputFileID: b.outputFileID, ErrorFileID: b.errorFileID,
	}
	if v.Model != nil {
		info.Model = *v.Model
	}
	if !now.Before(b.terminalAt) {
		info.TerminalAt = b.terminalAt
	}
	return info
}

// nextOrd numbers a new batch of either API in creation order.
func (e *Emulator) nextOrd() int64 {
	e.ord++
	return e.ord
}

// Stats are the emulator's counters (Emulator.Stats, GET /_emulator/stats).
type Stats struct {
	// BatchesCreated counts batches created through either API since start
	// or the last reset.
	BatchesCreated int64 `json:"batches_created"`
	// ActiveNow counts OpenAI batches validating, in_progress, finalizing or
	// cancelling and Anthropic Message Batches not yet ended.
	ActiveNow int `json:"active_now"`
	// MaxActive is the highest ActiveNow since start or the last reset.
	MaxActive int `json:"max_active"`
	// CallsByOp counts /v1 calls by operation (OpCreate, OpGet, ...,
	// OpAnthropicCreate, ...), including those answered with an injected
	// fault.
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
// the calls about that batch (the create that made it and the calls with
// its ID in their path).
func (e *Emulator) Calls(batchID string) []Call {
	return e.calls.list(batchID)
}
