package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

func (e *env) dlqCmd() *cobra.Command {
	c := &cobra.Command{Use: "dlq", Short: "Dead letters: invalid requests (batch.dlq.requests) and undelivered webhooks (batch.dlq.webhooks)"}
	var o output
	subject := "batch.dlq.>"
	ls := &cobra.Command{
		Use: "ls", Aliases: []string{"list"},
		Short: "List dead letters with their error headers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			nc, js, err := e.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			letters, err := ops.ListDLQ(cmd.Context(), js, subject)
			if err != nil {
				return err
			}
			if o.json() {
				return writeJSON(e.out, letters)
			}
			tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tSUBJECT\tERROR\tDATA")
			for _, l := range letters {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", l.Seq, l.Time.Local().Format("01-02 15:04:05"), l.Subject,
					dash(strings.Join(errHeaders(l.Headers), " ")), clip(l.Data, 60))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(e.errOut, "%d dead letters on %s\n", len(letters), subject)
			return nil
		},
	}
	ls.Flags().StringVar(&subject, "subject", subject, "dead-letter subject (batch.dlq.requests, batch.dlq.webhooks)")
	o.add(ls)
	var ro output
	var url string
	replay := &cobra.Command{
		Use: "replay", Aliases: []string{"replay-webhooks"},
		Short: "Deliver dead-lettered webhooks again (signed with WEBHOOK_SECRET), to the URL each was for",
		Long: `Deliver dead-lettered webhooks (batch.dlq.webhooks) again, each to the URL it was for (or
only those for --url), signed with WEBHOOK_SECRET. Dead-lettered requests are not replayed:
they were invalid; fix them and publish them again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := ro.check(); err != nil {
				return err
			}
			nc, js, err := e.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			res, err := ops.ReplayWebhooks(cmd.Context(), js, os.Getenv("WEBHOOK_SECRET"), url)
			if err != nil {
				return err
			}
			if ro.json() {
				return writeJSON(e.out, res)
			}
			tw := tabwriter.NewWriter(e.out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tURL\tWEBHOOK ID\tRESULT")
			for _, r := range res {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", r.Seq, r.URL, r.ID, cmpOr(r.Error, "delivered"))
			}
			return tw.Flush()
		},
	}
	replay.Flags().StringVar(&url, "url", "", "only letters for this webhook URL")
	ro.add(replay)
	c.AddCommand(ls, replay)
	return c
}

func errHeaders(h map[string][]string) []string {
	var out []string
	for k, v := range h {
		if strings.HasPrefix(strings.ToLower(k), "batchfleet-error") || strings.Contains(strings.ToLower(k), "error") {
			out = append(out, k+"="+strings.Join(v, ","))
		}
	}
	return out
}

func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func (e *env) publishCmd() *cobra.Command {
	var key string
	var wait bool
	provider := contract.ProviderOpenAI
	timeout := 10 * time.Minute
	c := &cobra.Command{
		Use:   "publish FILE",
		Short: "Publish a job: an OpenAI batch input file (.jsonl), an Anthropic one (--provider anthropic) or a batch.requests message (.json)",
		Long: `Publish a job to batch.requests. A .jsonl file is an OpenAI batch input file (one request per
line); it is checked line by line and sent inline when it fits one NATS message, otherwise put
into the batch_intake object store and published as input_object. Any other file is a
batch.requests JSON message (--key replaces its idempotency_key).

With --provider anthropic, FILE holds Anthropic Message Batches requests, one
{"custom_id": "...", "params": {...Messages API parameters...}} per line (at most 100,000):
each becomes a request {custom_id, body: params} of an anthropic job (endpoint /v1/messages),
checked line by line before anything is sent and published inline or as input_object alike.`,
		Example: `  batchfleet publish --key eval-1 --wait examples/sample.jsonl
  batchfleet publish --provider anthropic --key claude-eval-1 --wait claude.jsonl`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("publish takes one FILE")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var size int64
			switch provider {
			case contract.ProviderOpenAI:
			case contract.ProviderAnthropic:
				if err := checkAnthropicKey(key); err != nil {
					return err
				}
				var err error
				if _, size, err = checkAnthropicFile(args[0]); err != nil {
					return err
				}
			default:
				return fmt.Errorf("--provider %q: %s or %s", provider, contract.ProviderOpenAI, contract.ProviderAnthropic)
			}
			nc, js, err := e.connect()
			if err != nil {
				return err
			}
			defer nc.Close()
			var req contract.Request
			n := 0
			if provider == contract.ProviderAnthropic {
				if req, n, err = publishAnthropic(ctx, js, key, args[0], size, nc.MaxPayload()); err != nil {
					return err
				}
			} else if strings.HasSuffix(args[0], ".jsonl") {
				if key == "" {
					return errors.New("--key is required for a JSONL file")
				}
				if req, n, err = ops.PublishFile(ctx, js, ops.FileJob{Key: key, Path: args[0], MaxPayload: nc.MaxPayload()}); err != nil {
					return err
				}
			} else {
				data, err := os.ReadFile(args[0])
				if err != nil {
					return err
				}
				if req, _, err = contract.Decode(data); err != nil {
					return err
				}
				if key != "" {
					req.IdempotencyKey = key
				}
				if err := ops.Publish(ctx, js, req); err != nil {
					return err
				}
				n = len(req.Requests)
			}
			how := "inline"
			if req.InputObject != "" {
				how = "input_object " + contract.BucketIntake + "/" + req.InputObject
			}
			fmt.Fprintf(e.errOut, "published %s (%d requests, %s) to %s\n", req.IdempotencyKey, n, how, contract.SubjectRequests)
			if !wait {
				return nil
			}
			wctx, cancel := contextWithTimeout(ctx, timeout)
			defer cancel()
			ev, err := ops.WaitCompleted(wctx, js, req.IdempotencyKey)
			if err != nil {
				return fmt.Errorf("wait for batch.completed: %w", err)
			}
			return writeJSON(e.out, ev)
		},
	}
	c.Flags().StringVar(&key, "key", "", "idempotency key (required for a JSONL file)")
	c.Flags().StringVar(&provider, "provider", provider, "the job's vendor: openai, or anthropic for a file of Anthropic batch requests ({\"custom_id\", \"params\"} lines)")
	c.Flags().BoolVar(&wait, "wait", false, "wait for the job's batch.completed and print it")
	c.Flags().DurationVar(&timeout, "timeout", timeout, "how long --wait waits")
	return c
}

func (e *env) indexCmd() *cobra.Command {
	c := &cobra.Command{Use: "index", Short: "Maintain the job index (batch_index)"}
	c.AddCommand(&cobra.Command{
		Use:   "rebuild",
		Short: "Rewrite every job's index entry from its record (after an upgrade from a fleet without the index)",
		Long: `Rewrite every job's index entry from its record. The fleet keeps the index with every
write and its rescuer repairs entries of unfinished jobs; a rebuild is needed only for records
written by a release without the index. It reads every record once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			nc, _, st, err := e.store(cmd.Context())
			if err != nil {
				return err
			}
			defer nc.Close()
			n := 0
			err = st.Each(cmd.Context(), func(j *jobstore.Job) error {
				n++
				return st.Reindex(cmd.Context(), j, "")
			})
			fmt.Fprintf(e.errOut, "reindexed %d jobs\n", n)
			return err
		},
	})
	return c
}
