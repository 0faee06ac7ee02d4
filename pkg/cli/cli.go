// Package cli is the batchfleet operator command: jobs (ls, show, watch,
// cancel, results), report, dlq, publish, items publish, ui, index and dev, built on
// spf13/cobra. Every command prints a table for people or, with -o json,
// JSON for scripts; errors go to stderr with a non-zero exit.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// DevNATS is the dev fleet's NATS URL, the default without NATS_URL.
const DevNATS = "nats://127.0.0.1:14222"

// env holds what every command shares.
type env struct {
	natsURL string
	out     io.Writer
	errOut  io.Writer
	now     func() time.Time
}

// Execute runs the command line args (without the program name) and
// returns the process exit code.
func Execute(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := New(stdout, stderr)
	root.SetArgs(LongFlags(root, args))
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "batchfleet:", err)
		return 1
	}
	return 0
}

// New builds the command tree.
func New(stdout, stderr io.Writer) *cobra.Command {
	e := &env{out: stdout, errOut: stderr, now: time.Now}
	root := &cobra.Command{
		Use:   "batchfleet",
		Short: "Operate a batchfleet: jobs, the report, dead letters, the dashboard, a dev fleet",
		Long: `batchfleet is the operator tool of a batchfleet fleet (submitters, pollers, notifiers
on NATS JetStream and Redis). It reads the fleet's durable records in JetStream: it needs
NATS_URL (or --nats), nothing else.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	def := os.Getenv("NATS_URL")
	if def == "" {
		def = DevNATS
	}
	root.PersistentFlags().StringVar(&e.natsURL, "nats", def, "NATS URL ($NATS_URL, else the dev fleet's)")
	root.AddCommand(e.jobsCmd(), e.reportCmd(), e.dlqCmd(), e.publishCmd(), e.itemsCmd(), e.uiCmd(), e.devCmd(), e.indexCmd())
	// Before the jobs group: `batchfleet job KEY` and `batchfleet results KEY`.
	root.AddCommand(e.hidden(e.showCmd(), "job"), e.hidden(e.resultsCmd(), "results"))
	return root
}

func (e *env) hidden(c *cobra.Command, name string) *cobra.Command {
	c.Use = strings.Replace(c.Use, strings.Fields(c.Use)[0], name, 1)
	c.Hidden = true
	return c
}

// LongFlags lets the single-dash long flags of earlier releases
// (`publish -key K -wait`) keep working: "-name" and "-name=v" become
// "--name..." when name is a long flag of some command.
func LongFlags(root *cobra.Command, args []string) []string {
	long := map[string]bool{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		visit := func(f *pflag.Flag) { long[f.Name] = true }
		c.Flags().VisitAll(visit)
		c.PersistentFlags().VisitAll(visit)
		for _, s := range c.Commands() {
			walk(s)
		}
	}
	walk(root)
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "--" {
			copy(out[i:], args[i:])
			break
		}
		if len(a) > 2 && a[0] == '-' && a[1] != '-' {
			name, _, _ := strings.Cut(a[1:], "=")
			if len(name) > 1 && long[name] {
				out[i] = "-" + a
			}
		}
	}
	return out
}

// connect opens NATS and JetStream at --nats, authenticated and secured by
// the workers' variables (NATS_CREDS, NATS_NKEY_FILE, NATS_CA_FILE,
// NATS_CERT_FILE, NATS_KEY_FILE).
func (e *env) connect() (*nats.Conn, jetstream.JetStream, error) {
	link, err := config.LoadNATS(func(k string) (string, bool) {
		if k == "NATS_URL" {
			return e.natsURL, true
		}
		return os.LookupEnv(k)
	})
	if err != nil {
		return nil, nil, err
	}
	opts, err := lifecycle.NATSOptions(link)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(e.natsURL, append(opts, nats.Timeout(5*time.Second), nats.Name("batchfleet-cli"))...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to NATS at %s: %w", config.RedactURL(e.natsURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// store opens the job store (its buckets are created when missing, so a
// fleet that has not run yet lists nothing rather than failing).
func (e *env) store(ctx context.Context) (*nats.Conn, jetstream.JetStream, *jobstore.Store, error) {
	nc, js, err := e.connect()
	if err != nil {
		return nil, nil, nil, err
	}
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	if err != nil {
		nc.Close()
		return nil, nil, nil, fmt.Errorf("open the job store: %w", err)
	}
	return nc, js, st, nil
}

// prices reads PRICE_TABLE as the workers do.
func prices() (results.PriceTable, error) {
	return results.ParsePriceTable(os.Getenv("PRICE_TABLE"))
}

// query runs fn with a Lister over the fleet's job index (PRICE_TABLE
// prices), then closes the connection.
func (e *env) query(ctx context.Context, fn func(*ops.Lister) error) error {
	p, err := prices()
	if err != nil {
		return err
	}
	nc, _, st, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer nc.Close()
	return fn(&ops.Lister{Store: st, Prices: p, Now: e.now})
}

// output is the -o flag of a command.
type output struct{ format string }

func (o *output) add(c *cobra.Command) {
	c.Flags().StringVarP(&o.format, "output", "o", "table", "output format: table or json")
}

func (o *output) check() error {
	switch o.format {
	case "table", "json":
		return nil
	}
	return fmt.Errorf("unknown output format %q (table or json)", o.format)
}

func (o *output) json() bool { return o.format == "json" }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

var errNeedKey = errors.New("give the job's idempotency key")

func oneKey(_ *cobra.Command, args []string) error {
	if len(args) != 1 {
		return errNeedKey
	}
	return nil
}
