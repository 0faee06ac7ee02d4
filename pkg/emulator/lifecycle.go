package emulator

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"
)

// Batch statuses, as OpenAI spells them.
const (
	StatusValidating = "validating"
	StatusFailed     = "failed"
	StatusInProgress = "in_progress"
	StatusFinalizing = "finalizing"
	StatusCompleted  = "completed"
	StatusExpired    = "expired"
	StatusCancelling = "cancelling"
	StatusCancelled  = "cancelled"
)

// batch is one emulated batch. Its whole lifecycle is planned at creation
// as timestamps, so its status at any instant is computed on read (lazy
// evaluation) rather than by ticking every batch; only the moment it turns
// terminal is scheduled, for webhooks and the active count. A cancel
// re-plans the end. All fields are guarded by Emulator.mu.
type batch struct {
	seq                               int   // index in Emulator.batches
	ord                               int64 // creation order across both APIs
	id, endpoint, inputFileID, window string
	metadata                          map[string]string
	outputExpiresAfter                int64 // seconds; 0 means the default
	created, expiresAt                time.Time

	in           input
	data         content // the input file, which in.reqs' spans point into
	total        int
	countsTokens bool // in.tokens is part of the model's enqueued tokens

	validatedAt, finalizeAt, completeAt time.Time
	stuck                               bool // some request never finishes: only expiry or cancel end it
	cancelAt, cancelledAt               time.Time
	terminalAt                          time.Time

	sched []*inputRequest // requests that will execute, in execution order
	next  int             // sched[:next] have executed
	runs  time.Duration   // InProgressFor at creation

	completed, failed int64
	usage             usage
	okLines, errLines content // output and error file, in execution order

	final                     bool
	outputFileID, errorFileID string
}

// plan fixes the batch's timeline from its creation time and input, and
// the order its requests execute in: a random one, since output lines are
// written as requests execute and OpenAI does not guarantee their order.
func (b *batch) plan(cfg Config, rnd *rand.Rand) {
	b.validatedAt = b.created.Add(cfg.ValidatingFor)
	b.expiresAt = b.created.Add(cfg.ExpireAfter)
	b.runs = cfg.InProgressFor
	b.total = len(b.in.reqs)
	reqs := b.in.reqs
	rnd.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	b.sched = make([]*inputRequest, 0, len(reqs))
	for i := range reqs {
		r := &reqs[i]
		if strings.Contains(r.customID, TriggerNeverFinish) || b.in.model == ModelExpireMe {
			b.stuck = true
			continue
		}
		b.sched = append(b.sched, r)
	}
	if !b.stuck {
		b.finalizeAt = b.validatedAt.Add(cfg.InProgressFor)
		b.completeAt = b.finalizeAt.Add(cfg.FinalizingFor)
	}
	b.terminalAt = b.naturalEnd()
}

func (b *batch) valid() bool { return b.in.errs == nil }

// expires reports whether the completion window ends before the batch
// would fail validation or start finalizing (ties go to expiry).
func (b *batch) expires() bool {
	if !b.cancelAt.IsZero() {
		return false
	}
	switch {
	case !b.valid():
		return !b.expiresAt.After(b.validatedAt)
	case b.stuck:
		return true
	default:
		return !b.expiresAt.After(b.finalizeAt)
	}
}

// naturalEnd is when an uncancelled batch turns terminal.
func (b *batch) naturalEnd() time.Time {
	switch {
	case b.expires():
		return b.expiresAt
	case !b.valid():
		return b.validatedAt
	default:
		return b.completeAt
	}
}

// halt is when execution stops early (cancel or expiry), zero if never.
func (b *batch) halt() (at time.Time, cancelled bool) {
	if !b.cancelAt.IsZero() {
		return b.cancelAt, true
	}
	if b.expires() {
		return b.expiresAt, false
	}
	return time.Time{}, false
}

// reached reports whether phase timestamp x was passed by t before a halt.
func (b *batch) reached(x, t time.Time) bool {
	if x.IsZero() || x.After(t) {
		return false
	}
	h, cancelled := b.halt()
	return h.IsZero() || x.Before(h) || (cancelled && x.Equal(h))
}

func (b *batch) statusAt(t time.Time) string {
	if !b.cancelAt.IsZero() && !t.Before(b.cancelAt) {
		if t.Before(b.cancelledAt) {
			return StatusCancelling
		}
		return StatusCancelled
	}
	switch {
	case b.expires() && !t.Before(b.expiresAt):
		return StatusExpired
	case t.Before(b.validatedAt):
		return StatusValidating
	case !b.valid():
		return StatusFailed
	case b.stuck || t.Before(b.finalizeAt):
		return StatusInProgress
	case t.Before(b.completeAt):
		return StatusFinalizing
	}
	return StatusCompleted
}

// doneAt is when sched[i] executes: requests are spread evenly over the
// in-progress phase.
func (b *batch) doneAt(i int) time.Time {
	n := float64(len(b.sched))
	return b.validatedAt.Add(time.Duration(float64(b.runs) * float64(i+1) / n))
}

// advanceLocked brings b up to now: executes the requests due by now (or
// by the halt) and finishes b once it is terminal.
func (e *Emulator) advanceLocked(b *batch, now time.Time) {
	if b.final {
		return
	}
	cutoff := now
	if h, _ := b.halt(); !h.IsZero() && h.Before(cutoff) {
		cutoff = h
	}
	if b.valid() {
		for b.next < len(b.sched) {
			at := b.doneAt(b.next)
			if at.After(cutoff) {
				break
			}
			e.executeLocked(b, b.sched[b.next], at)
			b.next++
		}
	}
	if !now.Before(b.terminalAt) {
		e.finishLocked(b)
	}
}

// outputLine is one line of an output or error file.
type outputLine struct {
	ID       string          `json:"id"`
	CustomID string          `json:"custom_id"`
	Response *outputResponse `json:"response"`
	Error    *lineError      `json:"error"`
}

type outputResponse struct {
	StatusCode int    `json:"status_code"`
	RequestID  string `json:"request_id"`
	Body       any    `json:"body"`
}

type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// outcome decides a request's HTTP status from its custom_id triggers and
// FailureRate.
func (e *Emulator) outcomeLocked(customID string) int {
	switch {
	case strings.Contains(customID, TriggerFail400):
		return 400
	case strings.Contains(customID, TriggerFail429):
		return 429
	case strings.Contains(customID, TriggerFailAlways):
		return 500
	case strings.Contains(customID, TriggerFailOnce):
		if !e.failedOnce[customID] {
			e.failedOnce[customID] = true
			return 500
		}
	}
	if rate := e.Faults().FailureRate; rate > 0 && e.rnd.Float64() < rate {
		return 500
	}
	return 200
}

// executeLocked runs r and appends its line to b's output or error file.
func (e *Emulator) executeLocked(b *batch, r *inputRequest, at time.Time) {
	status := e.outcomeLocked(r.customID)
	resp := &outputResponse{StatusCode: status, RequestID: randID(16)}
	line := outputLine{ID: newBatchReqID(), CustomID: r.customID, Response: resp}
	if status == 200 {
		body, u := e.responseBody(b, r, at)
		resp.Body = body
		b.completed++
		b.usage.input += u.input
		b.usage.output += u.output
		writeLine(&b.okLines, line)
	} else {
		resp.Body = errorBody(status).body()
		b.failed++
		writeLine(&b.errLines, line)
	}
	r.executed = true
}

// writeLine appends v to w as one line of JSON.
func writeLine(w io.Writer, v any) {
	if err := json.NewEncoder(w).Encode(v); err != nil {
		panic(fmt.Sprintf("emulator: marshal %T: %v", v, err))
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emulator: marshal %T: %v", v, err))
	}
	return b
}

const expiredMessage = "This request could not be executed before the completion window of 24h expired."

// finishLocked turns b terminal: stores its output and error files, frees
// its share of the active count and enqueued tokens, and queues its webhook.
func (e *Emulator) finishLocked(b *batch) {
	b.final = true
	status := b.statusAt(b.terminalAt)
	if status == StatusExpired && b.valid() {
		for i := range b.in.reqs { // in execution order, which is random
			if r := &b.in.reqs[i]; !r.executed {
				writeLine(&b.errLines, outputLine{ID: newBatchReqID(), CustomID: r.customID,
					Error: &lineError{Code: "batch_expired", Message: expiredMessage}})
			}
		}
	}
	if status != StatusFailed {
		if b.okLines.size > 0 {
			b.outputFileID = e.storeOutputLocked(b, "output", b.okLines)
		}
		if b.errLines.size > 0 {
			b.errorFileID = e.storeOutputLocked(b, "error", b.errLines)
		}
	}
	b.okLines, b.errLines, b.data, b.sched = content{}, content{}, content{}, nil
	b.in.reqs = nil
	e.active--
	if b.countsTokens {
		e.enqueued[b.in.model] -= b.in.tokens
	}
	e.log.Debug().Str("batch_id", b.id).Str("status", status).Msg("batch finished")
	if e.cfg.WebhookURL != "" {
		e.hooks.push(webhookEvent{
			ID: newEventID(), Object: "event", CreatedAt: b.terminalAt.Unix(),
			Type: "batch." + status, Data: webhookEventData{ID: b.id},
		})
	}
}

// storeOutputLocked stores data, b's lines as they were written, as a
// batch_output file without copying it.
func (e *Emulator) storeOutputLocked(b *batch, kind string, data content) string {
	data.trim()
	expireSecs := b.outputExpiresAfter
	if expireSecs == 0 {
		expireSecs = defaultBatchFileTTL
	}
	f := &file{
		ID: newFileID(), Object: "file", Bytes: data.size, CreatedAt: b.terminalAt.Unix(),
		Filename: b.id + "_" + kind + ".jsonl", Purpose: "batch_output", Status: "processed",
		ExpiresAt: ptr(b.terminalAt.Unix() + expireSecs), data: data,
	}
	e.files[f.ID] = f
	e.fileOrder = append(e.fileOrder, f)
	return f.ID
}

func ptr[T any](v T) *T { return &v }

// batchJSON is OpenAI's Batch object; unset timestamps and IDs are null.
type batchJSON struct {
	ID               string            `json:"id"`
	Object           string            `json:"object"`
	Endpoint         string            `json:"endpoint"`
	Model            *string           `json:"model"`
	Errors           *batchErrors      `json:"errors"`
	InputFileID      string            `json:"input_file_id"`
	CompletionWindow string            `json:"completion_window"`
	Status           string            `json:"status"`
	OutputFileID     *string           `json:"output_file_id"`
	ErrorFileID      *string           `json:"error_file_id"`
	CreatedAt        int64             `json:"created_at"`
	InProgressAt     *int64            `json:"in_progress_at"`
	ExpiresAt        *int64            `json:"expires_at"`
	FinalizingAt     *int64            `json:"finalizing_at"`
	CompletedAt      *int64            `json:"completed_at"`
	FailedAt         *int64            `json:"failed_at"`
	ExpiredAt        *int64            `json:"expired_at"`
	CancellingAt     *int64            `json:"cancelling_at"`
	CancelledAt      *int64            `json:"cancelled_at"`
	RequestCounts    RequestCounts     `json:"request_counts"`
	Usage            batchUsage        `json:"usage"`
	Metadata         map[string]string `json:"metadata"`
}

type batchErrors struct {
	Object string       `json:"object"`
	Data   []BatchError `json:"data"`
}

// RequestCounts are a batch's request counts.
type RequestCounts struct {
	Total     int64 `json:"total"`
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

type batchUsage struct {
	InputTokens         int64          `json:"input_tokens"`
	InputTokensDetails  map[string]int `json:"input_tokens_details"`
	OutputTokens        int64          `json:"output_tokens"`
	OutputTokensDetails map[string]int `json:"output_tokens_details"`
	TotalTokens         int64          `json:"total_tokens"`
}

func unixPtr(t time.Time) *int64 { return ptr(t.Unix()) }

// viewLocked renders b as of now; call advanceLocked first.
func (e *Emulator) viewLocked(b *batch, now time.Time) batchJSON {
	status := b.statusAt(now)
	v := batchJSON{
		ID: b.id, Object: "batch", Endpoint: b.endpoint, InputFileID: b.inputFileID,
		CompletionWindow: b.window, Status: status, CreatedAt: b.created.Unix(),
		ExpiresAt: unixPtr(b.expiresAt), Metadata: b.metadata,
		Usage: batchUsage{
			InputTokens: b.usage.input, OutputTokens: b.usage.output, TotalTokens: b.usage.input + b.usage.output,
			InputTokensDetails: map[string]int{"cached_tokens": 0}, OutputTokensDetails: map[string]int{"reasoning_tokens": 0},
		},
	}
	if b.valid() && b.reached(b.validatedAt, now) {
		v.InProgressAt = unixPtr(b.validatedAt)
		v.Model = ptr(b.in.model)
		v.RequestCounts = RequestCounts{Total: int64(b.total), Completed: b.completed, Failed: b.failed}
	}
	if b.valid() && !b.stuck && b.reached(b.finalizeAt, now) {
		v.FinalizingAt = unixPtr(b.finalizeAt)
	}
	switch status {
	case StatusCompleted:
		v.CompletedAt = unixPtr(b.completeAt)
	case StatusFailed:
		v.FailedAt = unixPtr(b.validatedAt)
		v.Errors = &batchErrors{Object: "list", Data: b.in.errs}
	case StatusExpired:
		v.ExpiredAt = unixPtr(b.expiresAt)
	case StatusCancelled:
		v.CancelledAt = unixPtr(b.cancelledAt)
	}
	if !b.cancelAt.IsZero() && !now.Before(b.cancelAt) {
		v.CancellingAt = unixPtr(b.cancelAt)
	}
	if b.final {
		v.OutputFileID, v.ErrorFileID = strPtr(b.outputFileID), strPtr(b.errorFileID)
	}
	return v
}

// BatchInfo is the admin view of a batch of either API (Emulator.Batches,
// GET /_emulator/batches). For an Anthropic Message Batch, Status is its
// processing_status, Endpoint is /v1/messages, Model is its first
// request's, RequestCounts counts its requests (Total), those succeeded
// (Completed) and those errored (Failed) so far, even before it has ended,
// and there is no metadata nor file.
type BatchInfo struct {
	ID string `json:"id"`
	// Provider is the API the batch was created through: ProviderOpenAI
	// or ProviderAnthropic.
	Provider      string            `json:"provider"`
	Status        string            `json:"status"`
	Metadata      map[string]string `json:"metadata"`
	CreatedAt     time.Time         `json:"created_at"`
	RequestCounts RequestCounts     `json:"request_counts"`
	Endpoint      string            `json:"endpoint"`
	Model         string            `json:"model"`
	InputFileID   string            `json:"input_file_id"`
	OutputFileID  string            `json:"output_file_id,omitempty"`
	ErrorFileID   string            `json:"error_file_id,omitempty"`
	// TerminalAt is the exact instant (Clock time, RFC3339Nano) the batch
	// reached its terminal status; zero (omitted) while it is not terminal.
	// Batch objects carry only whole seconds, so benchmarks measuring how
	// fast a terminal status is detected read this instead.
	TerminalAt time.Time `json:"terminal_at,omitzero"`
	// Deleted tells an Anthropic Message Batch deleted through the API.
	Deleted bool `json:"deleted,omitempty"`
	// CustomIDs are an Anthropic Message Batch's custom_ids in request
	// order, the only link from such a batch to the job that made it.
	CustomIDs []string `json:"custom_ids,omitempty"`
}

// schedule is a min-heap of batches of either API by the time they turn
// terminal. An entry whose time no longer matches its batch (re-planned by
// a cancel) is stale and skipped.
type schedule []scheduled

// scheduled is an OpenAI batch b or an Anthropic Message Batch m due at at.
type scheduled struct {
	at time.Time
	b  *batch
	m  *msgBatch
}

func (s schedule) Len() int           { return len(s) }
func (s schedule) Less(i, j int) bool { return s[i].at.Before(s[j].at) }
func (s schedule) Swap(i, j int)      { s[i], s[j] = s[j], s[i] }
func (s *schedule) Push(x any)        { *s = append(*s, x.(scheduled)) }
func (s *schedule) Pop() any {
	old := *s
	x := old[len(old)-1]
	*s = old[:len(old)-1]
	return x
}

// runDueLocked finishes every batch whose terminal time has passed.
func (e *Emulator) runDueLocked(now time.Time) {
	for e.sched.Len() > 0 && !e.sched[0].at.After(now) {
		s := heap.Pop(&e.sched).(scheduled)
		switch {
		case s.b != nil && !s.b.final && s.at.Equal(s.b.terminalAt):
			e.advanceLocked(s.b, now)
		case s.m != nil && !s.m.final && s.at.Equal(s.m.terminalAt):
			e.advanceMsgLocked(s.m, now)
		}
	}
}

// nextDueLocked is the earliest scheduled time, zero if none.
func (e *Emulator) nextDueLocked() time.Time {
	if e.sched.Len() == 0 {
		return time.Time{}
	}
	return e.sched[0].at
}
