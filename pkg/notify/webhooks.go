package notify

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/backoff"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/webhook"
)

// WebhookConfig configures outbound webhooks.
type WebhookConfig struct {
	// URLs is WEBHOOK_URLS.
	URLs []string
	// Secret is WEBHOOK_SECRET ("whsec_<base64>" or raw).
	Secret string `json:"-"`
	// MaxAttempts is WEBHOOK_MAX_ATTEMPTS before dead-lettering. Defaults to 8.
	MaxAttempts int
	// RetryInitial is WEBHOOK_RETRY_INITIAL, doubled per attempt (capped at 10m). Defaults to 2s.
	RetryInitial time.Duration
	// Timeout is WEBHOOK_TIMEOUT. Defaults to 10s.
	Timeout time.Duration
	// Concurrency is deliveries in flight per URL. Defaults to 4.
	Concurrency int
}

// WithDefaults fills zero fields.
func (c WebhookConfig) WithDefaults() WebhookConfig {
	c.MaxAttempts = cmp.Or(c.MaxAttempts, 8)
	c.RetryInitial = cmp.Or(c.RetryInitial, 2*time.Second)
	c.Timeout = cmp.Or(c.Timeout, 10*time.Second)
	c.Concurrency = cmp.Or(c.Concurrency, 4)
	return c
}

// WebhookConsumer names the durable consumer that delivers to url: one per
// URL, so a slow or dead subscriber only ever delays itself.
func WebhookConsumer(url string) string {
	h := sha256.Sum256([]byte(url))
	return "webhook-" + hex.EncodeToString(h[:8])
}

// Headers of dead-lettered webhook deliveries.
const (
	HeaderWebhookURL = "Batch-Webhook-Url"
	HeaderEventType  = "Batch-Event-Type"
	HeaderEventTime  = "Batch-Event-Time"
)

func (n *Notifier) webhookConsumerConfig(url string) jetstream.ConsumerConfig {
	w := n.cfg.Webhooks
	return jetstream.ConsumerConfig{
		Durable:        WebhookConsumer(url),
		Description:    "webhook deliveries to " + url,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        w.Timeout + 5*time.Second,
		MaxDeliver:     -1, // the handler dead-letters after WEBHOOK_MAX_ATTEMPTS
		MaxAckPending:  1000,
		DeliverPolicy:  jetstream.DeliverNewPolicy,
		FilterSubjects: []string{contract.SubjectCompleted, contract.SubjectRetry},
	}
}

// runWebhook delivers every batch.completed and batch.retry event to url.
func (n *Notifier) runWebhook(ctx context.Context, url string) error {
	secret, err := webhook.ParseSecret(n.cfg.Webhooks.Secret)
	if err != nil {
		return fmt.Errorf("WEBHOOK_SECRET: %w", err)
	}
	c, err := stream.EnsureConsumer(ctx, n.d.JS, stream.Events, n.webhookConsumerConfig(url))
	if err != nil {
		return err
	}
	sender := &webhook.Sender{Client: &http.Client{}, Secret: secret, Timeout: n.cfg.Webhooks.Timeout}
	log := n.log.With().Str("webhook_url", url).Logger()
	log.Info().Msg("webhook deliveries running")
	opt := stream.ConsumeOptions{Concurrency: n.cfg.Webhooks.Concurrency, StopTimeout: n.cfg.StopTimeout, Logger: log,
		Recreate: stream.Recreate(n.d.JS, n.cfg.Streams, stream.Events, n.webhookConsumerConfig(url))}
	return stream.Consume(ctx, c, opt, func(ctx context.Context, m jetstream.Msg) {
		n.deliver(ctx, sender, url, m)
	})
}

// Envelope renders an event as the webhook body.
func Envelope(subject string, data []byte, at time.Time) ([]byte, error) {
	return json.Marshal(webhook.Envelope{Type: subject, Timestamp: at.UTC(), Data: data})
}

func (n *Notifier) deliver(ctx context.Context, sender *webhook.Sender, url string, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		_ = m.Term()
		return
	}
	id := m.Headers().Get(contract.HeaderMsgID)
	if id == "" {
		id = fmt.Sprintf("%s:%d", md.Stream, md.Sequence.Stream)
	}
	body, err := Envelope(m.Subject(), m.Data(), md.Timestamp)
	if err != nil {
		_ = m.Term()
		return
	}
	log := n.log.With().Str("webhook_url", url).Str("webhook_id", id).Logger()
	err = sender.Send(ctx, url, id, body)
	if err == nil {
		_ = m.Ack()
		n.d.Metrics.WebhookAttempt("ok")
		log.Debug().Msg("webhook delivered")
		return
	}
	attempt := int(md.NumDelivered)
	if attempt >= n.cfg.Webhooks.MaxAttempts {
		h := nats.Header{}
		h.Set(contract.HeaderMsgID, "dlq:"+WebhookConsumer(url)+":"+id)
		h.Set(HeaderWebhookURL, url)
		h.Set(HeaderEventType, m.Subject())
		h.Set("Batch-Original-Msg-Id", id)
		h.Set(HeaderEventTime, md.Timestamp.UTC().Format(time.RFC3339Nano))
		h.Set(contract.HeaderErrorCode, "webhook_undeliverable")
		h.Set(contract.HeaderError, fmt.Sprintf("after %d attempts: %v", attempt, err))
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stream.PublishTimeout)
		defer cancel()
		if _, perr := n.d.JS.PublishMsg(pctx, &nats.Msg{Subject: contract.SubjectDLQWebhooks, Data: m.Data(), Header: h}); perr != nil {
			log.Warn().Err(errors.Join(err, perr)).Msg("dead-letter webhook, will retry")
			_ = m.NakWithDelay(n.cfg.Webhooks.RetryInitial)
			return
		}
		log.Error().Err(err).Int("attempts", attempt).Msg("webhook undeliverable: dead-lettered")
		n.d.Metrics.WebhookAttempt("dead_letter")
		_ = m.Ack()
		return
	}
	wait := backoff.Policy{Initial: n.cfg.Webhooks.RetryInitial, Max: 10 * time.Minute, Jitter: backoff.NoJitter}.Next(attempt-1, nil)
	var de *webhook.DeliveryError
	if errors.As(err, &de) && de.RetryAfter > wait {
		wait = min(de.RetryAfter, 10*time.Minute)
	}
	log.Warn().Err(err).Int("attempt", attempt).Dur("retry_in", wait).Msg("webhook delivery failed, will retry")
	n.d.Metrics.WebhookAttempt("retry")
	_ = m.NakWithDelay(wait)
}
