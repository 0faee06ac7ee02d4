package emulator

import (
	"cmp"
	"net/http"
	"slices"
	"strconv"
	"time"
)

// ProviderOpenAI and ProviderAnthropic name the API a batch was created
// through ([BatchInfo.Provider]).
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
)

// anthropicRoutes registers Anthropic's Message Batches API. Other paths
// under /v1/messages, the synchronous Messages API among them, are 404
// not_found_error.
func (e *Emulator) anthropicRoutes() {
	e.anthropic("POST /v1/messages/batches", OpAnthropicCreate, e.handleCreateMsgBatch)
	e.anthropic("GET /v1/messages/batches", OpAnthropicList, e.handleListMsgBatches)
	e.anthropic("GET /v1/messages/batches/{id}", OpAnthropicGet, e.handleGetMsgBatch)
	e.anthropic("POST /v1/messages/batches/{id}/cancel", OpAnthropicCancel, e.handleCancelMsgBatch)
	e.anthropic("DELETE /v1/messages/batches/{id}", OpAnthropicDelete, e.handleDeleteMsgBatch)
	e.anthropic("GET /v1/messages/batches/{id}/results", OpAnthropicResults, e.handleMsgBatchResults)
	notFound := func(c *call) {
		c.failMsg(newMsgError(http.StatusNotFound, typeMsgNotFound, "Not found: %s %s", c.r.Method, c.r.URL.Path))
	}
	e.anthropic("/v1/messages", OpOther, notFound)
	e.anthropic("/v1/messages/", OpOther, notFound)
}

// baseURL is the root of the API as the client reached it, for results_url.
func baseURL(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

func (e *Emulator) handleCreateMsgBatch(c *call) {
	var data content
	tooLarge, err := c.r.ContentLength > e.cfg.MaxMessageBatchBytes, error(nil)
	if !tooLarge { // a body of unknown length is read up to the limit
		data, tooLarge, err = readContent(c.r.Body, c.r.ContentLength, e.cfg.MaxMessageBatchBytes)
	}
	switch {
	case tooLarge:
		c.failMsg(newMsgError(http.StatusRequestEntityTooLarge, typeMsgTooLarge,
			"Request exceeds the maximum allowed number of bytes (%d).", e.cfg.MaxMessageBatchBytes))
		return
	case err != nil:
		c.failMsg(msgInvalid("Read request body: %v", err))
		return
	}
	reqs, aerr := parseMessageBatch(data.bytes())
	if aerr != nil {
		c.failMsg(aerr)
		return
	}

	e.mu.Lock()
	now := e.clock.Now()
	e.runDueLocked(now)
	m := &msgBatch{ord: e.nextOrd(), seq: len(e.msgBatches), id: newMsgBatchID(), created: now, reqs: reqs}
	m.plan(e.cfg, e.rnd)
	e.msgBatches = append(e.msgBatches, m)
	e.msgByID[m.id] = m
	e.created++
	e.active++
	e.maxActive = max(e.maxActive, e.active)
	e.scheduleMsg(m)
	view := m.viewLocked(now, baseURL(c.r))
	e.mu.Unlock()
	c.batchID = m.id
	e.log.Debug().Str("batch_id", m.id).Int("requests", len(reqs)).Msg("message batch created")

	if e.dropAfterCreate() {
		e.dropConn(c)
		return
	}
	c.json(http.StatusOK, view)
}

// lookupMsgLocked returns the Message Batch c names, brought up to now,
// or answers 404 and returns nil.
func (e *Emulator) lookupMsgLocked(c *call, now time.Time) *msgBatch {
	e.runDueLocked(now)
	m, ok := e.msgByID[c.batchID]
	if !ok {
		c.failMsg(errNoMsgBatch(c.batchID))
		return nil
	}
	e.advanceMsgLocked(m, now)
	return m
}

func (e *Emulator) handleGetMsgBatch(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	if m := e.lookupMsgLocked(c, now); m != nil {
		c.json(http.StatusOK, m.viewLocked(now, baseURL(c.r)))
	}
}

// handleCancelMsgBatch moves an in_progress batch to canceling; it ends
// CancelDelay later, its unexecuted requests canceled. Cancelling again is
// a no-op; an ended batch cannot be canceled.
func (e *Emulator) handleCancelMsgBatch(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	m := e.lookupMsgLocked(c, now)
	if m == nil {
		return
	}
	switch m.statusAt(now) {
	case StatusInProgress:
		m.cancel(now, e.cfg.CancelDelay)
		e.scheduleMsg(m)
	case StatusEnded:
		c.failMsg(msgInvalid("Message Batch %s has already ended and cannot be canceled.", m.id))
		return
	}
	c.json(http.StatusOK, m.viewLocked(now, baseURL(c.r)))
}

// handleDeleteMsgBatch deletes an ended batch and its results; a batch
// still processing must be canceled first.
func (e *Emulator) handleDeleteMsgBatch(c *call) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	m := e.lookupMsgLocked(c, now)
	if m == nil {
		return
	}
	if st := m.statusAt(now); st != StatusEnded {
		c.failMsg(msgInvalid("Message Batch %s cannot be deleted while its processing_status is %s: cancel it and wait until it has ended.", m.id, st))
		return
	}
	m.deleted, m.results = true, content{}
	delete(e.msgByID, m.id)
	c.json(http.StatusOK, map[string]string{"id": m.id, "type": "message_batch_deleted"})
}

// handleMsgBatchResults streams an ended batch's results as JSONL, one line
// per request in random order. Before the batch has ended there are none:
// 400 invalid_request_error.
func (e *Emulator) handleMsgBatchResults(c *call) {
	e.mu.Lock()
	now := e.clock.Now()
	m := e.lookupMsgLocked(c, now)
	if m == nil {
		e.mu.Unlock()
		return
	}
	if st := m.statusAt(now); st != StatusEnded {
		e.mu.Unlock()
		c.failMsg(msgInvalid("Message Batch %s has no results yet: its processing_status is %s, results are available once it is ended.", m.id, st))
		return
	}
	data := m.results // complete once ended: never appended to again
	e.mu.Unlock()
	c.status = http.StatusOK
	c.w.Header().Set("Content-Type", "application/binary")
	c.w.Header().Set("Content-Length", strconv.FormatInt(data.size, 10))
	c.w.WriteHeader(http.StatusOK)
	_ = data.writeTo(c.w)
}

// handleListMsgBatches lists batches newest first, as Anthropic's cursor
// pages: after_id pages towards older batches, before_id towards newer
// ones, limit 1..1000 (default 20). Deleted batches are not listed; an
// unknown cursor lists nothing.
func (e *Emulator) handleListMsgBatches(c *call) {
	q := c.r.URL.Query()
	limit, err := strconv.Atoi(cmp.Or(q.Get("limit"), "20"))
	if err != nil || limit < 1 || limit > 1000 {
		c.failMsg(msgInvalid("limit: Input should be an integer between 1 and 1000, got %q", q.Get("limit")))
		return
	}
	after, before := q.Get("after_id"), q.Get("before_id")
	if after != "" && before != "" {
		c.failMsg(msgInvalid("Only one of before_id and after_id may be given."))
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.clock.Now()
	e.runDueLocked(now)
	page, hasMore := e.msgPageLocked(after, before, limit)
	data := make([]msgBatchJSON, len(page))
	for i, m := range page {
		e.advanceMsgLocked(m, now)
		data[i] = m.viewLocked(now, baseURL(c.r))
	}
	out := map[string]any{"data": data, "has_more": hasMore, "first_id": nil, "last_id": nil}
	if len(data) > 0 {
		out["first_id"], out["last_id"] = data[0].ID, data[len(data)-1].ID
	}
	c.json(http.StatusOK, out)
}

// msgPageLocked picks up to limit undeleted batches, newest first: the
// newest ones, the ones just older than after, or the ones just newer than
// before. hasMore tells whether more lie beyond the page in its direction.
func (e *Emulator) msgPageLocked(after, before string, limit int) (page []*msgBatch, hasMore bool) {
	start, step := len(e.msgBatches)-1, -1
	if cursor := cmp.Or(after, before); cursor != "" {
		m := e.cursorLocked(cursor)
		if m == nil {
			return nil, false
		}
		if start = m.seq - 1; before != "" {
			start, step = m.seq+1, 1
		}
	}
	i := start
	for ; i >= 0 && i < len(e.msgBatches) && len(page) < limit; i += step {
		if m := e.msgBatches[i]; !m.deleted {
			page = append(page, m)
		}
	}
	for ; i >= 0 && i < len(e.msgBatches) && !hasMore; i += step {
		hasMore = !e.msgBatches[i].deleted
	}
	if step > 0 {
		slices.Reverse(page)
	}
	return page, hasMore
}

// cursorLocked finds the batch a list cursor names, deleted or not.
func (e *Emulator) cursorLocked(id string) *msgBatch {
	if m, ok := e.msgByID[id]; ok {
		return m
	}
	for _, m := range e.msgBatches {
		if m.id == id {
			return m
		}
	}
	return nil
}
