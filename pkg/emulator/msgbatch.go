package emulator

import (
	"math/rand/v2"
	"strings"
	"time"
)

// Processing statuses of an Anthropic Message Batch. "in_progress" is
// spelled as OpenAI's [StatusInProgress].
const (
	StatusCanceling = "canceling"
	StatusEnded     = "ended"
)

// msgRequest is one request of a Message Batch, reduced to what its
// execution reads: its size does not depend on the size of its params.
type msgRequest struct {
	customID, model         string
	userID                  string // params.metadata.user_id, if any
	promptTokens, maxTokens int64
	executed                bool // its result line is written
}

// triggers are the words that choose a request's outcome.
var triggers = []string{TriggerFailOnce, TriggerFailAlways, TriggerFail429, TriggerFail400, TriggerNeverFinish}

// trigger is the string whose trigger words choose r's outcome: its
// params.metadata.user_id when that holds one, else its custom_id. The
// user_id lets a test choose outcomes through a client that rewrites
// custom_ids, as the fleet does; "fail-once" fails once per such string.
func (r *msgRequest) trigger() string {
	for _, t := range triggers {
		if strings.Contains(r.userID, t) {
			return r.userID
		}
	}
	return r.customID
}

// msgBatch is one emulated Anthropic Message Batch. Like an OpenAI batch
// its lifecycle is planned at creation from the same Config durations and
// evaluated lazily on read: requests execute evenly spread over
// [created+ValidatingFor, +InProgressFor], and the batch ends FinalizingFor
// later. Anthropic has no validating or finalizing status: both are spent
// in_progress. All fields are guarded by Emulator.mu.
type msgBatch struct {
	ord  int64 // creation order across both APIs
	seq  int   // index in Emulator.msgBatches
	id   string
	reqs []msgRequest // in request order

	created, expiresAt   time.Time
	startAt, runEnd      time.Time // requests execute within (startAt, runEnd]
	endAt                time.Time // natural end: runEnd+FinalizingFor
	stuck                bool      // some request never executes: only expiry or cancel end it
	cancelAt, terminalAt time.Time
	runs                 time.Duration
	sched                []*msgRequest // requests that will execute, in execution order
	next                 int           // sched[:next] have executed
	final, deleted       bool
	succeeded, errored   int64
	canceled, expired    int64
	results              content // JSONL result lines, in execution order
}

// plan fixes the batch's timeline from its creation time and the random
// order its requests execute in, which is the order of its results.
func (m *msgBatch) plan(cfg Config, rnd *rand.Rand) {
	m.startAt = m.created.Add(cfg.ValidatingFor)
	m.expiresAt = m.created.Add(cfg.ExpireAfter)
	m.runs = cfg.InProgressFor
	m.sched = make([]*msgRequest, 0, len(m.reqs))
	expireMe := false
	for _, i := range rnd.Perm(len(m.reqs)) {
		r := &m.reqs[i]
		expireMe = expireMe || r.model == ModelExpireMe
		if strings.Contains(r.trigger(), TriggerNeverFinish) {
			m.stuck = true
			continue
		}
		m.sched = append(m.sched, r)
	}
	if expireMe { // one request of model expire-me holds the whole batch
		m.stuck, m.sched = true, m.sched[:0]
	}
	if !m.stuck {
		m.runEnd = m.startAt.Add(cfg.InProgressFor)
		m.endAt = m.runEnd.Add(cfg.FinalizingFor)
	}
	m.terminalAt = m.naturalEnd()
}

// expires reports whether the 24h window ends before every request has
// executed (ties go to expiry, as for OpenAI batches).
func (m *msgBatch) expires() bool {
	return m.cancelAt.IsZero() && (m.stuck || !m.expiresAt.After(m.runEnd))
}

// naturalEnd is when an uncancelled batch ends.
func (m *msgBatch) naturalEnd() time.Time {
	if m.expires() {
		return m.expiresAt
	}
	return m.endAt
}

// halt is when execution stops early (cancel or expiry), zero if never.
func (m *msgBatch) halt() time.Time {
	switch {
	case !m.cancelAt.IsZero():
		return m.cancelAt
	case m.expires():
		return m.expiresAt
	}
	return time.Time{}
}

// cancel starts cancelling at now: no request executes after now, and the
// batch ends delay later.
func (m *msgBatch) cancel(now time.Time, delay time.Duration) {
	m.cancelAt, m.terminalAt = now, now.Add(delay)
}

func (m *msgBatch) statusAt(t time.Time) string {
	switch {
	case !t.Before(m.terminalAt):
		return StatusEnded
	case !m.cancelAt.IsZero() && !t.Before(m.cancelAt):
		return StatusCanceling
	}
	return StatusInProgress
}

// doneAt is when sched[i] executes.
func (m *msgBatch) doneAt(i int) time.Time {
	n := float64(len(m.sched))
	return m.startAt.Add(time.Duration(float64(m.runs) * float64(i+1) / n))
}

// advanceMsgLocked brings m up to now: executes the requests due by now
// (or by the halt) and finishes m once it has ended.
func (e *Emulator) advanceMsgLocked(m *msgBatch, now time.Time) {
	if m.final {
		return
	}
	cutoff := now
	if h := m.halt(); !h.IsZero() && h.Before(cutoff) {
		cutoff = h
	}
	for m.next < len(m.sched) {
		at := m.doneAt(m.next)
		if at.After(cutoff) {
			break
		}
		e.executeMsgLocked(m, m.sched[m.next], at)
		m.next++
	}
	if !now.Before(m.terminalAt) {
		e.finishMsgLocked(m)
	}
}

// executeMsgLocked runs r, with the outcome its custom_id chooses, and
// appends its result line.
func (e *Emulator) executeMsgLocked(m *msgBatch, r *msgRequest, at time.Time) {
	res := msgResult{Type: "succeeded"}
	if status := e.outcomeLocked(r.trigger()); status == 200 {
		res.Message = e.message(r)
		m.succeeded++
	} else {
		res.Type, res.Error = "errored", &msgErrorBody{Type: "error", Error: requestError(status), RequestID: newRequestID()}
		m.errored++
	}
	writeLine(&m.results, msgResultLine{CustomID: r.customID, Result: res})
	r.executed = true
}

// finishMsgLocked ends m: every request that did not execute gets a
// canceled result (after a cancel) or an expired one, in random order.
func (e *Emulator) finishMsgLocked(m *msgBatch) {
	m.final = true
	kind := "expired"
	if !m.cancelAt.IsZero() {
		kind = "canceled"
	}
	var unrun []*msgRequest
	for i := range m.reqs {
		if !m.reqs[i].executed {
			unrun = append(unrun, &m.reqs[i])
		}
	}
	e.rnd.Shuffle(len(unrun), func(i, j int) { unrun[i], unrun[j] = unrun[j], unrun[i] })
	for _, r := range unrun {
		writeLine(&m.results, msgResultLine{CustomID: r.customID, Result: msgResult{Type: kind}})
	}
	if kind == "canceled" {
		m.canceled = int64(len(unrun))
	} else {
		m.expired = int64(len(unrun))
	}
	m.results.trim()
	m.sched = nil
	e.active--
	e.log.Debug().Str("batch_id", m.id).Str("status", StatusEnded).Msg("message batch ended")
}

// msgResultLine is one line of a Message Batch's results.
type msgResultLine struct {
	CustomID string    `json:"custom_id"`
	Result   msgResult `json:"result"`
}

// msgResult is a result of type succeeded (with Message), errored (with
// Error), canceled or expired.
type msgResult struct {
	Type    string        `json:"type"`
	Message *messageJSON  `json:"message,omitempty"`
	Error   *msgErrorBody `json:"error,omitempty"`
}

// msgBatchJSON is Anthropic's MessageBatch object; unset times are null.
type msgBatchJSON struct {
	ID                string    `json:"id"`
	Type              string    `json:"type"`
	ProcessingStatus  string    `json:"processing_status"`
	RequestCounts     msgCounts `json:"request_counts"`
	EndedAt           *string   `json:"ended_at"`
	CreatedAt         string    `json:"created_at"`
	ExpiresAt         string    `json:"expires_at"`
	ArchivedAt        *string   `json:"archived_at"`
	CancelInitiatedAt *string   `json:"cancel_initiated_at"`
	ResultsURL        *string   `json:"results_url"`
}

// msgCounts are a Message Batch's request_counts.
type msgCounts struct {
	Processing int64 `json:"processing"`
	Succeeded  int64 `json:"succeeded"`
	Errored    int64 `json:"errored"`
	Canceled   int64 `json:"canceled"`
	Expired    int64 `json:"expired"`
}

// rfc3339 formats t as Anthropic does: UTC with microseconds.
func rfc3339(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00") }

// viewLocked renders m as of now for a client whose API root is base;
// call advanceMsgLocked first. As Anthropic documents, every request counts
// as processing until the whole batch has ended, so the counts say nothing
// of progress before then.
func (m *msgBatch) viewLocked(now time.Time, base string) msgBatchJSON {
	status := m.statusAt(now)
	v := msgBatchJSON{
		ID: m.id, Type: "message_batch", ProcessingStatus: status,
		CreatedAt: rfc3339(m.created), ExpiresAt: rfc3339(m.expiresAt),
	}
	if !m.cancelAt.IsZero() {
		v.CancelInitiatedAt = ptr(rfc3339(m.cancelAt))
	}
	if status != StatusEnded {
		v.RequestCounts.Processing = int64(len(m.reqs))
		return v
	}
	v.EndedAt = ptr(rfc3339(m.terminalAt))
	v.RequestCounts = msgCounts{Succeeded: m.succeeded, Errored: m.errored, Canceled: m.canceled, Expired: m.expired}
	v.ResultsURL = ptr(base + "/v1/messages/batches/" + m.id + "/results")
	return v
}

// infoLocked is the admin view of m; call advanceMsgLocked first. Unlike
// the API, its counts show the requests executed so far.
func (m *msgBatch) infoLocked(now time.Time) BatchInfo {
	info := BatchInfo{
		ID: m.id, Provider: ProviderAnthropic, Status: m.statusAt(now), CreatedAt: m.created,
		RequestCounts: RequestCounts{Total: int64(len(m.reqs)), Completed: m.succeeded, Failed: m.errored},
		Endpoint:      "/v1/messages", Model: m.reqs[0].model, Deleted: m.deleted,
		CustomIDs: make([]string, len(m.reqs)),
	}
	for i := range m.reqs {
		info.CustomIDs[i] = m.reqs[i].customID
	}
	if m.final {
		info.TerminalAt = m.terminalAt
	}
	return info
}
