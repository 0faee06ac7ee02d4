package stream

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// PublishTimeout bounds one publish when the caller's context has no deadline.
const PublishTimeout = 5 * time.Second

type publishOpts struct {
	msgID  string
	header nats.Header
}

// PublishOpt modifies one publish.
type PublishOpt func(*publishOpts)

// WithMsgID sets the Nats-Msg-Id, making a republish within the stream's
// duplicate window a no-op.
func WithMsgID(id string) PublishOpt { return func(o *publishOpts) { o.msgID = id } }

// WithHeader adds a header.
func WithHeader(k, v string) PublishOpt {
	return func(o *publishOpts) {
		if o.header == nil {
			o.header = nats.Header{}
		}
		o.header.Set(k, v)
	}
}

// Publish publishes v as JSON into the stream capturing subject and waits
// for the stream's acknowledgement.
func Publish(ctx context.Context, js jetstream.Publisher, subject string, v any, opts ...PublishOpt) (*jetstream.PubAck, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", subject, err)
	}
	return PublishRaw(ctx, js, subject, data, opts...)
}

// PublishRaw publishes data as it is.
func PublishRaw(ctx context.Context, js jetstream.Publisher, subject string, data []byte, opts ...PublishOpt) (*jetstream.PubAck, error) {
	var o publishOpts
	for _, f := range opts {
		f(&o)
	}
	ctx, span := telemetry.Tracer().Start(ctx, "publish "+subject, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject),
			attribute.String("messaging.message.id", o.msgID)))
	defer span.End()
	if o.header == nil {
		o.header = nats.Header{}
	}
	telemetry.Inject(ctx, o.header)
	msg := &nats.Msg{Subject: subject, Data: data, Header: o.header}
	var popts []jetstream.PublishOpt
	if o.msgID != "" {
		popts = append(popts, jetstream.WithMsgID(o.msgID))
	}
	ctx, cancel := withTimeout(ctx, PublishTimeout)
	defer cancel()
	ack, err := js.PublishMsg(ctx, msg, popts...)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack, nil
}

// DeadLetter publishes a poison message, with its original bytes and
// headers, to a dead-letter subject with Batch-Error-Code and Batch-Error
// set. The message id is derived from the original's stream position so a
// redelivered poison message is dead-lettered once.
func DeadLetter(ctx context.Context, js jetstream.Publisher, subject string, m jetstream.Msg, e *contract.Error) error {
	h := nats.Header{}
	for k, vs := range m.Headers() {
		if k == contract.HeaderMsgID {
			h.Set("Batch-Original-Msg-Id", vs[0])
			continue
		}
		h[k] = vs
	}
	h.Set(contract.HeaderErrorCode, e.Code)
	h.Set(contract.HeaderError, e.Message)
	h.Set("Batch-Original-Subject", m.Subject())
	if md, err := m.Metadata(); err == nil {
		h.Set(contract.HeaderMsgID, fmt.Sprintf("dlq:%s:%d", md.Stream, md.Sequence.Stream))
	}
	ctx, cancel := withTimeout(ctx, PublishTimeout)
	defer cancel()
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: m.Data(), Header: h}); err != nil {
		return fmt.Errorf("dead-letter to %s: %w", subject, err)
	}
	return nil
}

func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
