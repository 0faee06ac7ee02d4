package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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
(or REDIS_URL; an in-process Redis when redis-server is not installed), the OpenAI Batch API
emulator, one submitter, poller and notifier, and the web dashboard. Logs are coloured,
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
  vendor emulator %s
  dashboard       %s
Publish the sample job and wait for its batch.completed:
  go run ./cmd/batchfleet publish --nats %s --key demo-$(date +%%s) --wait examples/sample.jsonl
Then: go run ./cmd/batchfleet jobs ls --nats %s   (and: report, jobs show KEY, jobs watch KEY)

`, a.NATSURL, a.RedisURL, a.RedisKind, a.OpenAIBaseURL, ui, a.NATSURL, a.NATSURL)
			if demo {
				go func() {
					key := fmt.Sprintf("demo-%d", time.Now().Unix())
					root := New(e.out, e.errOut)
					root.SetArgs([]string{"publish", "--nats", a.NATSURL, "--key", key, "--wait", "examples/sample.jsonl"})
					if err := root.ExecuteContext(ctx); err != nil {
						fmt.Fprintln(e.errOut, "demo:", err)
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
	fl.BoolVar(&demo, "demo", false, "publish examples/sample.jsonl once the fleet runs and print its batch.completed")
	return c
}

// console renders the workers' JSON log lines for people (zerolog's
// console writer, coloured).
func console(w io.Writer) io.Writer {
	return zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
}
