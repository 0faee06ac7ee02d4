package pack

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// fanoutAckWait bounds how long a dead notifier's fan-out holds its pack
// (a live one marks the message in progress every third of it).
const fanoutAckWait = 30 * time.Second

// fanoutDone is the progress value of a pack whose items are all answered.
const fanoutDone = "done"

// FanoutConfig tunes the fan-out; zero values take the defaults.
type FanoutConfig struct {
	// Chunk is how many events are published before progress is recorded.
	// Defaults to 1,000.
	Chunk int
	// Concurrency is how many packs are fanned out at once. Defaults to 4.
	Concurrency int
	StopTimeout time.Duration
	Streams     stream.Settings
	Replicas    int
}

// Fanout publishes each pack item's batch.item.completed when its pack's
// job ends.
type Fanout struct {
	js    jetstream.JetStream
	st    *jobstore.Store
	cfg   FanoutConfig
	log   zerolog.Logger
	packs jetstream.KeyValue
}

// NewFanout opens the streams and buckets the fan-out uses.
func NewFanout(ctx context.Context, js jetstream.JetStream, st *jobstore.Store, log zerolog.Logger, cfg FanoutConfig) (*Fanout, error) {
	cfg.Chunk = cmp.Or(cfg.Chunk, 1000)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 4)
	cfg.StopTimeout = cmp.Or(cfg.StopTimeout, 8*time.Second)
	if err := stream.Ensure(ctx, js, cfg.Streams, stream.Events); err != nil {
		return nil, err
	}
	packs, err := openPacks(ctx, js, Config{Replicas: cfg.Replicas})
	if err != nil {
		return nil, err
	}
	f := &Fanout{js: js, st: st, cfg: cfg, log: log.With().Str("role", "item-fanout").Logger(), packs: packs}
	// The consumer exists before this process publishes any batch.completed.
	if _, err := stream.EnsureConsumer(ctx, js, stream.Events, f.consumer()); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *Fanout) consumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: stream.ConsumerItemFanout, Description: "item fan-out: batch.item.completed for each item of a pack job",
		FilterSubject: contract.SubjectCompleted, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: fanoutAckWait, MaxAckPending: 4 * f.cfg.Concurrency, MaxDeliver: -1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
}

// Run fans out pack jobs' results until ctx is done.
func (f *Fanout) Run(ctx context.Context) error {
	cfg := f.consumer()
	c, err := stream.EnsureConsumer(ctx, f.js, stream.Events, cfg)
	if err != nil {
		return err
	}
	return stream.Consume(ctx, c, stream.ConsumeOptions{
		Concurrency: f.cfg.Concurrency, StopTimeout: f.cfg.StopTimeout, Logger: f.log,
		Recreate: stream.Recreate(f.js, f.cfg.Streams, stream.Events, cfg),
	}, f.handle)
}

func (f *Fanout) handle(ctx context.Context, m jetstream.Msg) {
	var ev contract.Completed
	if err := json.Unmarshal(m.Data(), &ev); err != nil || !strings.HasPrefix(ev.IdempotencyKey, contract.PackKeyPrefix) {
		_ = m.Ack()
		return
	}
	// Keep the message while a long fan-out runs.
	stop := stream.Heartbeat(ctx, m, fanoutAckWait/3)
	defer stop()
	n, err := f.Pack(ctx, &ev)
	if err != nil {
		f.log.Warn().Err(err).Str("pack", ev.IdempotencyKey).Msg("item fan-out failed: again in 5s")
		_ = m.NakWithDelay(5 * time.Second)
		return
	}
	_ = m.Ack()
	if n > 0 {
		f.log.Info().Str("pack", ev.IdempotencyKey).Int("items", n).Str("outcome", ev.Outcome).Msg("items answered")
	}
}

// Pack publishes the batch.item.completed events of a pack job's items
// from its merged results (and, for items without a result line, from the
// job's outcome), resuming after the last chunk recorded. It returns how
// many events it published.
//
// Progress counts events in the order of one version of the results
// object (its NUID): a notifier that redoes the job's final step rewrites
// the object, perhaps in another order, and the fan-out then starts over
// (Msg-Id de-duplication absorbs what it publishes again within
// DEDUP_WINDOW).
func (f *Fanout) Pack(ctx context.Context, ev *contract.Completed) (int, error) {
	key := ev.IdempotencyKey
	pk := "fanout." + key
	prog, err := f.progress(ctx, pk)
	if err != nil || prog.done {
		return 0, err
	}
	meta, ids, err := f.sidecar(ctx, key)
	if err != nil {
		return 0, err
	}
	p := &publisher{f: f, key: pk, rev: prog.rev, chunk: f.cfg.Chunk}
	seen := make(map[string]struct{}, len(ids))
	if ev.Results != nil {
		rc, _, err := f.st.OpenObject(ctx, ev.Results.Bucket, ev.Results.Object)
		if err != nil {
			return 0, fmt.Errorf("open results of %s: %w", key, err)
		}
		if in, ok := rc.(interface {
			Info() (*jetstream.ObjectInfo, error)
		}); ok {
			if info, err := in.Info(); err == nil {
				p.version = info.NUID
			}
		}
		if p.version == prog.version {
			p.skip = prog.n
		}
		err = results.ScanMerged(rc, func(attempt int, l results.Line) error {
			seen[l.CustomID] = struct{}{}
			return p.add(ctx, itemEvent(ev, attempt, l, meta[l.CustomID]))
		})
		_ = rc.Close()
		if err != nil {
			return 0, fmt.Errorf("read results of %s: %w", key, err)
		}
	} else if prog.version == "" {
		p.skip = prog.n
	}
	for _, id := range ids {
		if _, ok := seen[id]; ok {
			continue
		}
		if err := p.add(ctx, missingEvent(ev, id, meta[id])); err != nil {
			return 0, err
		}
	}
	if err := p.flush(ctx, true); err != nil {
		return 0, err
	}
	if err := f.st.DeleteObject(ctx, jobstore.BucketIntake, SidecarName(key)); err != nil {
		f.log.Warn().Err(err).Str("pack", key).Msg("delete pack sidecar")
	}
	return p.published, nil
}

// progress is a pack's fan-out record: "done", or "<n>" events published
// in the order of results object version "<nuid>" ("<n>@<nuid>").
type progress struct {
	done    bool
	n       int
	version string
	rev     uint64
}

func (f *Fanout) progress(ctx context.Context, key string) (progress, error) {
	e, err := f.packs.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return progress{}, nil
	case err != nil:
		return progress{}, fmt.Errorf("read fan-out progress: %w", err)
	}
	p := progress{rev: e.Revision()}
	if string(e.Value()) == fanoutDone {
		p.done = true
		return p, nil
	}
	num, version, _ := strings.Cut(string(e.Value()), "@")
	if p.n, err = strconv.Atoi(num); err != nil {
		return progress{}, fmt.Errorf("fan-out progress %q: %w", e.Value(), err)
	}
	p.version = version
	return p, nil
}

// sidecar reads a pack's item list: every custom_id in input order, and
// the metadata of those that have some. A missing sidecar (already
// deleted by a finished fan-out) gives none.
func (f *Fanout) sidecar(ctx context.Context, key string) (map[string]map[string]string, []string, error) {
	rc, _, err := f.st.OpenObject(ctx, jobstore.BucketIntake, SidecarName(key))
	if errors.Is(err, jobstore.ErrNotFound) {
		f.log.Warn().Str("pack", key).Msg("pack sidecar missing: items answered without metadata")
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	meta := map[string]map[string]string{}
	var ids []string
	sc := bufio.NewScanner(rc)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var it struct {
			CustomID string            `json:"custom_id"`
			Metadata map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(sc.Bytes(), &it); err != nil {
			return nil, nil, fmt.Errorf("pack sidecar %s: %w", key, err)
		}
		ids = append(ids, it.CustomID)
		if len(it.Metadata) > 0 {
			meta[it.CustomID] = it.Metadata
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("read pack sidecar %s: %w", key, err)
	}
	return meta, ids, nil
}

// itemEvent is the answer of an item with a merged result line.
func itemEvent(ev *contract.Completed, attempt int, l results.Line, meta map[string]string) contract.ItemCompleted {
	it := contract.ItemCompleted{CustomID: l.CustomID, JobKey: ev.IdempotencyKey, Metadata: orEmpty(meta)}
	if attempt >= 0 && attempt < len(ev.BatchIDs) {
		it.BatchID = ev.BatchIDs[attempt]
	}
	if l.Outcome() == results.Succeeded {
		it.Outcome = contract.OutcomeSucceeded
		it.Response = &contract.ItemResponse{StatusCode: l.StatusCode, Body: l.Body}
		if u := l.Usage(); u != (results.Usage{}) {
			cu := contract.Usage(u)
			it.Usage = &cu
		}
		return it
	}
	reason := l.Reason()
	switch reason {
	case "batch_expired":
		it.Outcome = contract.OutcomeExpired
	case "batch_cancelled":
		it.Outcome = contract.OutcomeCancelled
	default:
		it.Outcome = contract.OutcomeFailed
	}
	it.Error = &contract.Error{Code: reason, Message: l.Message()}
	if l.StatusCode != 0 {
		it.Response = &contract.ItemResponse{StatusCode: l.StatusCode, Body: l.Body}
	}
	return it
}

// missingEvent answers an item the job ended without a result line for
// (the job failed before its batch ran, or was cancelled before it).
func missingEvent(ev *contract.Completed, id string, meta map[string]string) contract.ItemCompleted {
	it := contract.ItemCompleted{CustomID: id, JobKey: ev.IdempotencyKey, Metadata: orEmpty(meta)}
	if n := len(ev.BatchIDs); n > 0 {
		it.BatchID = ev.BatchIDs[n-1]
	}
	switch ev.Outcome {
	case contract.OutcomeCancelled:
		it.Outcome = contract.OutcomeCancelled
		it.Error = &contract.Error{Code: "batch_cancelled", Message: "the pack's job was cancelled before the item ran"}
	case contract.OutcomeExpired:
		it.Outcome = contract.OutcomeExpired
		it.Error = &contract.Error{Code: "batch_expired", Message: "the pack's batch expired before the item ran"}
	default:
		it.Outcome = contract.OutcomeFailed
		it.Error = &contract.Error{Code: "missing_result", Message: "the pack's job ended without a result for the item"}
		if ev.Error != nil {
			it.Error = &contract.Error{Code: ev.Error.Code, Message: "the pack's job failed: " + ev.Error.Message}
		}
	}
	return it
}

// publisher publishes events in chunks, recording progress after each;
// two chunks are in flight at once, so publishing goes on while a chunk's
// acknowledgements and progress record are awaited.
type publisher struct {
	f         *Fanout
	key       string
	rev       uint64
	skip      int    // events published by an earlier run
	version   string // the results object's NUID
	n         int    // events seen
	chunk     int
	pending   []jetstream.PubAckFuture // events n-len(pending)+1 .. n
	published int
}

func (p *publisher) add(ctx context.Context, it contract.ItemCompleted) error {
	p.n++
	if p.n <= p.skip {
		return nil
	}
	data, err := json.Marshal(it)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: contract.SubjectItemCompleted, Data: data, Header: nats.Header{}}
	fut, err := p.f.js.PublishMsgAsync(msg, jetstream.WithMsgID(contract.ItemCompletedMsgID(it.CustomID)), jetstream.WithStallWait(stream.PublishTimeout))
	if err != nil {
		return fmt.Errorf("publish %s: %w", contract.SubjectItemCompleted, err)
	}
	p.pending = append(p.pending, fut)
	if len(p.pending) >= 2*p.chunk {
		return p.settle(ctx, p.chunk, false)
	}
	return nil
}

// flush settles everything pending and records the fan-out done.
func (p *publisher) flush(ctx context.Context, final bool) error {
	return p.settle(ctx, len(p.pending), final)
}

// settle waits for the first k pending acknowledgements and records the
// progress they reach (final: all).
func (p *publisher) settle(ctx context.Context, k int, final bool) error {
	timeout := time.NewTimer(stream.PublishTimeout + time.Duration(k)*time.Millisecond)
	defer timeout.Stop()
	for _, fut := range p.pending[:k] {
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return fmt.Errorf("publish %s: %w", contract.SubjectItemCompleted, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("publish %s: no acknowledgement in time", contract.SubjectItemCompleted)
		}
	}
	p.published += k
	p.pending = append(p.pending[:0], p.pending[k:]...)
	val := strconv.Itoa(p.n - len(p.pending))
	if p.version != "" {
		val += "@" + p.version
	}
	if final {
		val = fanoutDone
	}
	rev, err := putRevision(ctx, p.f.packs, p.key, []byte(val), p.rev)
	if err != nil {
		return fmt.Errorf("record fan-out progress: %w", err)
	}
	p.rev = rev
	failpoint.Hit("pack/fanout-after-chunk")
	return nil
}

func orEmpty(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}
