package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchfleet/batchfleet/pkg/ops"
)

func (e *env) reportCmd() *cobra.Command {
	var o output
	since := "24h"
	c := &cobra.Command{
		Use:   "report",
		Short: "The fleet's report: unfinished jobs, and the jobs that ended in a window by outcome, duration, requests, tokens, cost and savings, per model",
		Long: `The report is built from the durable job index in JetStream (it survives restarts of the
fleet and of this command): the jobs unfinished now by status, and the jobs that ended since
--since: counts by outcome, average / p50 / p95 duration (record created to outcome, as
batch.completed's completed_at - created_at; nearest-rank percentiles), requests completed
and failed, tokens, the estimated batch cost and the savings against the synchronous price
(PRICE_TABLE's batch_discount), in total and per model.`,
		Example: "  batchfleet report\n  batchfleet report --since 7d -o json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			from, err := ops.ParseSince(since, e.now())
			if err != nil {
				return err
			}
			var r ops.Report
			err = e.query(cmd.Context(), func(l *ops.Lister) (err error) {
				r, err = l.Report(cmd.Context(), from)
				return err
			})
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.out, r)
			}
			return printReport(e.out, r)
		},
	}
	c.Flags().StringVar(&since, "since", since, "the window: a duration back from now (24h, 7d) or an RFC 3339 time")
	o.add(c)
	return c
}

func printReport(w io.Writer, r ops.Report) error {
	fmt.Fprintf(w, "Report since %s (generated %s)\n\n", r.Since.Local().Format(time.RFC3339), r.GeneratedAt.Local().Format(time.RFC3339))
	fmt.Fprintf(w, "Unfinished now: queued %d, submitted %d, active %d\n\n", r.Unfinished["queued"], r.Unfinished["submitted"], r.Unfinished["active"])
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "MODEL\tJOBS\tOUTCOMES\tAVG\tP50\tP95\tREQUESTS\tCOMPLETED\tFAILED\tTOKENS\tCOST\tSYNC COST\tSAVINGS\t")
	row := func(name string, t ops.Totals) {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", name, t.Jobs, outcomes(t.ByOutcome),
			secs(t.AvgSeconds), secs(t.P50Seconds), secs(t.P95Seconds), t.Requests.Total, t.Requests.Completed, t.Requests.Failed,
			t.Usage.TotalTokens, money(t.CostUSD), money(t.SyncCostUSD), money(t.SavingsUSD))
	}
	for _, m := range r.Models {
		row(dash(m.Model), m.Totals)
	}
	row("TOTAL", r.Totals)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.UnpricedJobs > 0 {
		fmt.Fprintf(w, "\n%d jobs have no price (model not in PRICE_TABLE): not in the cost columns\n", r.UnpricedJobs)
	}
	fmt.Fprintf(w, "\n(%d index entries read)\n", r.Read)
	return nil
}

func outcomes(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, o := range ops.Outcomes {
		if m[o] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", o, m[o]))
		}
	}
	for o, n := range m {
		if !slices.Contains(ops.Outcomes, o) {
			parts = append(parts, fmt.Sprintf("%s %d", o, n))
		}
	}
	return strings.Join(parts, ", ")
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
