package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/batchfleet/batchfleet/pkg/dashboard"
)

type dashboardFlags struct {
	readOnly bool // never allow actions (dev)
	actions  bool
	refresh  time.Duration
}

type uiServer struct {
	nc  *nats.Conn
	srv *http.Server
}

func (s *uiServer) serve(ln net.Listener) error { return s.srv.Serve(ln) }

func (s *uiServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx)
	s.nc.Close()
}

// dashboard builds the web dashboard's server over the fleet at e.natsURL.
func (e *env) dashboard(ctx context.Context, f dashboardFlags) (*uiServer, error) {
	nc, js, st, err := e.store(ctx)
	if err != nil {
		return nil, err
	}
	p, err := prices()
	if err != nil {
		nc.Close()
		return nil, err
	}
	o := dashboard.Options{
		JS: js, Store: st, Prices: p, Refresh: f.refresh, WebhookSecret: os.Getenv("WEBHOOK_SECRET"),
		Logger: zerolog.New(e.errOut).With().Timestamp().Logger(),
	}
	if f.actions && !f.readOnly {
		o.AllowActions, o.User, o.Password = true, os.Getenv("UI_USER"), os.Getenv("UI_PASSWORD")
		if o.User == "" || o.Password == "" {
			nc.Close()
			return nil, errors.New("--allow-actions needs UI_USER and UI_PASSWORD (basic auth for every page)")
		}
	}
	h, err := dashboard.New(o)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &uiServer{nc: nc, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

func (e *env) uiCmd() *cobra.Command {
	var f dashboardFlags
	addr := "127.0.0.1:8088"
	c := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web dashboard: overview, jobs, job detail, dead letters",
		Long: `Serve the web dashboard (server-rendered pages, no external assets): Overview (jobs by state
and outcome, jobs/s, cost today, active batches, DLQ size, workers seen), Jobs (the filters
of 'jobs ls'), Job detail (timeline, batches, attempts, results) and Dead letters. Pages
refresh themselves. Read-only unless --allow-actions, which adds cancel and webhook replay
and requires basic auth on every page with UI_USER and UI_PASSWORD.`,
		Example: "  batchfleet ui --addr 127.0.0.1:8088\n  UI_USER=ops UI_PASSWORD=... batchfleet ui --allow-actions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen %s: %w", addr, err)
			}
			srv, err := e.dashboard(ctx, f)
			if err != nil {
				ln.Close()
				return err
			}
			defer srv.close()
			mode := "read-only"
			if f.actions {
				mode = "actions allowed (basic auth)"
			}
			fmt.Fprintf(e.errOut, "dashboard on http://%s (%s); Ctrl-C to stop\n", ln.Addr(), mode)
			errc := make(chan error, 1)
			go func() { errc <- srv.serve(ln) }()
			select {
			case <-ctx.Done():
				return nil
			case err := <-errc:
				return err
			}
		},
	}
	c.Flags().StringVar(&addr, "addr", addr, "listen address")
	c.Flags().BoolVar(&f.actions, "allow-actions", false, "allow cancel and replay (needs UI_USER, UI_PASSWORD)")
	c.Flags().DurationVar(&f.refresh, "refresh", 5*time.Second, "page auto-refresh period")
	return c
}
