package ops

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/notify"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/webhook"
)

// DeadLetter is one message of the BATCH_DLQ stream.
type DeadLetter struct {
	Seq     uint64              `json:"seq"`
	Subject string              `json:"subject"`
	Time    time.Time           `json:"time"`
	Headers map[string][]string `json:"headers"`
	Data    string              `json:"data"`
}

// ListDLQ returns the dead letters on subject (e.g. batch.dlq.webhooks;
// "batch.dlq.>" for all), oldest first.
func ListDLQ(ctx context.Context, js jetstream.JetStream, subject string) ([]DeadLetter, error) {
	s, err := js.Stream(ctx, stream.DLQ)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", stream.DLQ, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	c, err := js.OrderedConsumer(ctx, stream.DLQ, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for {
		// Fetch what is there now; stop at the stream's last sequence.
		batch, err := c.FetchNoWait(100)

		if err != nil {
			return out, err
		}
		n, last := 0, false
		// Drain the whole batch (its fetch goroutine ends with it).
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			dl := DeadLetter{Subject: m.Subject(), Headers: m.Headers(), Data: string(m.Data())}
			if md != nil {
				dl.Seq, dl.Time = md.Sequence.Stream, md.Timestamp
				last = last || md.NumPending == 0
			}
			if !last || md.NumPending == 0 {
				out = append(out, dl)
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return out, err
		}
		if n == 0 || last {
			return out, nil
		}
	}
}

// ReplayResult says what a replay did with each dead letter.
type ReplayResult struct {
	Seq   uint64 `json:"seq"`
	URL   string `json:"url"`
	ID    string `json:"webhook_id"`
	Error string `json:"error,omitempty"`
}

// ReplayWebhooks delivers every dead-lettered webhook again, to the URL it
// was meant for (or only those for url, when given), signed with secret
// and with its original webhook-id, so receivers de-duplicate it. A letter
// delivered successfully is removed from the DLQ; one that fails stays.
func ReplayWebhooks(ctx context.Context, js jetstream.JetStream, secret, url string) ([]ReplayResult, error) {
	key, err := webhook.ParseSecret(secret)
	if err != nil {
		return nil, fmt.Errorf("WEBHOOK_SECRET: %w", err)
	}
	letters, err := ListDLQ(ctx, js, contract.SubjectDLQWebhooks)
	if err != nil {
		return nil, err
	}
	s, err := js.Stream(ctx, stream.DLQ)
	if err != nil {
		return nil, err
	}
	sender := &webhook.Sender{Client: &http.Client{}, Secret: key}
	var out []ReplayResult
	for _, dl := range letters {
		h := http.Header(dl.Headers)
		target := h.Get(notify.HeaderWebhookURL)
		if url != "" && target != url {
			continue
		}
		id := h.Get("Batch-Original-Msg-Id")
		at, _ := time.Parse(time.RFC3339Nano, h.Get(notify.HeaderEventTime))
		if at.IsZero() {
			at = dl.Time
		}
		body, err := notify.Envelope(h.Get(notify.HeaderEventType), []byte(dl.Data), at)
		r := ReplayResult{Seq: dl.Seq, URL: target, ID: id}
		if err == nil {
			err = sender.Send(ctx, target, id, body)
		}
		if err == nil {
			err = s.DeleteMsg(ctx, dl.Seq)
		}
		if err != nil {
			r.Error = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}
