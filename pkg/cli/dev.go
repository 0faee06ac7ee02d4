package cli

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/batchfleet/batchfleet/pkg/devfleet"
)

func (e *env) devCmd() *cobra.Command {
	o := devfleet.Options{DataDir: ".batchfleet-dev", NATSAddr: "127.0.0.1:14222", EmulatorAddr: "127.0.0.1:18080"}
	var demo bool
	var uiAddr, logFormat string
	c := &cobra.Command{
		Use:   "dev",
		Short: "Run the whole fleet in one process on embedded defaults (NATS JetStream, Redis, the vendor emulator, the dashboard)",
		Long: `Run the whole fleet in one process: an embedded NATS JetStream server, a redis-server child
(or REDIS_URL; an in-process Redis when redis-server is not installed), the vendor emulator
(OpenAI's Batch API and Anthropic's Message Batches; the workers get OPENAI_* and ANTHROPIC_*
settings pointing at it), one submitter, poller and notifier, and the web dashboard. Logs are coloured,
human-readable lines on a terminal and JSON otherwise (--log json|console to choose).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			var log io.Writer = os.Stdout
			switch logFormat {
			case "", "auto":
				if isTerminal(os.Stdout) {
					log = console(os.Stdout)
				}
			case "console":
				log = console(os.Stdout)
			case "json":
			default:
				return fmt.Errorf("--log %q: auto, console or json", logFormat)
			}
			o.Log = log
			o.RedisURL = os.Getenv("REDIS_URL")
			o.Env = os.LookupEnv
			ready := make(chan devfleet.Addrs, 1)
			o.Ready = func(a devfleet.Addrs) { ready <- a }
			errc := make(chan error, 1)
			go func() { errc <- devfleet.Run(ctx, o) }()
			var a devfleet.Addrs
			select {
			case err := <-errc:
				return err
			case a = <-ready:
			}
			claude, err := writeDemoClaude(o.DataDir)
			if err != nil {
				return err
			}
			ui := "off"
			if uiAddr != "" {
				ln, err := net.Listen("tcp", uiAddr)
				if err != nil {
					return fmt.Errorf("dashboard: %w", err)
				}
				e.natsURL = a.NATSURL
				srv, err := e.dashboard(ctx, dashboardFlags{readOnly: true})
				if err != nil {
					ln.Close()
					return err
				}
				defer srv.close()
				go func() {
					if err := srv.serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
						fmt.Fprintln(e.errOut, "dashboard:", err)
					}
				}()
				ui = "http://" + ln.Addr().String()
			}
			fmt.Fprintf(e.errOut, `
batchfleet dev fleet is running (Ctrl-C to stop)
  NATS JetStream  %s
  Redis           %s (%s)
  vendor emulator %s (OpenAI), %s (Anthropic)
  dashboard       %s
Publish the sample job and wait for its batch.completed:
  go run ./cmd/batchfleet publish --nats %s --key demo-$(date +%%s) --wait examples/sample.jsonl
A Claude job (Anthropic Message Batches requests):
  go run ./cmd/batchfleet publish --nats %s --provider anthropic --key claude-demo-$(date +%%s) --wait %s
Single requests, one {"custom_id","body"} per line (packed within PACK_MAX_AGE, 5s here):
  go run ./cmd/batchfleet items publish --nats %s --wait FILE.jsonl
Then: go run ./cmd/batchfleet jobs ls --nats %s   (and: report, jobs show KEY, jobs watch KEY)

`, a.NATSURL, a.RedisURL, a.RedisKind, a.OpenAIBaseURL, a.AnthropicBaseURL, ui, a.NATSURL, a.NATSURL, claude, a.NATSURL, a.NATSURL)
			if demo {
				now := time.Now().Unix()
				items, err := writeDemoItems(o.DataDir, now)
				if err != nil {
					return err
				}
				go func() {
					for _, args := range demoJobs(a.NATSURL, now, claude, items) {
						root := New(e.out, e.errOut)
						root.SetArgs(args)
						if err := root.ExecuteContext(ctx); err != nil {
							fmt.Fprintln(e.errOut, "demo:", err)
						}
					}
				}()
			}
			return <-errc
		},
	}
	fl := c.Flags()
	fl.StringVar(&o.DataDir, "data", o.DataDir, "directory for JetStream data")
	fl.StringVar(&o.NATSAddr, "nats-listen", o.NATSAddr, "embedded NATS listen address")
	fl.StringVar(&o.EmulatorAddr, "emulator", o.EmulatorAddr, "vendor emulator listen address")
	fl.StringVar(&uiAddr, "ui", "127.0.0.1:8088", "dashboard listen address (\"\" for none)")
	fl.StringVar(&logFormat, "log", "auto", "log format: auto (console on a terminal), console or json")
	fl.BoolVar(&demo, "demo", false, "publish examples/sample.jsonl, a 3-request Claude job and 3 single requests once the fleet runs and print their batch.completed and batch.item.completed")
	return c
}

// demoClaude is the dev demo's Claude job: Anthropic batch requests for
// publish --provider anthropic.
//
//go:embed demo/claude.jsonl
var demoClaude []byte

// writeDemoClaude writes the demo's Claude job into the dev fleet's data
// directory, so the printed command can publish it again, and returns its
// path.
func writeDemoClaude(dir string) (string, error) {
	path := filepath.Join(dir, "demo-claude.jsonl")
	if err := os.WriteFile(path, demoClaude, 0o644); err != nil {
		return "", fmt.Errorf("write the demo's Claude job: %w", err)
	}
	return path, nil
}

// writeDemoItems writes the demo's single requests (custom_ids of this
// run, so each run is answered) into the data directory and returns the
// file's path.
func writeDemoItems(dir string, now int64) (string, error) {
	var b strings.Builder
	for i, q := range []string{"Name a colour.", "Say hello in French.", "What is 2 + 2?"} {
		fmt.Fprintf(&b, `{"custom_id":"demo-item-%d-%d","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]},"metadata":{"demo":"true"}}`+"\n", now, i+1, q)
	}
	path := filepath.Join(dir, "demo-items.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("write the demo's single requests: %w", err)
	}
	return path, nil
}

// demoJobs are the commands of --demo, run one after the other: the OpenAI
// sample job, the Claude job at claude, then the single requests at items.
func demoJobs(natsURL string, now int64, claude, items string) [][]string {
	return [][]string{
		{"publish", "--nats", natsURL, "--key", fmt.Sprintf("demo-%d", now), "--wait", "examples/sample.jsonl"},
		{"publish", "--nats", natsURL, "--provider", "anthropic", "--key", fmt.Sprintf("claude-demo-%d", now), "--wait", claude},
		{"items", "publish", "--nats", natsURL, "--wait", items},
	}
}

// console renders the workers' JSON log lines for people (zerolog's
// console writer, coloured).
func console(w io.Writer) io.Writer {
	return zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
}
