package ops

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// Statuses a list can filter on: the index states, with "final" covering
// jobs whose batch.completed is still being published.
var Statuses = []string{jobstore.StateQueued, jobstore.StateSubmitted, jobstore.StateActive, jobstore.StateFinal}

// Outcomes a list can filter on.
var Outcomes = []string{contract.OutcomeSucceeded, contract.OutcomePartial, contract.OutcomeFailed, contract.OutcomeExpired, contract.OutcomeCancelled}

// Filter selects jobs for List.
type Filter struct {
	// Status is one of Statuses, or "" for every job.
	Status string
	// Outcome is one of Outcomes (final jobs only), or "".
	Outcome string
	// Model matches the job's model exactly, or "".
	Model string
	// KeyPrefix matches the start of the idempotency key, or "".
	KeyPrefix string
	// Since keeps jobs created at or after it (zero: every job kept).
	Since time.Time
	// Limit is the page size (default 50); Offset skips that many matches.
	Limit, Offset int
}

// Validate names the first bad field.
func (f Filter) Validate() error {
	if f.Status != "" && !slices.Contains(Statuses, f.Status) {
		return fmt.Errorf("unknown status %q (one of %s)", f.Status, strings.Join(Statuses, ", "))
	}
	if f.Outcome != "" && !slices.Contains(Outcomes, f.Outcome) {
		return fmt.Errorf("unknown outcome %q (one of %s)", f.Outcome, strings.Join(Outcomes, ", "))
	}
	if f.Outcome != "" && f.Status != "" && f.Status != jobstore.StateFinal {
		return fmt.Errorf("an outcome is only known for final jobs, not %s ones", f.Status)
	}
	if f.Limit < 0 || f.Offset < 0 {
		return errors.New("limit and offset must not be negative")
	}
	return nil
}

func (f Filter) match(e *jobstore.Entry) bool {
	return (f.Outcome == "" || e.Outcome == f.Outcome) && (f.Model == "" || e.Model == f.Model) &&
		strings.HasPrefix(e.Key, f.KeyPrefix) && !e.CreatedAt.Before(f.Since)
}

// Row is one listed job: its index entry, its listed status and the cost
// so far of a running job.
type Row struct {
	jobstore.Entry
	// ListStatus is the status the job is listed under (queued, submitted,
	// active, final); Entry.Status is its newest batch's vendor status.
	ListStatus string `json:"list_status"`
	// CostSoFarUSD estimates what a job has cost until now: its cost once
	// final, else the input tokens of the requests done at the model's
	// batch price (nil when the model's price or the job's size is unknown).
	CostSoFarUSD *float64 `json:"cost_so_far_usd,omitempty"`
}

// Page is a List result.
type Page struct {
	Jobs []Row `json:"jobs"`
	// More is true when jobs past this page match (list again with
	// Offset + len(Jobs)).
	More bool `json:"more"`
	// Read counts the index entries and records read to answer.
	Read int `json:"read"`
}

// Lister reads jobs through the index.
type Lister struct {
	Store  *jobstore.Store
	Prices results.PriceTable
	Now    func() time.Time
}

func (l *Lister) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}

// ListStatus maps an index state onto a listed status.
func ListStatus(state string) string {
	if state == jobstore.StateEnding {
		return jobstore.StateFinal
	}
	return state
}

// CostSoFar estimates a job's cost until now (see Row.CostSoFarUSD).
func CostSoFar(p results.PriceTable, e *jobstore.Entry) *float64 {
	if e.CostUSD != nil {
		return e.CostUSD
	}
	if e.Total <= 0 || e.EstTokens <= 0 {
		return nil
	}
	usd, ok := p.Cost(e.Model, results.Usage{InputTokens: e.EstTokens * int64(e.Done) / int64(e.Total)})
	if !ok {
		return nil
	}
	return &usd
}

func (l *Lister) row(e jobstore.Entry) Row {
	return Row{Entry: e, ListStatus: ListStatus(e.State), CostSoFarUSD: CostSoFar(l.Prices, &e)}
}

// List returns the jobs matching f, unfinished ones newest created first,
// then final ones newest finished first. It reads the index entries of the
// unfinished states asked for, the hour partitions of final jobs only as
// far back as the page needs, and the records of the unfinished jobs on the
// page (their entries may lag their records by one write).
func (l *Lister) List(ctx context.Context, f Filter) (Page, error) {
	if err := f.Validate(); err != nil {
		return Page{}, err
	}
	f.Limit = cmp.Or(f.Limit, 50)
	want := f.Offset + f.Limit + 1 // one more tells whether there is more
	var p Page
	var rows []Row
	var open []string
	switch f.Status {
	case "":
		open = jobstore.OpenStates
	case jobstore.StateFinal:
		open = []string{jobstore.StateEnding}
	default:
		open = []string{f.Status}
	}
	if f.Outcome != "" {
		open = []string{jobstore.StateEnding}
	}
	var live []Row
	for _, st := range open {
		n, err := l.Store.Scan(ctx, st, time.Time{}, func(e jobstore.IndexedEntry) error {
			if f.match(&e.Entry) {
				live = append(live, l.row(e.Entry))
			}
			return nil
		})
		p.Read += n
		if err != nil {
			return p, err
		}
	}
	slices.SortFunc(live, func(a, b Row) int { return b.CreatedAt.Compare(a.CreatedAt) })
	live = dedupe(live)
	rows = append(rows, live...)
	if f.Status == "" || f.Status == jobstore.StateFinal {
		hours, err := l.Store.FinalHours(ctx, f.Since)
		if err != nil {
			return p, err
		}
		for _, h := range hours {
			if len(rows) >= want {
				break
			}
			var hour []Row
			n, err := l.Store.ScanHour(ctx, h, func(e jobstore.IndexedEntry) error {
				if f.match(&e.Entry) {
					hour = append(hour, l.row(e.Entry))
				}
				return nil
			})
			p.Read += n
			if err != nil {
				return p, err
			}
			slices.SortFunc(hour, func(a, b Row) int { return b.FinishedAt.Compare(a.FinishedAt) })
			rows = append(rows, hour...)
		}
	}
	rows = dedupe(rows)
	if f.Offset >= len(rows) {
		return p, nil
	}
	rows = rows[f.Offset:]
	if len(rows) > f.Limit {
		rows, p.More = rows[:f.Limit], true
	}
	// Unfinished jobs are shown as their records are now; one whose record
	// moved to another status than the one asked for (its entry lagged) is
	// left out.
	shown := rows[:0]
	for _, r := range rows {
		if r.ListStatus != jobstore.StateFinal || r.State != jobstore.StateFinal {
			j, err := l.Store.Get(ctx, r.Key)
			p.Read++
			if errors.Is(err, jobstore.ErrNotFound) {
				continue
			}
			if err != nil {
				return p, err
			}
			r = l.row(jobstore.EntryOf(j))
			if (f.Status != "" && r.ListStatus != f.Status) || !f.match(&r.Entry) {
				continue
			}
		}
		shown = append(shown, r)
	}
	p.Jobs = shown
	return p, nil
}

// dedupe keeps the first row of each key (an entry left behind by a
// writer that died before removing it shows the job twice).
func dedupe(rows []Row) []Row {
	seen := make(map[string]bool, len(rows))
	return slices.DeleteFunc(rows, func(r Row) bool {
		if seen[r.Key] {
			return true
		}
		seen[r.Key] = true
		return false
	})
}

// Report is the fleet's report over a window: the jobs unfinished now, and
// the jobs that ended within the window, from the durable index (it
// survives restarts).
type Report struct {
	Since       time.Time `json:"since"`
	GeneratedAt time.Time `json:"generated_at"`
	// Unfinished counts the jobs not yet final, by listed status.
	Unfinished map[string]int `json:"unfinished"`
	Totals
	Models []ModelReport `json:"models"`
	// Read counts the index entries read; Rollups the hour rollups used
	// in their place.
	Read    int `json:"read"`
	Rollups int `json:"rollups"`
}

// Totals sums the final jobs of a window.
type Totals struct {
	// Jobs counts the jobs that ended in the window; ByOutcome splits them.
	Jobs      int            `json:"jobs"`
	ByOutcome map[string]int `json:"by_outcome"`
	// Durations are from a job's record creation to its outcome
	// (batch.completed completed_at - created_at), to the millisecond, in
	// seconds; P50 and P95 are nearest-rank percentiles.
	AvgSeconds float64 `json:"avg_seconds"`
	P50Seconds float64 `json:"p50_seconds"`
	P95Seconds float64 `json:"p95_seconds"`
	// Requests sums the final request_counts.
	Requests contract.Counts `json:"requests"`
	Usage    contract.Usage  `json:"usage"`
	// CostUSD sums the jobs' estimated batch cost; SyncCostUSD is what the
	// same usage costs at the synchronous price; SavingsUSD the difference.
	// UnpricedJobs had no price (unknown model).
	CostUSD      float64 `json:"cost_usd"`
	SyncCostUSD  float64 `json:"sync_cost_usd"`
	SavingsUSD   float64 `json:"savings_usd"`
	UnpricedJobs int     `json:"unpriced_jobs"`
}

// ModelReport is the totals of one model.
type ModelReport struct {
	Model string `json:"model"`
	Totals
}

func totals(a *jobstore.Aggregate, discount float64) Totals {
	t := Totals{Jobs: a.Jobs, ByOutcome: a.ByOutcome, Requests: a.Requests, Usage: a.Usage, CostUSD: a.CostUSD, UnpricedJobs: a.Unpriced}
	if t.ByOutcome == nil {
		t.ByOutcome = map[string]int{}
	}
	if discount < 1 {
		t.SyncCostUSD = a.CostUSD / (1 - discount)
	}
	t.SavingsUSD = t.SyncCostUSD - t.CostUSD
	if len(a.Durations) == 0 {
		return t
	}
	ds := make([]time.Duration, len(a.Durations))
	var sum time.Duration
	for i, ms := range a.Durations {
		ds[i] = time.Duration(ms) * time.Millisecond
		sum += ds[i]
	}
	slices.Sort(ds)
	t.AvgSeconds = (sum / time.Duration(len(ds))).Seconds()
	t.P50Seconds = Percentile(ds, 0.50).Seconds()
	t.P95Seconds = Percentile(ds, 0.95).Seconds()
	return t
}

// Percentile is the nearest-rank percentile p (0..1] of sorted ds.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Report builds the report of the jobs that ended at or after since, and
// of the unfinished ones now. It reads the unfinished entries, the final
// entries of the current hour and of the hour since falls in, and for
// every other hour its rollup (kept in the index, checked against the
// number of entries in the hour, remade when that changed); never a
// record.
func (l *Lister) Report(ctx context.Context, since time.Time) (Report, error) {
	r := Report{Since: since.UTC(), GeneratedAt: l.now().UTC(), Unfinished: map[string]int{}}
	for _, s := range Statuses[:3] {
		r.Unfinished[s] = 0
	}
	models := map[string]*jobstore.Aggregate{}
	model := func(name string) *jobstore.Aggregate {
		a := models[name]
		if a == nil {
			a = &jobstore.Aggregate{}
			models[name] = a
		}
		return a
	}
	seen := map[string]bool{}
	ended := func(e jobstore.IndexedEntry) error {
		if seen[e.Key] || e.FinishedAt.Before(since) {
			return nil
		}
		seen[e.Key] = true
		model(e.Model).Add(&e.Entry)
		return nil
	}
	n, err := l.Store.Scan(ctx, jobstore.StateEnding, time.Time{}, ended)
	r.Read += n
	if err != nil {
		return r, err
	}
	hours, err := l.Store.FinalHours(ctx, since)
	if err != nil {
		return r, err
	}
	for _, h := range hours {
		if !h.Before(since) { // the whole hour is in the window
			roll, n, ok, err := l.Store.HourRollup(ctx, h)
			r.Read += n
			if err != nil {
				return r, err
			}
			if ok {
				r.Rollups++
				for name, a := range roll.Models {
					model(name).Merge(a)
				}
				continue
			}
		}
		n, err := l.Store.ScanHour(ctx, h, ended)
		r.Read += n
		if err != nil {
			return r, err
		}
	}
	for _, st := range []string{jobstore.StateActive, jobstore.StateSubmitted, jobstore.StateQueued} {
		n, err := l.Store.Scan(ctx, st, time.Time{}, func(e jobstore.IndexedEntry) error {
			if !seen[e.Key] {
				seen[e.Key] = true
				r.Unfinished[st]++
			}
			return nil
		})
		r.Read += n
		if err != nil {
			return r, err
		}
	}
	all := &jobstore.Aggregate{}
	for name, a := range models {
		all.Merge(a)
		r.Models = append(r.Models, ModelReport{Model: name, Totals: totals(a, l.Prices.BatchDiscount)})
	}
	r.Totals = totals(all, l.Prices.BatchDiscount)
	slices.SortFunc(r.Models, func(a, b ModelReport) int { return strings.Compare(a.Model, b.Model) })
	return r, nil
}

// ParseSince reads a --since value (CLI and dashboard): a duration back
// from now ("24h", "90m", "7d" as days) or an RFC 3339 time. "" is the
// zero time (no bound).
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("since %q: a duration back from now must not be negative", s)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q is neither a duration (24h, 90m, 7d) nor an RFC 3339 time (2006-01-02T15:04:05Z)", s)
	}
	return t, nil
}
