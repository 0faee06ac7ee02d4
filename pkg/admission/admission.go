// Package admission is the fleet-wide admission control of the seed's
// BatchJobQueue (MAX_CONCURRENT), done for a distributed fleet: a cap on
// vendor batches active at once across every submitter (MAX_ACTIVE_BATCHES)
// and a per-model budget of enqueued tokens (ENQUEUED_TOKEN_LIMITS).
//
// The state is one JetStream KV entry changed only by compare-and-set, so
// it is exact under any number of submitters and notifiers and survives
// their crashes and a Redis loss. A slot is taken before a create and
// released when the fleet has seen the batch final. Over the cap, requests
// wait in the stream (nak with a delay) and are never rejected.
package admission

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// Bucket is the KV bucket of the admission state.
const Bucket = "batch_admission"

const stateKey = "active"

// Slot is one admitted vendor batch.
type Slot struct {
	Model  string    `json:"model,omitempty"`
	Tokens int64     `json:"tokens,omitempty"`
	At     time.Time `json:"at"`
}

// State is the admission state: every active batch by vendor key.
type State struct {
	Active map[string]Slot `json:"active"`
}

// Tokens sums the enqueued tokens of model.
func (s State) Tokens(model string) int64 {
	var n int64
	for _, sl := range s.Active {
		if sl.Model == model {
			n += sl.Tokens
		}
	}
	return n
}

// Limits are the caps; zero means none.
type Limits struct {
	// MaxActive is MAX_ACTIVE_BATCHES.
	MaxActive int
	// TokensPerModel is ENQUEUED_TOKEN_LIMITS ("model=tokens,..."); "*" applies to every other model.
	TokensPerModel map[string]int64
	// Retry is how long a refused request waits before asking again. Defaults to 2s.
	Retry time.Duration
}

// Controller admits and releases vendor batches.
type Controller struct {
	kv  jetstream.KeyValue
	lim Limits
	now func() time.Time
}

// Open creates or opens the bucket.
func Open(ctx context.Context, js jetstream.KeyValueManager, lim Limits, replicas int) (*Controller, error) {
	kv, err := stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "active vendor batches, for MAX_ACTIVE_BATCHES and token budgets",
		History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", Bucket, err)
	}
	if lim.Retry == 0 {
		lim.Retry = 2 * time.Second
	}
	return &Controller{kv: kv, lim: lim, now: time.Now}, nil
}

// Enabled reports whether any limit is set.
func (c *Controller) Enabled() bool {
	return c.lim.MaxActive > 0 || len(c.lim.TokensPerModel) > 0
}

func (c *Controller) tokenLimit(model string) int64 {
	if n, ok := c.lim.TokensPerModel[model]; ok {
		return n
	}
	return c.lim.TokensPerModel["*"]
}

// Admit takes a slot for key (idempotent: a key holding one is admitted).
// It returns false and how long to wait when a cap is reached. A batch
// larger than a model's whole budget is admitted alone, so it can't wait forever.
func (c *Controller) Admit(ctx context.Context, key, model string, tokens int64) (bool, time.Duration, error) {
	admitted := false
	err := c.update(ctx, func(s *State) bool {
		admitted = false // fn runs again after a compare-and-set conflict
		if _, ok := s.Active[key]; ok {
			admitted = true
			return false
		}
		if c.lim.MaxActive > 0 && len(s.Active) >= c.lim.MaxActive {
			return false
		}
		if lim := c.tokenLimit(model); lim > 0 && tokens > 0 {
			used := s.Tokens(model)
			if used > 0 && used+tokens > lim {
				return false
			}
		}
		s.Active[key] = Slot{Model: model, Tokens: tokens, At: c.now().UTC()}
		admitted = true
		return true
	})
	if err != nil {
		return false, 0, err
	}
	return admitted, c.lim.Retry, nil
}

// ReservedTokens is the estimated tokens of model's admitted batches.
func (c *Controller) ReservedTokens(ctx context.Context, model string) (int64, error) {
	s, _, err := c.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	return s.Tokens(model), nil
}

// Release frees key's slot (missing is fine).
func (c *Controller) Release(ctx context.Context, key string) error {
	return c.update(ctx, func(s *State) bool {
		if _, ok := s.Active[key]; !ok {
			return false
		}
		delete(s.Active, key)
		return true
	})
}

// Snapshot returns the current state.
func (c *Controller) Snapshot(ctx context.Context) (State, uint64, error) {
	s := State{Active: map[string]Slot{}}
	e, err := c.kv.Get(ctx, stateKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return s, 0, nil
	}
	if err != nil {
		return s, 0, fmt.Errorf("read admission state: %w", err)
	}
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		return s, 0, fmt.Errorf("decode admission state: %w", err)
	}
	if s.Active == nil {
		s.Active = map[string]Slot{}
	}
	return s, e.Revision(), nil
}

// update applies fn under compare-and-set; fn returns whether it changed s.
func (c *Controller) update(ctx context.Context, fn func(*State) bool) error {
	for range 100 {
		s, rev, err := c.Snapshot(ctx)
		if err != nil {
			return err
		}
		if !fn(&s) {
			return nil
		}
		data, err := json.Marshal(s)
		if err != nil {
			return err
		}
		if rev == 0 {
			_, err = c.kv.Create(ctx, stateKey, data)
		} else {
			_, err = c.kv.Update(ctx, stateKey, data, rev)
		}
		if err == nil {
			return nil
		}
		if !jobstore.IsWrongRevision(err) {
			return fmt.Errorf("write admission state: %w", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return errors.New("admission: too much contention on the state")
}
