// Package presence lets each worker process announce itself: every
// worker puts a heartbeat into the batch_workers key-value bucket every
// Interval, and the entry expires three intervals after the last one, so
// the operator tools list the workers that are alive now ("workers seen").
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/stream"
)

// Bucket is the presence bucket.
const Bucket = "batch_workers"

// Interval is how often a worker renews its heartbeat; an entry lives
// 3 x Interval.
const Interval = 10 * time.Second

// Worker is one live worker process.
type Worker struct {
	Kind      string    `json:"kind"` // submitter, poller, notifier
	ID        string    `json:"id"`   // host-pid
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"started_at"`
	SeenAt    time.Time `json:"seen_at"`
}

func open(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.KeyValue, error) {
	kv, err := stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "live worker processes (heartbeats)", TTL: 3 * Interval, History: 1,
		Storage: jetstream.MemoryStorage, Replicas: max(1, replicas),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	return kv, nil
}

// Beat announces a worker of kind until ctx is done, then withdraws it.
// A failed heartbeat is logged and tried again at the next interval; it
// never stops the worker.
func Beat(ctx context.Context, js jetstream.JetStream, kind string, replicas int, log zerolog.Logger) error {
	host, _ := os.Hostname()
	w := Worker{Kind: kind, Host: host, PID: os.Getpid(), StartedAt: time.Now().UTC()}
	w.ID = fmt.Sprintf("%s-%d", strings.NewReplacer(".", "-", ":", "-").Replace(host), w.PID)
	key := kind + "." + w.ID
	var kv jetstream.KeyValue
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		err := func() error {
			octx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			if kv == nil {
				var err error
				if kv, err = open(octx, js, replicas); err != nil {
					return err
				}
			}
			w.SeenAt = time.Now().UTC()
			data, _ := json.Marshal(w)
			_, err := kv.Put(octx, key, data)
			return err
		}()
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("presence heartbeat failed")
		}
		select {
		case <-ctx.Done():
			if kv != nil {
				dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				_ = kv.Delete(dctx, key)
				cancel()
			}
			return nil
		case <-t.C:
		}
	}
}

// List returns the live workers, by kind then id.
func List(ctx context.Context, js jetstream.JetStream) ([]Worker, error) {
	kv, err := js.KeyValue(ctx, Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Bucket, err)
	}
	defer func() { _ = w.Stop() }()
	var out []Worker
	for u := range w.Updates() {
		if u == nil {
			break
		}
		var wk Worker
		if json.Unmarshal(u.Value(), &wk) == nil {
			out = append(out, wk)
		}
	}
	slices.SortFunc(out, func(a, b Worker) int {
		if c := strings.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
