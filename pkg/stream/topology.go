package stream

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Stream names.
const (
	// Requests captures batch.requests; work-queue retention: a message is
	// removed once a submitter acks it.
	Requests = "BATCH_REQUESTS"
	// Cancels captures batch.cancel.
	Cancels = "BATCH_CANCEL"
	// Events captures every public event (completed, retry, state, progress, audit).
	Events = "BATCH_EVENTS"
	// DLQ captures batch.dlq.>.
	DLQ = "BATCH_DLQ"
	// Work carries the fleet's internal hand-offs between worker types.
	Work = "BATCHFLEET_WORK"
	// Items captures batch.items (single requests); work-queue retention:
	// a message is removed once a packer has staged it.
	Items = "BATCH_ITEMS"
	// Packs stages valid items per pack group (batchfleet.pack.<group>)
	// until their pack is sealed and its input stored.
	Packs = "BATCHFLEET_PACKS"
)

// SubjectPackPrefix prefixes the staging subject of each pack group.
const SubjectPackPrefix = "batchfleet.pack."

// Internal subjects of the Work stream (not part of the public contract).
const (
	// SubjectSubmit hands retry batches to the submitters.
	SubjectSubmit = "batchfleet.submit"
	// SubjectPoll holds one message per active vendor batch: its lease.
	SubjectPoll = "batchfleet.poll"
	// SubjectFinal hands a batch seen final (or a job ended without one) to the notifiers.
	SubjectFinal = "batchfleet.final"
)

// Consumer names (durable).
const (
	ConsumerSubmitters      = "submitters"
	ConsumerRetrySubmitters = "retry-submitters"
	ConsumerPollers         = "pollers"
	ConsumerNotifiers       = "notifiers"
	ConsumerCancels         = "cancellers"
	ConsumerPackers         = "packers"
	ConsumerItemFanout      = "item-fanout"
)

// Settings tune the streams; zero values take the defaults.
type Settings struct {
	// Replicas of every stream (STREAM_REPLICAS). Defaults to 1; use 3 on a cluster.
	Replicas int
	// EventsMaxAge bounds how long events are kept for replay (EVENTS_MAX_AGE). Defaults to 7 days.
	EventsMaxAge time.Duration
	// DLQMaxAge bounds how long dead letters are kept (DLQ_MAX_AGE). Defaults to 30 days.
	DLQMaxAge time.Duration
	// DuplicateWindow is the Nats-Msg-Id de-duplication window of every
	// stream (DEDUP_WINDOW). Defaults to 10 minutes.
	DuplicateWindow time.Duration
}

// WithDefaults fills zero fields.
func (s Settings) WithDefaults() Settings {
	s.Replicas = cmp.Or(s.Replicas, 1)
	s.EventsMaxAge = cmp.Or(s.EventsMaxAge, 7*24*time.Hour)
	s.DLQMaxAge = cmp.Or(s.DLQMaxAge, 30*24*time.Hour)
	s.DuplicateWindow = cmp.Or(s.DuplicateWindow, 10*time.Minute)
	return s
}

// Config returns the configuration of the named stream.
func (s Settings) Config(name string) (jetstream.StreamConfig, error) {
	s = s.WithDefaults()
	base := jetstream.StreamConfig{
		Name:       name,
		Storage:    jetstream.FileStorage,
		Replicas:   s.Replicas,
		Duplicates: s.DuplicateWindow,
	}
	switch name {
	case Requests:
		base.Description = "batch requests from producers, removed when a submitter has taken them"
		base.Subjects = []string{contract.SubjectRequests}
		base.Retention = jetstream.WorkQueuePolicy
	case Cancels:
		base.Description = "cancellation requests"
		base.Subjects = []string{contract.SubjectCancel}
		base.Retention = jetstream.WorkQueuePolicy
	case Events:
		base.Description = "public events: completed, retry, state changes, progress, warnings, audit"
		base.Subjects = []string{contract.SubjectCompleted, contract.SubjectRetry,
			contract.SubjectStatePrefix + ">", contract.SubjectProgress, contract.SubjectAudit, contract.SubjectWarning,
			contract.SubjectItemCompleted}
		base.Retention = jetstream.LimitsPolicy
		base.MaxAge = s.EventsMaxAge
	case DLQ:
		base.Description = "dead letters: invalid requests, undeliverable webhooks"
		base.Subjects = []string{"batch.dlq.>"}
		base.Retention = jetstream.LimitsPolicy
		base.MaxAge = s.DLQMaxAge
	case Items:
		base.Description = "single requests from producers, removed when a packer has staged them"
		base.Subjects = []string{contract.SubjectItems}
		base.Retention = jetstream.WorkQueuePolicy
	case Packs:
		base.Description = "valid items staged per pack group until their pack's input is stored"
		base.Subjects = []string{SubjectPackPrefix + ">"}
		base.Retention = jetstream.LimitsPolicy
		base.MaxAge = s.EventsMaxAge
	case Work:
		base.Description = "internal hand-offs: retry submissions, poll leases, final batches"
		base.Subjects = []string{SubjectSubmit, SubjectPoll, SubjectFinal}
		base.Retention = jetstream.WorkQueuePolicy
	default:
		return jetstream.StreamConfig{}, fmt.Errorf("unknown stream %q", name)
	}
	return base, nil
}

// Ensure creates the named streams, or updates those whose configuration
// differs (see ensureStream).
func Ensure(ctx context.Context, js jetstream.StreamManager, s Settings, names ...string) error {
	for _, name := range names {
		cfg, err := s.Config(name)
		if err != nil {
			return err
		}
		if err := ensureStream(ctx, js, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", name, err)
		}
	}
	return nil
}

// EnsureConsumer creates or updates a durable pull consumer on stream.
func EnsureConsumer(ctx context.Context, js jetstream.StreamConsumerManager, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return c, nil
}

// Recreate returns a ConsumeOptions.Recreate that ensures the stream and
// the durable consumer again, as the worker did at start-up.
func Recreate(js jetstream.JetStream, s Settings, stream string, cfg jetstream.ConsumerConfig) func(context.Context) (jetstream.Consumer, error) {
	return func(ctx context.Context) (jetstream.Consumer, error) {
		if err := Ensure(ctx, js, s, stream); err != nil {
			return nil, err
		}
		return EnsureConsumer(ctx, js, stream, cfg)
	}
}

// EnsureMissing creates those of the named streams that do not exist yet,
// with s's settings, and leaves an existing stream as it is: a tool that
// does not know the fleet's settings (the operator CLI) must not reset
// them (replicas, max age) by declaring the defaults.
func EnsureMissing(ctx context.Context, js jetstream.StreamManager, s Settings, names ...string) error {
	for _, name := range names {
		_, err := js.Stream(ctx, name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			if err := Ensure(ctx, js, s, name); err != nil {
				return err
			}
		case err != nil:
			return fmt.Errorf("open stream %s: %w", name, err)
		}
	}
	return nil
}
