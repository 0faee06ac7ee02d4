package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

func (e *env) jobsCmd() *cobra.Command {
	c := &cobra.Command{Use: "jobs", Short: "List, show, watch and cancel jobs, and fetch their results"}
	c.AddCommand(e.lsCmd(), e.showCmd(), e.watchCmd(), e.cancelCmd(), e.resultsCmd())
	return c
}

func (e *env) lsCmd() *cobra.Command {
	var o output
	var f ops.Filter
	var since string
	c := &cobra.Command{
		Use:   "ls",
		Short: "List jobs: unfinished ones newest first, then final ones newest finished first",
		Long: `List jobs through the fleet's job index (it reads the unfinished jobs and only as
many hours of final ones as the page needs, never every record).

Statuses: queued (no vendor batch yet), submitted (batch validating), active (batch running,
or its results being merged), final (outcome recorded). Running jobs show their cost so far,
estimated from the requests done and the model's price (PRICE_TABLE).`,
		Example: `  batchfleet jobs ls --status active
  batchfleet jobs ls --status final --outcome partial --since 24h -o json
  batchfleet jobs ls --key-prefix eval- --limit 20 --offset 20`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			var err error
			if f.Since, err = ops.ParseSince(since, e.now()); err != nil {
				return err
			}
			if err := f.Validate(); err != nil {
				return err
			}
			var page ops.Page
			err = e.query(cmd.Context(), func(l *ops.Lister) (err error) {
				page, err = l.List(cmd.Context(), f)
				return err
			})
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.out, page)
			}
			return e.printJobs(page, f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.Status, "status", "", "queued, submitted, active or final")
	fl.StringVar(&f.Outcome, "outcome", "", "succeeded, partial, failed, expired or cancelled (final jobs)")
	fl.StringVar(&f.Model, "model", "", "only jobs of this model")
	fl.StringVar(&since, "since", "", "only jobs created since: a duration back from now (24h, 7d) or an RFC 3339 time")
	fl.StringVar(&f.KeyPrefix, "key-prefix", "", "only keys starting with this")
	fl.IntVar(&f.Limit, "limit", 50, "page size")
	fl.IntVar(&f.Offset, "offset", 0, "skip this many matching jobs (paging)")
	o.add(c)
	return c
}

func (e *env) printJobs(page ops.Page, f ops.Filter) error {
	tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tSTATUS\tVENDOR\tOUTCOME\tMODEL\tPROGRESS\tATTEMPTS\tCOST\tCREATED\tDURATION")
	for _, r := range page.Jobs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Key, r.ListStatus, dash(r.Status), dash(r.Outcome),
			dash(r.Model), progress(r.Done, r.Total), r.Attempts, usd(r.CostSoFarUSD), r.CreatedAt.Local().Format("01-02 15:04:05"), duration(r.Entry, e.now()))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	more := ""
	if page.More {
		more = fmt.Sprintf("; more: --offset %d", f.Offset+len(page.Jobs))
	}
	fmt.Fprintf(e.errOut, "%d jobs (%d index entries and records read%s)\n", len(page.Jobs), page.Read, more)
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func usd(v *float64) string {
	if v == nil {
		return "-"
	}
	return money(*v)
}

// money shows small amounts with enough digits to be told apart.
func money(v float64) string {
	if v != 0 && v < 0.01 {
		return fmt.Sprintf("$%.6f", v)
	}
	return fmt.Sprintf("$%.2f", v)
}

func progress(done, total int) string {
	if total <= 0 {
		return fmt.Sprintf("%d/?", done)
	}
	return fmt.Sprintf("%d/%d %3d%%", done, total, done*100/total)
}

func duration(e jobstore.Entry, now time.Time) string {
	if !e.FinishedAt.IsZero() {
		return e.Duration().Round(time.Millisecond).String()
	}
	return now.Sub(e.CreatedAt).Round(time.Second).String() + " so far"
}

// JobView is `jobs show -o json`: the record, with its listed status and
// cost so far.
type JobView struct {
	*jobstore.Job
	Status       string   `json:"list_status"`
	CostSoFarUSD *float64 `json:"cost_so_far_usd,omitempty"`
}

func (e *env) showCmd() *cobra.Command {
	var o output
	c := &cobra.Command{
		Use:     "show KEY",
		Short:   "Show a job: its record, attempts and batches, usage and cost, and its timeline",
		Example: "  batchfleet jobs show eval-1\n  batchfleet jobs show eval-1 -o json | jq .timeline",
		Args:    oneKey,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			nc, _, st, err := e.store(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			j, err := st.Get(cmd.Context(), args[0])
			if errors.Is(err, jobstore.ErrNotFound) {
				return fmt.Errorf("no job %q", args[0])
			}
			if err != nil {
				return err
			}
			p, err := prices()
			if err != nil {
				return err
			}
			ent := jobstore.EntryOf(j)
			v := JobView{Job: j, Status: ops.ListStatus(ent.State), CostSoFarUSD: ops.CostSoFar(p, &ent)}
			if o.json() {
				return writeJSON(e.out, v)
			}
			return printJob(e.out, v, ent)
		},
	}
	o.add(c)
	return c
}

func printJob(w io.Writer, v JobView, ent jobstore.Entry) error {
	j := v.Job
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "Key:\t%s\n", j.Key)
	fmt.Fprintf(tw, "Status:\t%s\n", v.Status)
	if j.Final {
		fmt.Fprintf(tw, "Outcome:\t%s\n", j.Outcome)
	}
	fmt.Fprintf(tw, "Endpoint:\t%s\n", dash(j.Endpoint))
	fmt.Fprintf(tw, "Model:\t%s\n", dash(ent.Model))
	fmt.Fprintf(tw, "Requests:\t%s", progress(ent.Done, ent.Total))
	if j.Final {
		fmt.Fprintf(tw, " (completed %d, failed %d)", j.Counts.Completed, j.Counts.Failed)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "Batches:\t%s\n", dash(strings.Join(j.BatchIDs(), ", ")))
	fmt.Fprintf(tw, "Created:\t%s\n", j.CreatedAt.Local().Format(time.RFC3339))
	if !j.FinishedAt.IsZero() {
		fmt.Fprintf(tw, "Finished:\t%s (%s)\n", j.FinishedAt.Local().Format(time.RFC3339), j.FinishedAt.Sub(j.CreatedAt).Round(time.Millisecond))
	}
	if j.Usage != nil {
		fmt.Fprintf(tw, "Usage:\t%d input + %d output = %d tokens\n", j.Usage.InputTokens, j.Usage.OutputTokens, j.Usage.TotalTokens)
	}
	cost := "Cost so far:"
	if j.Final {
		cost = "Cost:"
	}
	fmt.Fprintf(tw, "%s\t%s (estimate)\n", cost, usd(v.CostSoFarUSD))
	if j.Error != nil {
		fmt.Fprintf(tw, "Error:\t%s: %s\n", j.Error.Code, j.Error.Message)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nAttempts:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  N\tKEY\tSTATE\tBATCH\tSTATUS\tREQUESTS\tCOMPLETED\tFAILED\tREASON")
	for _, a := range j.Attempts {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\n", a.N, a.Key, a.State, dash(a.BatchID), dash(a.Status), a.Count,
			a.Counts.Completed, a.Counts.Failed, dash(a.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nTimeline:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, ev := range j.Timeline {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", ev.At.Local().Format("15:04:05.000"), ev.Kind, describe(ev))
	}
	return tw.Flush()
}

// describe renders a timeline event's details on one line.
func describe(ev jobstore.Event) string {
	var parts []string
	if ev.Attempt > 0 {
		parts = append(parts, fmt.Sprintf("attempt %d", ev.Attempt))
	}
	if ev.BatchID != "" {
		parts = append(parts, ev.BatchID)
	}
	switch {
	case ev.From != "" || (ev.Kind == jobstore.EventState && ev.To != ""):
		parts = append(parts, dash(ev.From)+" -> "+ev.To)
	case ev.To != "":
		parts = append(parts, ev.To)
	}
	if ev.Counts != nil && ev.Counts.Total > 0 {
		parts = append(parts, fmt.Sprintf("%d/%d done, %d failed", ev.Counts.Completed+ev.Counts.Failed, ev.Counts.Total, ev.Counts.Failed))
	}
	if ev.Detail != "" {
		parts = append(parts, ev.Detail)
	}
	return strings.Join(parts, "  ")
}

func (e *env) watchCmd() *cobra.Command {
	var timeout time.Duration
	c := &cobra.Command{
		Use:   "watch KEY",
		Short: "Follow a job live: a progress bar and its events until it is final, then its batch.completed",
		Long: `Follow a job live: each timeline event as it is recorded, and a progress bar of the requests
done (updated with the fleet's progress events, PROGRESS_INTERVAL), its state and the time
since it was created. When the job is final it prints its batch.completed event (JSON) and
exits 0; it waits for a job that does not exist yet.`,
		Args: oneKey,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			nc, js, st, err := e.store(ctx)
			if err != nil {
				return err
			}
			defer nc.Close()
			w := &watcher{out: e.out, now: e.now, tty: isTerminal(e.out)}
			if err := w.follow(ctx, st, args[0]); err != nil {
				return err
			}
			ev, err := ops.WaitCompleted(ctx, js, args[0])
			if err != nil {
				return fmt.Errorf("wait for batch.completed of %q: %w", args[0], err)
			}
			fmt.Fprintln(e.out, "batch.completed:")
			return writeJSON(e.out, ev)
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (0: never)")
	return c
}

// watcher draws a job's progress.
type watcher struct {
	out   io.Writer
	now   func() time.Time
	tty   bool
	shown int    // timeline events printed
	bar   string // the line on screen (tty)
	head  string // the bar without the elapsed time, last drawn
	j     *jobstore.Job
}

// follow draws until the job is final and its batch.completed published.
func (w *watcher) follow(ctx context.Context, st *jobstore.Store, key string) error {
	updates, err := st.Watch(ctx, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(w.out, "watching %s (Ctrl-C to stop)\n", key)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			w.endLine()
			return ctx.Err()
		case j, ok := <-updates:
			if !ok {
				w.endLine()
				return ctx.Err()
			}
			w.j = j
			w.events()
			w.draw()
			if j.Final && j.Completed {
				w.endLine()
				return nil
			}
		case <-tick.C:
			w.draw()
		}
	}
}

func (w *watcher) events() {
	tl := w.j.Timeline
	if w.shown > len(tl) { // trimmed
		w.shown = 0
	}
	for _, ev := range tl[w.shown:] {
		if ev.Kind == jobstore.EventProgress {
			continue // the bar shows it
		}
		w.endLine()
		fmt.Fprintf(w.out, "%s  %-9s %s\n", ev.At.Local().Format("15:04:05"), ev.Kind, describe(ev))
	}
	w.shown = len(tl)
}

const barWidth = 30

func (w *watcher) draw() {
	if w.j == nil {
		return
	}
	e := jobstore.EntryOf(w.j)
	frac := 0.0
	if e.Total > 0 {
		frac = float64(e.Done) / float64(e.Total)
	}
	n := int(frac * barWidth)
	state := ops.ListStatus(e.State)
	if e.Status != "" && !w.j.Final {
		state += " (" + e.Status + ")"
	}
	if w.j.Final {
		state += " " + w.j.Outcome
	}
	end := w.now()
	if w.j.Final {
		end = w.j.FinishedAt
	}
	head := fmt.Sprintf("[%s%s] %s  %-24s", strings.Repeat("#", n), strings.Repeat("-", barWidth-n), progress(e.Done, e.Total), state)
	line := head + " elapsed " + end.Sub(w.j.CreatedAt).Round(time.Second).String()
	switch {
	case w.tty && line != w.bar:
		fmt.Fprintf(w.out, "\r\033[K%s", line)
		w.bar = line
	case !w.tty && head != w.head:
		fmt.Fprintln(w.out, line) // a log, not a screen: a line each time the bar moves
	}
	w.head = head
}

// endLine ends the bar's line before other output on a terminal.
func (w *watcher) endLine() {
	if w.tty && w.bar != "" {
		fmt.Fprintln(w.out)
		w.bar = ""
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (e *env) cancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel KEY",
		Short: "Cancel a job: publishes batch.cancel; the fleet cancels its batches and ends it cancelled",
		Long: `Cancel a job: publishes batch.cancel {"idempotency_key": KEY}. The fleet cancels the job's
active vendor batch(es) and ends the job with outcome cancelled (requests already done keep
their results). Follow it with 'batchfleet jobs watch KEY'.`,
		Args: oneKey,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, js, st, err := e.store(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			if err := ops.Cancel(cmd.Context(), js, st, args[0]); err != nil {
				if errors.Is(err, jobstore.ErrNotFound) {
					return fmt.Errorf("no job %q", args[0])
				}
				return err
			}
			fmt.Fprintf(e.errOut, "published %s for %s\n", contract.SubjectCancel, args[0])
			return nil
		},
	}
}

func (e *env) resultsCmd() *cobra.Command {
	var file string
	c := &cobra.Command{
		Use:   "results KEY",
		Short: "Write a job's merged per-request results (JSONL, one line per custom_id) to stdout or a file",
		Args:  oneKey,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, js, err := e.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			w := e.out
			if file != "" && file != "-" {
				f, err := os.Create(file)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, err := ops.CopyResults(cmd.Context(), js, args[0], w)
			if errors.Is(err, jobstore.ErrNotFound) {
				return fmt.Errorf("no results for %q (unknown key, not final yet, or past RESULTS_RETENTION)", args[0])
			}
			if err != nil {
				return err
			}
			if w != e.out {
				fmt.Fprintf(e.errOut, "wrote %d bytes to %s\n", n, file)
			}
			return nil
		},
	}
	c.Flags().StringVarP(&file, "output", "o", "", "write to this file instead of stdout")
	return c
}
