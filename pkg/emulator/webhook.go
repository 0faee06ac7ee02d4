package emulator

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"sync"
)

// webhookWorkers is the number of concurrent webhook deliveries.
const webhookWorkers = 2

// webhookEvent is OpenAI's batch webhook event.
type webhookEvent struct {
	ID        string           `json:"id"`
	Object    string           `json:"object"`
	CreatedAt int64            `json:"created_at"`
	Type      string           `json:"type"`
	Data      webhookEventData `json:"data"`
}

type webhookEventData struct {
	ID string `json:"id"`
}

// webhookQueue is an unbounded FIFO of events: finishing a batch must never
// wait for a slow receiver.
type webhookQueue struct {
	mu     sync.Mutex
	cond   *sync.Cond
	items  []webhookEvent
	closed bool
}

func newWebhookQueue() *webhookQueue {
	q := &webhookQueue{}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func (q *webhookQueue) push(ev webhookEvent) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.items = append(q.items, ev)
	q.cond.Signal()
}

// pop waits for an event; false once the queue is closed.
func (q *webhookQueue) pop() (webhookEvent, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.items) == 0 && !q.closed {
		q.cond.Wait()
	}
	if q.closed {
		return webhookEvent{}, false
	}
	ev := q.items[0]
	q.items[0] = webhookEvent{}
	q.items = q.items[1:]
	return ev, true
}

func (q *webhookQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.cond.Broadcast()
}

func (e *Emulator) deliverWebhooks(key []byte) {
	defer e.wg.Done()
	for {
		ev, ok := e.hooks.pop()
		if !ok {
			return
		}
		e.deliver(key, ev)
	}
}

// deliver POSTs ev signed per Standard Webhooks, retrying non-2xx answers
// with doubling backoff up to WebhookAttempts times. Every attempt keeps the
// webhook-id (for de-duplication) and is signed with a fresh timestamp.
func (e *Emulator) deliver(key []byte, ev webhookEvent) {
	body := mustJSON(ev)
	whID := newWebhookID()
	log := e.log.With().Str("batch_id", ev.Data.ID).Str("type", ev.Type).Logger()
	backoff := e.cfg.WebhookBackoff
	for attempt := 1; attempt <= e.cfg.WebhookAttempts; attempt++ {
		status, err := e.post(key, whID, body)
		if err == nil && status/100 == 2 {
			log.Debug().Int("attempt", attempt).Msg("webhook delivered")
			return
		}
		if e.ctx.Err() != nil {
			return
		}
		log.Debug().Err(err).Int("status", status).Int("attempt", attempt).Msg("webhook attempt failed")
		if attempt < e.cfg.WebhookAttempts && !sleepCtx(e.ctx, backoff) {
			return
		}
		backoff *= 2
	}
	log.Warn().Int("attempts", e.cfg.WebhookAttempts).Msg("webhook dropped")
}

func (e *Emulator) post(key []byte, whID string, body []byte) (int, error) {
	req, err := http.NewRequestWithContext(e.ctx, http.MethodPost, e.cfg.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)")
	req.Header.Set("webhook-id", whID)
	req.Header.Set("webhook-timestamp", ts)
	req.Header.Set("webhook-signature", "v1,"+signWebhook(key, whID, ts, body))
	resp, err := e.cfg.WebhookClient.Do(req)
	if err != nil {
		return 0, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// signWebhook is base64(HMAC-SHA256(key, "id.timestamp.body")).
func signWebhook(key []byte, id, ts string, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id + "." + ts + "."))
	m.Write(body)
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}
