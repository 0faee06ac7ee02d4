// Package telemetry sets up structured logging (zerolog, JSON to stdout),
// Prometheus metrics and the /healthz and /metrics endpoints.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// zerolog's time format is a package global: set once, before any logger.
func init() { zerolog.TimeFieldFormat = time.RFC3339Nano }

// NewLogger returns a JSON logger at level ("debug", "info", ...) with the
// component field set.
func NewLogger(w io.Writer, level, component string) (zerolog.Logger, error) {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		return zerolog.Nop(), fmt.Errorf("LOG_LEVEL %q is not one of debug, info, warn, error", level)
	}
	return zerolog.New(w).Level(lvl).Hook(traceHook{}).With().Timestamp().Str("component", component).Logger(), nil
}

// Registry is the process's metrics registry (with Go and process collectors).
func Registry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Probes answer the health endpoints. Live reports whether the process
// works at all (a liveness probe restarts it when not); Ready whether it
// can do its work now (a readiness probe takes it out of rotation, and
// KEDA or an operator sees it). Either may be nil: always ok.
type Probes struct {
	Live  func() error
	Ready func(ctx context.Context) error
}

// readyTimeout bounds one readiness check.
const readyTimeout = 2 * time.Second

// Serve serves /metrics, /healthz (Live) and /readyz (Ready) on addr until
// ctx is done. A failing probe answers 503 with its error.
func Serve(ctx context.Context, addr string, reg *prometheus.Registry, p Probes, log zerolog.Logger) error {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if p.Live != nil {
			if err := p.Live(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		if p.Ready != nil {
			rctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
			defer cancel()
			if err := p.Ready(rctx); err != nil {
				http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen METRICS_ADDR %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info().Str("addr", ln.Addr().String()).Msg("serving metrics and health")
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics: %w", err)
	}
	return nil
}
