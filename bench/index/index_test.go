// Package indexbench measures the operator queries over a large job
// history: `jobs ls --status active --limit 50` and `report --since 24h`
// over 10,000 and then 100,000 job records, in time and in records read.
//
//	go test -run '^$' -bench . -benchtime 1x -v ./bench/index/
package indexbench

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/results"
)

const active = 50 // unfinished jobs at every size

// fill writes final job records from..to (finished over the last 24h,
// one in ten partial) through the store's own write path.
func fill(b *testing.B, st *jobstore.Store, from, to int, now time.Time) {
	b.Helper()
	var g errgroup.Group
	g.SetLimit(32)
	var n atomic.Int64
	for i := from; i < to; i++ {
		g.Go(func() error {
			key := fmt.Sprintf("hist-%07d", i)
			fin := now.Add(-time.Duration(i%86000) * time.Second)
			outcome, counts := contract.OutcomeSucceeded, contract.Counts{Total: 10, Completed: 10}
			if i%10 == 0 {
				outcome, counts = contract.OutcomePartial, contract.Counts{Total: 10, Completed: 9, Failed: 1}
			}
			cost := 0.0001
			j := &jobstore.Job{Key: key, Endpoint: "/v1/chat/completions", Total: 10, Final: true, Completed: true,
				Outcome: outcome, Counts: counts, CostUSD: &cost, Usage: &contract.Usage{InputTokens: 100, OutputTokens: 50, TotalTokens: 150},
				CreatedAt: fin.Add(-90 * time.Second), FinishedAt: fin, CompletedAt: fin,
				Attempts: []jobstore.Attempt{{Key: key, State: jobstore.AttemptFinal, Count: 10, Model: "gpt-4o-mini", BatchID: "batch_" + key, Status: "completed", Counts: counts}}}
			n.Add(1)
			return st.Create(context.Background(), j)
		})
	}
	require.NoError(b, g.Wait())
}

func BenchmarkOperatorQueries(b *testing.B) {
	ns := fleettest.StartNATS(b)
	_, js := fleettest.Connect(b, ns.URL())
	ctx := context.Background()
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	require.NoError(b, err)
	now := time.Now().UTC()
	for i := range active {
		key := fmt.Sprintf("live-%03d", i)
		require.NoError(b, st.Create(ctx, &jobstore.Job{Key: key, Total: 100, Attempts: []jobstore.Attempt{{
			Key: key, State: jobstore.AttemptSubmitted, BatchID: "batch_" + key, Status: contract.StatusInProgress,
			Count: 100, Model: "gpt-4o-mini", EstTokens: 5000, Counts: contract.Counts{Total: 100, Completed: i}}}}))
	}
	l := &ops.Lister{Store: st, Prices: results.DefaultPriceTable()}
	bin := fleettest.BuildBinary(b, "cmd/batchfleet")
	filled := 0
	for _, size := range []int{10_000, 100_000} {
		t0 := time.Now()
		fill(b, st, filled, size, now)
		filled = size
		b.Logf("%d final records written in %s", size, time.Since(t0).Round(time.Millisecond))
		b.Run(fmt.Sprintf("ls-active-limit50/records=%d", size), func(b *testing.B) {
			var p ops.Page
			for b.Loop() {
				p, err = l.List(ctx, ops.Filter{Status: jobstore.StateActive, Limit: 50})
				require.NoError(b, err)
			}
			require.Len(b, p.Jobs, 50)
			b.ReportMetric(float64(p.Read), "reads/op")
			b.Logf("records=%d: ls --status active --limit 50 read %d (index entries + records)", size, p.Read)
		})
		b.Run(fmt.Sprintf("ls-final-partial-limit50/records=%d", size), func(b *testing.B) {
			var p ops.Page
			for b.Loop() {
				p, err = l.List(ctx, ops.Filter{Status: jobstore.StateFinal, Outcome: contract.OutcomePartial, Limit: 50})
				require.NoError(b, err)
			}
			require.Len(b, p.Jobs, 50)
			b.ReportMetric(float64(p.Read), "reads/op")
		})
		// Cold: the hours' rollups are made by this report (the rescuer
		// makes each one when its hour closes, so a fleet's report is warm).
		t0 = time.Now()
		r, err := l.Report(ctx, now.Add(-24*time.Hour))
		require.NoError(b, err)
		b.Logf("records=%d: report --since 24h cold (making %d hour rollups): %s, read %d entries", size, r.Rollups, time.Since(t0).Round(time.Millisecond), r.Read)
		b.Run(fmt.Sprintf("report-24h/records=%d", size), func(b *testing.B) {
			var r ops.Report
			for b.Loop() {
				r, err = l.Report(ctx, now.Add(-24*time.Hour))
				require.NoError(b, err)
			}
			require.Equal(b, size, r.Jobs)
			require.Equal(b, active, r.Unfinished["active"])
			b.ReportMetric(float64(r.Read), "reads/op")
			b.Logf("records=%d: report --since 24h read %d entries and %d rollups; %d jobs, p50 %.0fs", size, r.Read, r.Rollups, r.Jobs, r.P50Seconds)
		})
		// The command itself, process start and connect included.
		for _, args := range [][]string{
			{"jobs", "ls", "--status", "active", "--limit", "50", "-o", "json"},
			{"report", "--since", "24h", "-o", "json"},
		} {
			t0 := time.Now()
			out, err := exec.Command(bin, append([]string{"--nats", ns.URL()}, args...)...).Output()
			require.NoError(b, err)
			el := time.Since(t0)
			var v map[string]any
			require.NoError(b, json.Unmarshal(out, &v))
			b.Logf("records=%d: `batchfleet %v` took %s (read %v)", size, args[:len(args)-2], el.Round(time.Millisecond), v["read"])
		}
	}
}
