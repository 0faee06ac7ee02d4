package jobstore

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Aggregate sums final jobs (of one model, in one hour partition).
type Aggregate struct {
	Jobs      int             `json:"jobs"`
	ByOutcome map[string]int  `json:"by_outcome"`
	Requests  contract.Counts `json:"requests"`
	Usage     contract.Usage  `json:"usage"`
	// CostUSD sums the priced jobs' cost; Unpriced counts the others.
	CostUSD  float64 `json:"cost_usd"`
	Unpriced int     `json:"unpriced"`
	// Durations are the jobs' durations (Entry.Duration) in milliseconds.
	Durations Millis `json:"durations_ms"`
}

// Add counts one final entry.
func (a *Aggregate) Add(e *Entry) {
	a.Jobs++
	if a.ByOutcome == nil {
		a.ByOutcome = map[string]int{}
	}
	a.ByOutcome[e.Outcome]++
	a.Requests.Total += e.Counts.Total
	a.Requests.Completed += e.Counts.Completed
	a.Requests.Failed += e.Counts.Failed
	if e.Usage != nil {
		a.Usage.InputTokens += e.Usage.InputTokens
		a.Usage.OutputTokens += e.Usage.OutputTokens
		a.Usage.TotalTokens += e.Usage.TotalTokens
	}
	if e.CostUSD != nil {
		a.CostUSD += *e.CostUSD
	} else {
		a.Unpriced++
	}
	a.Durations = append(a.Durations, e.Duration().Milliseconds())
}

// Merge adds b into a.
func (a *Aggregate) Merge(b *Aggregate) {
	a.Jobs += b.Jobs
	if a.ByOutcome == nil {
		a.ByOutcome = map[string]int{}
	}
	for k, v := range b.ByOutcome {
		a.ByOutcome[k] += v
	}
	a.Requests.Total += b.Requests.Total
	a.Requests.Completed += b.Requests.Completed
	a.Requests.Failed += b.Requests.Failed
	a.Usage.InputTokens += b.Usage.InputTokens
	a.Usage.OutputTokens += b.Usage.OutputTokens
	a.Usage.TotalTokens += b.Usage.TotalTokens
	a.CostUSD += b.CostUSD
	a.Unpriced += b.Unpriced
	a.Durations = append(a.Durations, b.Durations...)
}

// Millis is a list of millisecond durations, stored compactly (sorted,
// delta- and varint-encoded, base64) so an hour of 100,000 jobs fits a
// key-value entry.
type Millis []int64

// MarshalJSON encodes the sorted list.
func (m Millis) MarshalJSON() ([]byte, error) {
	s := slices.Clone(m)
	slices.Sort(s)
	buf := make([]byte, 0, len(s)*2)
	prev := int64(0)
	for _, v := range s {
		buf = binary.AppendVarint(buf, v-prev)
		prev = v
	}
	return json.Marshal(base64.RawStdEncoding.EncodeToString(buf))
}

// UnmarshalJSON decodes what MarshalJSON wrote.
func (m *Millis) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	buf, err := base64.RawStdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	out := Millis{}
	prev := int64(0)
	for len(buf) > 0 {
		d, n := binary.Varint(buf)
		if n <= 0 {
			return errors.New("durations: bad varint")
		}
		prev += d
		out = append(out, prev)
		buf = buf[n:]
	}
	*m = out
	return nil
}

// Rollup is the aggregate of one closed hour partition of final jobs, by
// model, with the number of entries it was made from.
type Rollup struct {
	Hour    time.Time             `json:"hour"`
	Entries int                   `json:"entries"`
	Models  map[string]*Aggregate `json:"models"`
}

const rollupPrefix = "rollup."

// HourRollup returns the rollup of a past hour partition (one that ended
// before now): the stored one while the partition still holds the number
// of entries it was made from (a count the server gives without sending
// them), else one computed from the entries and stored. read is the
// number of entries read. A partition of the current hour is not rolled
// up (ok false): read it with ScanHour.
func (s *Store) HourRollup(ctx context.Context, hour time.Time) (r *Rollup, read int, ok bool, err error) {
	hour = hour.UTC().Truncate(time.Hour)
	if !hour.Add(time.Hour).Before(s.now()) {
		return nil, 0, false, nil
	}
	name := hour.Format(hourLayout)
	count, err := s.countKeys(ctx, StateFinal+"."+name+".>")
	if err != nil {
		return nil, 0, false, err
	}
	if e, err := s.index.kv.Get(ctx, rollupPrefix+name); err == nil {
		var stored Rollup
		if json.Unmarshal(e.Value(), &stored) == nil && stored.Entries == count {
			return &stored, 0, true, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, false, fmt.Errorf("get rollup %s: %w", name, err)
	}
	r = &Rollup{Hour: hour, Models: map[string]*Aggregate{}}
	n, err := s.ScanHour(ctx, hour, func(e IndexedEntry) error {
		r.Entries++
		a := r.Models[e.Model]
		if a == nil {
			a = &Aggregate{}
			r.Models[e.Model] = a
		}
		a.Add(&e.Entry)
		return nil
	})
	if err != nil {
		return nil, n, false, err
	}
	data, err := json.Marshal(r)
	if err != nil {
		return nil, n, false, fmt.Errorf("encode rollup %s: %w", name, err)
	}
	if _, err := s.index.kv.Put(ctx, rollupPrefix+name, data); err != nil {
		return nil, n, false, fmt.Errorf("put rollup %s: %w", name, err)
	}
	return r, n, true, nil
}

// countKeys counts the index keys matching filter, without reading them:
// a consumer of the last message per subject knows how many it would send.
func (s *Store) countKeys(ctx context.Context, filter string) (int, error) {
	str, err := s.js.Stream(ctx, "KV_"+BucketIndex)
	if err != nil {
		return 0, fmt.Errorf("index stream: %w", err)
	}
	c, err := str.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject: "$KV." + BucketIndex + "." + filter, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return 0, fmt.Errorf("count %s: %w", filter, err)
	}
	info := c.CachedInfo()
	_ = str.DeleteConsumer(ctx, info.Name)
	return int(info.NumPending), nil
}
