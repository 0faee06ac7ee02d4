package stream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Every worker declares the streams and buckets it uses when it starts.
// A declaration that matches what the server holds is not sent as an
// update: an update rewrites the stream's store configuration, which the
// server does without excluding a consumer being created on the same
// stream at that moment (a race nats-server's own race detector reports,
// e.g. a peer's KV watch or pull consumer starting while this worker
// starts). Only a real change (a new release, a changed setting) updates.

// ensureStream creates cfg's stream, or updates it when same reports its
// current configuration differs.
func ensureStream(ctx context.Context, js jetstream.StreamManager, cfg jetstream.StreamConfig) error {
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		_, err = js.CreateOrUpdateStream(ctx, cfg)
		return err
	case err != nil:
		return err
	}
	if sameStream(s.CachedInfo().Config, cfg) {
		return nil
	}
	_, err = js.CreateOrUpdateStream(ctx, cfg)
	return err
}

// sameStream compares the fields the fleet sets.
func sameStream(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.MaxAge == want.MaxAge && have.Storage == want.Storage &&
		have.Replicas == want.Replicas && (want.Duplicates == 0 || have.Duplicates == want.Duplicates)
}

// sameBucket compares a bucket's backing stream with the settings both
// kinds of bucket declare.
func sameBucket(have jetstream.StreamConfig, description string, ttl time.Duration, storage jetstream.StorageType, replicas int) bool {
	return have.Description == description && have.MaxAge == ttl && have.Storage == storage && have.Replicas == max(replicas, 1)
}

// kvManager opens and declares key-value buckets.
type kvManager interface {
	KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error)
	CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error)
}

// EnsureKeyValue opens the bucket cfg declares: it creates it when it is
// missing and updates it only when its description, TTL, history, storage
// or replicas differ.
func EnsureKeyValue(ctx context.Context, js kvManager, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil {
		st, serr := kv.Status(ctx)
		if serr != nil {
			return nil, fmt.Errorf("status of bucket %s: %w", cfg.Bucket, serr)
		}
		if s, ok := st.(*jetstream.KeyValueBucketStatus); ok {
			have := s.StreamInfo().Config
			if sameBucket(have, cfg.Description, cfg.TTL, cfg.Storage, cfg.Replicas) && have.MaxMsgsPerSubject == int64(max(cfg.History, 1)) {
				return kv, nil
			}
		}
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateKeyValue(ctx, cfg)
}

// objManager opens and declares object stores.
type objManager interface {
	ObjectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error)
	CreateOrUpdateObjectStore(ctx context.Context, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error)
}

// EnsureObjectStore is EnsureKeyValue for an object store (description,
// TTL, storage, replicas).
func EnsureObjectStore(ctx context.Context, js objManager, cfg jetstream.ObjectStoreConfig) (jetstream.ObjectStore, error) {
	os, err := js.ObjectStore(ctx, cfg.Bucket)
	if err == nil {
		st, serr := os.Status(ctx)
		if serr != nil {
			return nil, fmt.Errorf("status of object store %s: %w", cfg.Bucket, serr)
		}
		if s, ok := st.(*jetstream.ObjectBucketStatus); ok {
			if sameBucket(s.StreamInfo().Config, cfg.Description, cfg.TTL, cfg.Storage, cfg.Replicas) {
				return os, nil
			}
		}
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateObjectStore(ctx, cfg)
}
