package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/presence"
)

// throughputWindow is the window of the jobs/s figure.
const throughputWindow = 5 * time.Minute

// newestUnfinished is how many unfinished jobs the overview lists.
const newestUnfinished = 10

// dlqSubjects is what the dead-letter stream captures.
const dlqSubjects = "batch.dlq.>"

type count struct {
	Name string
	N    int
}

type overviewData struct {
	// Unfinished counts jobs not yet final by listed status.
	Unfinished      []count
	UnfinishedTotal int
	// ActiveBatches are the unfinished jobs whose vendor batch exists
	// (submitted + active).
	ActiveBatches int
	// Last24h counts the jobs that ended in the last 24h by outcome.
	Last24h      []count
	Last24hTotal int
	// Recent is the number of jobs that ended in the last 5 minutes;
	// JobsPerSecond is Recent / 300.
	Recent        int
	JobsPerSecond float64
	// Today is the report since UTC midnight.
	Today ops.Totals
	// DLQSize is the number of messages in the dead-letter stream.
	DLQSize uint64
	Workers []presence.Worker
	Newest  []ops.Row
}

func (d *dashboard) handleOverview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := pageContext(r)
	defer cancel()
	data, err := d.overview(ctx)
	if err != nil {
		d.internalError(w, r, "read overview", err)
		return
	}
	d.render(w, http.StatusOK, "overview.html", page{Title: "Overview", Nav: "overview", Refresh: d.refresh, Data: data})
}

// overview reads the overview's parts concurrently.
func (d *dashboard) overview(ctx context.Context) (*overviewData, error) {
	now := d.o.Now()
	var day, today, recent ops.Report
	var data overviewData
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		day, err = d.lister.Report(gctx, now.Add(-24*time.Hour))
		return wrap("report of 24h", err)
	})
	g.Go(func() (err error) {
		today, err = d.lister.Report(gctx, now.UTC().Truncate(24*time.Hour))
		return wrap("report of today", err)
	})
	g.Go(func() (err error) {
		recent, err = d.lister.Report(gctx, now.Add(-throughputWindow))
		return wrap("report of 5m", err)
	})
	g.Go(func() (err error) { data.DLQSize, err = dlqSize(gctx, d.o.JS); return err })
	g.Go(func() (err error) { data.Workers, err = presence.List(gctx, d.o.JS); return wrap("list workers", err) })
	g.Go(func() error {
		p, err := d.lister.List(gctx, ops.Filter{Limit: newestUnfinished})
		for _, row := range p.Jobs {
			if row.ListStatus != jobstore.StateFinal {
				data.Newest = append(data.Newest, row)
			}
		}
		return wrap("list unfinished jobs", err)
	})
	if err := g.Wait(); err != nil {
		return nil, err
	}
	for _, s := range ops.Statuses[:3] { // queued, submitted, active
		n := day.Unfinished[s]
		data.Unfinished = append(data.Unfinished, count{s, n})
		data.UnfinishedTotal += n
	}
	data.ActiveBatches = day.Unfinished[jobstore.StateSubmitted] + day.Unfinished[jobstore.StateActive]
	for _, o := range ops.Outcomes {
		data.Last24h = append(data.Last24h, count{o, day.ByOutcome[o]})
	}
	data.Last24hTotal = day.Jobs
	data.Recent = recent.Jobs
	data.JobsPerSecond = float64(recent.Jobs) / throughputWindow.Seconds()
	data.Today = today.Totals
	return &data, nil
}

// dlqSize is the number of messages in the stream that captures
// batch.dlq.> (0 before any worker created it).
func dlqSize(ctx context.Context, js jetstream.JetStream) (uint64, error) {
	name, err := js.StreamNameBySubject(ctx, dlqSubjects)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("find the stream of %s: %w", dlqSubjects, err)
	}
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("open stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", name, err)
	}
	return info.State.Msgs, nil
}

// wrap names what failed; nil stays nil.
func wrap(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
