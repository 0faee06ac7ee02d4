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
)

// Bucket names.
const (
	BucketJobs    = "batch_jobs"
	BucketPolls   = "batch_polls"
	BucketInputs  = "batch_inputs"
	BucketResults = "batch_results"
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
	// OpTimeout bounds each KV or object store call. Defaults to 5s.
	OpTimeout time.Duration
}

// WithDefaults fills zero fields.
func (s Settings) WithDefaults() Settings {
	s.Retention = cmp.Or(s.Retention, 30*24*time.Hour)
	s.ResultsRetention = cmp.Or(s.ResultsRetention, 30*24*time.Hour)
	s.Replicas = cmp.Or(s.Replicas, 1)
	s.OpTimeout = cmp.Or(s.OpTimeout, 5*time.Second)
	return s
}

// Store is the durable job store.
type Store struct {
	jobs    jetstream.KeyValue
	polls   jetstream.KeyValue
	inputs  jetstream.ObjectStore
	results jetstream.ObjectStore
	s       Settings
	now     func() time.Time
}

// Open creates or updates the buckets and returns a Store.
func Open(ctx context.Context, js jetstream.JetStream, s Settings) (*Store, error) {
	s = s.WithDefaults()
	st := &Store{s: s, now: time.Now}
	var err error
	if st.jobs, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketJobs, Description: "one record per job (original idempotency key)",
		TTL: s.Retention, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketJobs, err)
	}
	if st.polls, err = js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: BucketPolls, Description: "polling state per active vendor batch",
		TTL: s.Retention, History: 1, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketPolls, err)
	}
	if st.inputs, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: BucketInputs, Description: "JSONL input of each vendor batch, kept for retries",
		TTL: s.Retention, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketInputs, err)
	}
	if st.results, err = js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket: BucketResults, Description: "merged per-request results of each job",
		TTL: s.ResultsRetention, Storage: jetstream.FileStorage, Replicas: s.Replicas,
	}); err != nil {
		return nil, fmt.Errorf("open object store %s: %w", BucketResults, err)
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
	return &j, nil
}

// Create stores a new job record; ErrExists if one is there.
func (s *Store) Create(ctx context.Context, j *Job) error {
	now := s.now().UTC()
	j.CreatedAt, j.UpdatedAt = cmp.Or(j.CreatedAt, now), now
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %q: %w", j.Key, err)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	rev, err := s.jobs.Create(ctx, KVKey(j.Key), data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("create job %q: %w", j.Key, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create job %q: %w", j.Key, err)
	}
	j.Revision = rev
	return nil
}

// Update writes j if the stored revision is still j.Revision; a
// *ConflictError (errors.Is ErrConflict) otherwise.
func (s *Store) Update(ctx context.Context, j *Job) error {
	j.UpdatedAt = s.now().UTC()
	data, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("encode job %q: %w", j.Key, err)
	}
	ctx, cancel := s.op(ctx)
	defer cancel()
	rev, err := s.jobs.Update(ctx, KVKey(j.Key), data, j.Revision)
	if err != nil {
		if isWrongRevision(err) {
			return fmt.Errorf("update job %q: %w", j.Key, ErrConflict)
		}
		return fmt.Errorf("update job %q: %w", j.Key, err)
	}
	j.Revision = rev
	return nil
}

// ErrConflict: the record changed since it was read.
var ErrConflict = errors.New("jobstore: record changed concurrently")

func isWrongRevision(err error) bool {
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
	ctx, cancel := s.op(ctx)
	defer cancel()
	var rev uint64
	if p.Revision == 0 {
		rev, err = s.polls.Create(ctx, KVKey(p.BatchID), data)
	} else {
		rev, err = s.polls.Update(ctx, KVKey(p.BatchID), data, p.Revision)
	}
	if err != nil {
		if isWrongRevision(err) {
			return fmt.Errorf("put poll %q: %w", p.BatchID, ErrConflict)
		}
		return fmt.Errorf("put poll %q: %w", p.BatchID, err)
	}
	p.Revision = rev
	return nil
}

// PutInput stores the JSONL input of a vendor batch under name.
func (s *Store) PutInput(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, s.inputs, name, data)
}

// Input reads a stored input.
func (s *Store) Input(ctx context.Context, name string) ([]byte, error) {
	return s.get(ctx, s.inputs, name)
}

// DeleteInput removes a stored input (missing is not an error).
func (s *Store) DeleteInput(ctx context.Context, name string) error {
	ctx, cancel := s.op(ctx)
	defer cancel()
	if err := s.inputs.Delete(ctx, name); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete input %q: %w", name, err)
	}
	return nil
}

// PutResults stores a job's merged results.
func (s *Store) PutResults(ctx context.Context, name string, data []byte) error {
	return s.put(ctx, s.results, name, data)
}

// Results reads a job's merged results; ErrNotFound if none are stored.
func (s *Store) Results(ctx context.Context, name string) ([]byte, error) {
	return s.get(ctx, s.results, name)
}

func (s *Store) put(ctx context.Context, os jetstream.ObjectStore, name string, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 4*s.s.OpTimeout)
	defer cancel()
	if _, err := os.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("put object %q: %w", name, err)
	}
	return nil
}

func (s *Store) get(ctx context.Context, os jetstream.ObjectStore, name string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*s.s.OpTimeout)
	defer cancel()
	r, err := os.Get(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("get object %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get object %q: %w", name, err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read object %q: %w", name, err)
	}
	return data, nil
}

// sweepKey holds the Sweep record in the polls bucket. KVKey only writes
// '=' as "=2E" or "=3A", so no batch id maps onto it.
const sweepKey = "=sweep"

// GetSweep reads the last sweep record; ErrNotFound before the first.
func (s *Store) GetSweep(ctx context.Context) (*Sweep, error) {
	ctx, cancel := s.op(ctx)
	defer cancel()
	e, err := s.polls.Get(ctx, sweepKey)
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
	if _, err := s.polls.Put(ctx, sweepKey, data); err != nil {
		return fmt.Errorf("put sweep: %w", err)
	}
	return nil
}
