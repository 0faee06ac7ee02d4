package jobstore

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/stream"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// Bucket names.
const (
	BucketJobs    = "batch_jobs"
	BucketPolls   = "batch_polls"
	BucketInputs  = "batch_inputs"
	BucketResults = "batch_results"
	// BucketIntake holds producers' large inputs (input_object).
	BucketIntake = contract.BucketIntake
)

// Sentinels.
var (
	// ErrNotFound: no record for the key.
	ErrNotFound = errors.New("jobstore: not found")
	// ErrExists: Create found a record already there.
	ErrExists = errors.New("jobstore: already exists")
	// ErrNoChange, returned by a Mutate function, leaves the record as it is.
	ErrNoChange = errors.New("jobstore: no change")
)

// Settings tune the buckets; zero values take the defaults.
type Settings struct {
	// Retention is how long a job record is kept after its last change
	// (JOB_RETENTION). Defaults to 30 days.
	Retention time.Duration
	// ResultsRetention is how long merged results are kept (RESULTS_RETENTION).
	// Defaults to 30 days.
	ResultsRetention time.Duration
	// Replicas of every bucket (STREAM_REPLICAS). Defaults to 1.
	Replicas int
	// OpTimeout bounds each KV call and small object. Defaults to 5s.
	OpTimeout time.Duration
	// TransferTimeout bounds streaming an object in or out
	// (VENDOR_TRANSFER_TIMEOUT). Defaults to 10m.
	TransferTimeout time.Duration
}

// WithDefaults fills zero fields.
func (s Settings) WithDefaults() Settings {
	s.Retention = cmp.Or(s.Retention, 30*24*time.Hour)
	s.ResultsRetention = cmp.Or(s.ResultsRetention, 30*24*time.Hour)
	s.Replicas = cmp.Or(s.Replicas, 1)
	s.OpTimeout = cmp.Or(s.OpTimeout, 5*time.Second)
	s.TransferTimeout = cmp.Or(s.TransferTimeout, 10*time.Minute)
	return s
}

// Store is the durable job store.
type Store struct {
	jobs    jetstream.KeyValue
	polls   jetstream.KeyValue
	inputs  jetstream.ObjectStore
	results jetstream.ObjectStore
	intake  jetstream.ObjectStore
	index   *index
	js      jetstream.JetStream
	s       Settings
	now     func() time.Time
}

// Open creates or updates the buckets and returns a Store.
func Open(ctx context.Context, js jetstream.JetStream, s Settings) (*Store, error) {
	s = s.WithDefaults()
	st := &Store{s: s, now: time.Now, js: js}
	var err error
	if st.jobs, err = stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketJobs, Description: "one record per job (original idempotency key)",
		TTL: s.Retention, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketJobs, err)
	}
	idx, err := stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketIndex, Description: "one small entry per job, keyed by its state (lists, the report, the rescuer)",
		TTL: s.Retention, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketIndex, err)
	}
	st.index = &index{kv: idx}
	if st.polls, err = stream.EnsureKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: BucketPolls, Description: "polling state per active vendor batch",
		TTL: s.Retention, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketPolls, err)
	}
	if st.inputs, err = stream.EnsureObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket: BucketInputs, Description: "JSONL input of each vendor batch, kept for retries",
		TTL: s.Retention, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketInputs, err)
	}
	if st.results, err = stream.EnsureObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket: BucketResults, Description: "merged per-request results of each job",
		TTL: s.ResultsRetention, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketResults, err)
	}
	if st.intake, err = stream.EnsureObjectStore(ctx, js, jetstream.ObjectStoreConfig{
		Bucket: BucketIntake, Description: "producers' large batch inputs (input_object), deleted when their job ends",
		TTL: s.Retention, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketIntake, err)
	}
	return st, nil
}

// KVKey maps an idempotency key or batch id onto the KV key alphabet: '.'
// and ':' (allowed in idempotency keys, not as plain KV key characters)
// become "=2E" and "=3A"; '=' never occurs in idempotency keys, so the
// mapping is one-to-one.
func KVKey(k string) string {
	if !strings.ContainsAny(k, ".:") {
		return k
	}
	return strings.NewReplacer(".", "=2E", ":", "=3A").Replace(k)
}

func (s *Store) op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.s.OpTimeout)
}

// Get reads a job record.
func (s *Store) Get(ctx context.Context, key string) (*Job, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	e, err := s.jobs.Get(ctx, KVKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("get job %q: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %q: %w", key, err)
	}
	var j Job
	if err := json.Unmarshal(e.Value(), &j); err != nil {
		return nil, fmt.Errorf("decode job %q: %w", key, err)
	}
	j.Revision = e.Revision()
	j.seen = snapshot(&j)
	return &j, nil
}

// Create stores a new job record; ErrExists if one is there. Its index
// entry is written first, so no record exists without one.
func (s *Store) Create(ctx context.Context, j *Job) error {
	now := s.now().UTC()
	j.CreatedAt, j.UpdatedAt = cmp.Or(j.CreatedAt, now), now
	tl := j.Timeline
	j.Timeline = trimTimeline(append(append(j.Timeline, Event{At: now, Kind: EventCreated, Detail: fmt.Sprintf("%d requests", j.Total)}), changes(nil, j, now)...))
	data, err := json.Marshal(j)
	if err != nil {
		j.Timeline = tl
		return fmt.Errorf("encode job %q: %w", j.Key, err)
	}
	ctx, end := telemetry.Start(ctx, "kv create batch_jobs", attribute.String("batchfleet.idempotency_key", j.Key))
	defer func() { end(err) }() // the KV create's own error
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.index.sync(ctx, nil, nil, j); err != nil {
		j.Timeline = tl
		return fmt.Errorf("create job %q: %w", j.Key, err)
	}
	rev, err := s.jobs.Create(ctx, KVKey(j.Key), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		// The entry just written describes a record that was not
		// created: make the index describe the one that exists.
		if cur, gerr := s.Get(ctx, j.Key); gerr == nil {
			_ = s.Reindex(ctx, cur, IndexKey(j))
		}
		j.Timeline = tl
		return fmt.Errorf("create job %q: %w", j.Key, ErrExists)
	}
	if err != nil {
		j.Timeline = tl
		return fmt.Errorf("create job %q: %w", j.Key, err)
	}
	j.Revision = rev
	j.seen = snapshot(j)
	return nil
}

// Update writes j if the stored revision is still j.Revision; an error
// wrapping ErrConflict otherwise. The write appends to the timeline what
// changed since j was read, and then brings j's index entry up to date
// (an index write that fails leaves a stale open entry, which readers and
// the rescuer repair; it does not fail the update).
func (s *Store) Update(ctx context.Context, j *Job) error {
	prevUpdated, tl := j.UpdatedAt, j.Timeline
	j.UpdatedAt = s.now().UTC()
	j.Timeline = trimTimeline(append(j.Timeline, changes(j.seen, j, j.UpdatedAt)...))
	data, err := json.Marshal(j)
	if err != nil {
		j.UpdatedAt, j.Timeline = prevUpdated, tl
		return fmt.Errorf("encode job %q: %w", j.Key, err)
	}
	ctx, end := telemetry.Start(ctx, "kv update batch_jobs", attribute.String("batchfleet.idempotency_key", j.Key))
	ctx, cancel := s.op(ctx)
	defer cancel()
	rev, err := s.jobs.Update(ctx, KVKey(j.Key), data, j.Revision)
	end(err)
	if err != nil {
		j.UpdatedAt, j.Timeline = prevUpdated, tl
		if IsWrongRevision(err) {
			return fmt.Errorf("update job %q: %w", j.Key, ErrConflict)
		}
		return fmt.Errorf("update job %q: %w", j.Key, err)
	}
	j.Revision = rev
	prev := j.seen
	j.seen = snapshot(j)
	_ = s.index.sync(ctx, prev, j.seen, j)
	return nil
}

// ErrConflict: the record changed since it was read.
var ErrConflict = errors.New("jobstore: record changed concurrently")

// IsWrongRevision reports whether err is JetStream refusing a
// compare-and-set (KV Update or Create) because the key's revision moved:
// the one check every compare-and-set in the fleet uses.
func IsWrongRevision(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return true
	}
	return errors.Is(err, jetstream.ErrKeyExists)
}

// Mutate reads the job, applies fn and writes it back by compare-and-set,
// re-reading and re-applying fn on a conflict. fn returning ErrNoChange
// leaves the record untouched (Mutate returns the record and nil); any other
// error aborts. The returned record is the one written (or read).
func (s *Store) Mutate(ctx context.Context, key string, fn func(*Job) error) (*Job, error) {
	for i := 0; ; i++ {
		j, err := s.Get(ctx, key)
		if err != nil {
			return nil, err
		}
		if err := fn(j); err != nil {
			if errors.Is(err, ErrNoChange) {
				return j, nil
			}
			return j, err
		}
		err = s.Update(ctx, j)
		if err == nil {
			return j, nil
		}
		if !errors.Is(err, ErrConflict) || i >= 50 {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
}

// GetPoll reads a batch's polling state.
func (s *Store) GetPoll(ctx context.Context, batchID string) (*Poll, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	e, err := s.polls.Get(ctx, KVKey(batchID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("get poll %q: %w", batchID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get poll %q: %w", batchID, err)
	}
	var p Poll
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		return nil, fmt.Errorf("decode poll %q: %w", batchID, err)
	}
	p.Revision = e.Revision()
	return &p, nil
}

// PutPoll writes a batch's polling state by compare-and-set on p.Revision
// (0 = create); ErrConflict if it changed meanwhile.
func (s *Store) PutPoll(ctx context.Context, p *Poll) error {
	data, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode poll %q: %w", p.BatchID, err)
	}
	ctx, end := telemetry.Start(ctx, "kv update batch_polls", attribute.String("batchfleet.batch_id", p.BatchID))
	defer func() { end(err) }()
	ctx, cancel := s.op(ctx)
	defer cancel()
	var rev uint64
	if p.Revision == 0 {
		rev, err = s.polls.Create(ctx, KVKey(p.BatchID), data)
	} else {
		rev, err = s.polls.Update(ctx, KVKey(p.BatchID), data, p.Revision)
	}
	if err != nil {
		if IsWrongRevision(err) {
			return fmt.Errorf("put poll %q: %w", p.BatchID, ErrConflict)
		}
		return fmt.Errorf("put poll %q: %w", p.BatchID, err)
	}
	p.Revision = rev
	return nil
}

// PutInput stores the JSONL input of a vendor batch under name.
func (s *Store) PutInput(ctx context.Context, name string, data []byte) error {
	_, err := s.PutObject(ctx, BucketInputs, name, bytes.NewReader(data))
	return err
}

// PutResults stores a job's merged results.
func (s *Store) PutResults(ctx context.Context, name string, data []byte) error {
	_, err := s.PutObject(ctx, BucketResults, name, bytes.NewReader(data))
	return err
}

// Results reads a job's merged results; ErrNotFound if none are stored.
// Large results are better streamed with OpenObject.
func (s *Store) Results(ctx context.Context, name string) ([]byte, error) {
	rc, _, err := s.OpenObject(ctx, BucketResults, name)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read object %q: %w", name, err)
	}
	return data, nil
}

func (s *Store) bucket(name string) (jetstream.ObjectStore, error) {
	switch name {
	case BucketInputs:
		return s.inputs, nil
	case BucketResults:
		return s.results, nil
	case BucketIntake:
		return s.intake, nil
	}
	return nil, fmt.Errorf("unknown object store bucket %q", name)
}

// PutObject streams r into the named object of bucket, replacing any
// object of that name only once r is read to its end (a failed put leaves
// the previous one in place). It returns the object's size.
func (s *Store) PutObject(ctx context.Context, bucket, name string, r io.Reader) (int64, error) {
	os, err := s.bucket(bucket)
	if err != nil {
		return 0, err
	}
	ctx, end := telemetry.Start(ctx, "object put "+bucket)
	ctx, cancel := context.WithTimeout(ctx, s.s.TransferTimeout)
	defer cancel()
	info, err := os.Put(ctx, jetstream.ObjectMeta{Name: name}, r)
	end(err)
	if err != nil {
		return 0, fmt.Errorf("put object %s/%q: %w", bucket, name, err)
	}
	return int64(info.Size), nil
}

// OpenObject opens the named object of bucket for reading, with its size;
// ErrNotFound if there is none. The caller closes the reader, which ends
// the read (it is bounded by TransferTimeout) and reports a digest
// mismatch as an error at the end of the stream.
func (s *Store) OpenObject(ctx context.Context, bucket, name string) (io.ReadCloser, int64, error) {
	os, err := s.bucket(bucket)
	if err != nil {
		return nil, 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.s.TransferTimeout)
	r, err := os.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		cancel()
		return nil, 0, fmt.Errorf("get object %s/%q: %w", bucket, name, ErrNotFound)
	}
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("get object %s/%q: %w", bucket, name, err)
	}
	info, err := r.Info()
	if err != nil {
		_ = r.Close()
		cancel()
		return nil, 0, fmt.Errorf("get object %s/%q: %w", bucket, name, err)
	}
	return &objectReader{ObjectResult: r, cancel: cancel}, int64(info.Size), nil
}

type objectReader struct {
	jetstream.ObjectResult
	cancel context.CancelFunc
}

func (r *objectReader) Close() error {
	err := r.ObjectResult.Close()
	r.cancel()
	return err
}

// DeleteObject removes the named object of bucket (missing is not an error).
func (s *Store) DeleteObject(ctx context.Context, bucket, name string) error {
	os, err := s.bucket(bucket)
	if err != nil {
		return err
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := os.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete object %s/%q: %w", bucket, name, err)
	}
	return nil
}

// sweepKey holds the Sweep record in the polls bucket. KVKey only writes
// '=' as "=2E" or "=3A", so no batch id maps onto it.
const sweepKey = "=sweep"

// sweepKeyOf is the key of a provider's sweep record (OpenAI's is
// sweepKey, as before providers).
func sweepKeyOf(provider string) string {
	if provider == "" || provider == contract.ProviderOpenAI {
		return sweepKey
	}
	return sweepKey + "." + provider
}

// GetSweep reads the last sweep record of OpenAI's batches; ErrNotFound
// before the first.
func (s *Store) GetSweep(ctx context.Context) (*Sweep, error) {
	return s.GetSweepOf(ctx, "")
}

// GetSweepOf reads the last sweep record of a provider's batches ("" is
// OpenAI); ErrNotFound before the first.
func (s *Store) GetSweepOf(ctx context.Context, provider string) (*Sweep, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	e, err := s.polls.Get(ctx, sweepKeyOf(provider))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("get sweep: %w", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get sweep: %w", err)
	}
	var sw Sweep
	if err := json.Unmarshal(e.Value(), &sw); err != nil {
		return nil, fmt.Errorf("decode sweep: %w", err)
	}
	return &sw, nil
}

// PutSweep records a finished sweep.
func (s *Store) PutSweep(ctx context.Context, sw *Sweep) error {
	data, err := json.Marshal(sw)
	if err != nil {
		return fmt.Errorf("encode sweep: %w", err)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	if _, err := s.polls.Put(ctx, sweepKeyOf(sw.Provider), data); err != nil {
		return fmt.Errorf("put sweep: %w", err)
	}
	return nil
}

// Apply changes a record already in hand: fn is applied to a copy of j
// and written by compare-and-set on j's revision (one round trip); if the
// record changed since j was read, it falls back to Mutate (read, apply
// fn again, write). j itself is not modified. fn returning ErrNoChange
// leaves the record as it is and Apply returns the copy fn saw.
func (s *Store) Apply(ctx context.Context, j *Job, fn func(*Job) error) (*Job, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("copy job %q: %w", j.Key, err)
	}
	var c Job
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("copy job %q: %w", j.Key, err)
	}
	c.Revision, c.seen = j.Revision, j.seen
	if err := fn(&c); err != nil {
		if errors.Is(err, ErrNoChange) {
			return &c, nil
		}
		return nil, err
	}
	err = s.Update(ctx, &c)
	if err == nil {
		return &c, nil
	}
	if !errors.Is(err, ErrConflict) {
		return nil, err
	}
	return s.Mutate(ctx, j.Key, fn)
}

// Each calls fn with every job record (read one at a time; a record that
// vanished meanwhile is skipped). It stops at the first error of fn.
func (s *Store) Each(ctx context.Context, fn func(*Job) error) error {
	lister, err := s.jobs.ListKeys(ctx)
	if err != nil {
		if errors.Is(err, jetstream.ErrNoKeysFound) {
			return nil
		}
		return fmt.Errorf("list jobs: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	for k := range lister.Keys() {
		e, err := s.jobs.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("get job %q: %w", k, err)
		}
		var j Job
		if err := json.Unmarshal(e.Value(), &j); err != nil {
			return fmt.Errorf("decode job %q: %w", k, err)
		}
		j.Revision = e.Revision()
		j.seen = snapshot(&j)
		if err := fn(&j); err != nil {
			return err
		}
	}
	return nil
}

// MarkPollCancel sets CancelRequested on a batch's poll record (missing is
// not an error: the submitter records it with the job's cancel).
func (s *Store) MarkPollCancel(ctx context.Context, batchID string) error {
	for {
		st, err := s.GetPoll(ctx, batchID)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil || st.CancelRequested || st.Final {
			return err
		}
		st.CancelRequested = true
		if err := s.PutPoll(ctx, st); !errors.Is(err, ErrConflict) {
			return err
		}
	}
}
