// Package lifecycle wires a worker process: it loads the configuration
// from the environment, connects to NATS, Redis and the vendor, serves
// metrics, runs the worker and stops it within a bound on SIGTERM.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/extra/redisotel/v9"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/presence"
	"github.com/batchfleet/batchfleet/pkg/ratelimit"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// Infra holds a worker's live collaborators.
type Infra struct {
	Config config.Config
	Logger zerolog.Logger
	NC     *nats.Conn
	JS     jetstream.JetStream
	Redis  *redis.Client
	Vendor *batchapi.Client
	// Anthropic is nil unless the configuration enables the provider.
	Anthropic *batchapi.Anthropic
	Metrics   *prometheus.Registry

	closed chan struct{} // closed when the NATS connection is
}

// Ready reports whether the worker's services answer now: the NATS
// connection is up and the server answers a round trip, and Redis answers
// a PING (each within ctx). /readyz serves it.
func (inf *Infra) Ready(ctx context.Context) error {
	if !inf.NC.IsConnected() {
		return fmt.Errorf("nats: %s", inf.NC.Status())
	}
	if err := inf.NC.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	if err := inf.Redis.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

// drainTimeout bounds the NATS drain at shutdown.
const drainTimeout = 5 * time.Second

// Close releases the connections. It waits (up to drainTimeout) for the
// NATS drain to finish, so the last acks and naks reach the server before
// the process exits.
func (inf *Infra) Close() {
	if inf.NC != nil {
		if err := inf.NC.Drain(); err == nil && inf.closed != nil {
			select {
			case <-inf.closed:
			case <-time.After(drainTimeout + time.Second):
				inf.Logger.Warn().Msg("nats drain did not finish in time")
			}
		}
		inf.NC.Close()
	}
	if inf.Redis != nil {
		_ = inf.Redis.Close()
	}
}

// Runner is a worker. Run returns once ctx is done and the worker has
// stopped gracefully (handed back or finished what it held).
type Runner interface {
	Run(ctx context.Context) error
}

// Build makes a worker from its collaborators.
type Build func(ctx context.Context, inf *Infra) (Runner, error)

// Main is the whole of a worker binary's main: it exits 0 after a graceful
// stop and 1 on a start-up error.
func Main(component string, build Build) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := Run(ctx, component, os.LookupEnv, os.Stdout, build); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", component, err)
		os.Exit(1)
	}
}

// Run loads the configuration, connects and runs the worker until ctx is done.
func Run(ctx context.Context, component string, env config.Lookup, logOut io.Writer, build Build) error {
	cfg, err := config.Load(env)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log, err := telemetry.NewLogger(logOut, cfg.LogLevel, component)
	if err != nil {
		return err
	}
	log.Info().Interface("config", cfg.Redacted()).Msg("starting")
	stopTracing, err := telemetry.SetupTracing(ctx, component, env, logOut)
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn().Err(err).Msg("flush traces")
		}
	}()
	inf, err := Connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer inf.Close()
	w, err := build(ctx, inf)
	if err != nil {
		return fmt.Errorf("start %s: %w", component, err)
	}
	g, gctx := errgroup.WithContext(ctx)
	if cfg.MetricsAddr != "" {
		g.Go(func() error {
			return telemetry.Serve(gctx, cfg.MetricsAddr, inf.Metrics, telemetry.Probes{Ready: inf.Ready}, log)
		})
	}
	beat, stopBeat := context.WithCancel(gctx)
	g.Go(func() error { defer stopBeat(); return w.Run(gctx) })
	// "workers seen": a heartbeat for as long as the worker runs.
	g.Go(func() error { return presence.Beat(beat, inf.JS, component, cfg.StreamReplicas, log) })
	errc := make(chan error, 1)
	go func() { errc <- g.Wait() }()
	select {
	case err = <-errc:
	case <-gctx.Done():
		// Bound the stop: a worker that does not return in time is
		// abandoned, but this function still returns (and its deferred
		// cleanup runs) so the process exits through main.
		select {
		case err = <-errc:
		case <-time.After(cfg.StopTimeout + 2*time.Second):
			log.Error().Msg("stop deadline exceeded, exiting")
			return fmt.Errorf("stop %s: deadline exceeded", component)
		}
	}
	log.Info().Err(err).Msg("stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Connect opens the NATS, Redis and vendor clients. NATS reconnects forever;
// the first connection is retried until ctx is done, unless the server
// refuses the credentials or the certificate: that is a start-up error, as
// is Redis refusing them.
func Connect(ctx context.Context, cfg config.Config, log zerolog.Logger) (*Infra, error) {
	inf := &Infra{Config: cfg, Logger: log, Metrics: telemetry.Registry(), closed: make(chan struct{})}
	links, err := NATSOptions(cfg.NATSLink)
	if err != nil {
		return nil, err
	}
	var connErr atomic.Pointer[error] // why the latest try of the first connection failed
	nc, err := nats.Connect(cfg.NATSURL, append(links,
		nats.DrainTimeout(drainTimeout),
		nats.ClosedHandler(func(*nats.Conn) { close(inf.closed) }),
		nats.Name("batchfleet"),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(500*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn().Err(err).Msg("nats disconnected")
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				connErr.Store(&err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info().Msg("nats reconnected") }),
	)...)
	if err != nil {
		return nil, fmt.Errorf("connect NATS_URL %s: %w", config.RedactURL(cfg.NATSURL), err)
	}
	inf.NC = nc
	// Each try makes its own error: the first try's and a dial's come to
	// the handler, the later tries' to LastError. The newest one decides.
	var (
		why, fromHandler, fromConn error
		closed                     int // tries in a row that found the connection closed after the handshake
	)
	see := func(err error) {
		why = err
		if closedAfterHandshake(err) {
			closed++
		} else {
			closed = 0
		}
	}
	for !nc.IsConnected() {
		if err := connErr.Load(); err != nil && *err != fromHandler { //nolint:errorlint // identity: a new try's error
			fromHandler = *err
			see(fromHandler)
		}
		if err := nc.LastError(); err != nil && err != fromConn { //nolint:errorlint // identity: a new try's error
			fromConn = err
			see(fromConn)
		}
		if refused(why) && (!closedAfterHandshake(why) || closed >= closedTries) {
			inf.Close()
			hint := ""
			switch {
			case cfg.NATSCertFile == "" && wantsClientCert(why):
				hint = " (does the server want a client certificate? NATS_CERT_FILE, NATS_KEY_FILE)"
			case cfg.NATSCreds != "":
				hint = fmt.Sprintf(" (as the user of NATS_CREDS %s: unknown account, expired or revoked?)", cfg.NATSCreds)
			case cfg.NATSNkeyFile != "":
				hint = fmt.Sprintf(" (as the nkey user of NATS_NKEY_FILE %s)", cfg.NATSNkeyFile)
			}
			return nil, fmt.Errorf("connect NATS_URL %s: refused%s: %w", config.RedactURL(cfg.NATSURL), hint, why)
		}
		select {
		case <-ctx.Done():
			inf.Close()
			if why != nil {
				return nil, fmt.Errorf("connect NATS_URL %s: %w (the latest try: %v)", config.RedactURL(cfg.NATSURL), ctx.Err(), why)
			}
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if inf.JS, err = jetstream.New(nc); err != nil {
		inf.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	opts, err := RedisOptions(cfg.RedisLink)
	if err != nil {
		inf.Close()
		return nil, err
	}
	inf.Redis = redis.NewClient(opts)
	// A span per Redis command (locks, rate limits, heartbeats) in the
	// caller's trace, without the statements (they hold keys and tokens).
	if err := redisotel.InstrumentTracing(inf.Redis, redisotel.WithDBStatement(false)); err != nil {
		inf.Close()
		return nil, fmt.Errorf("redis tracing: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, redisCheckTimeout)
	warn, err := checkRedis(pctx, inf.Redis)
	cancel()
	if err != nil {
		inf.Close()
		return nil, fmt.Errorf("connect REDIS_URL %s: refused: %w", config.RedactURL(cfg.RedisURL), err)
	}
	if warn != nil {
		log.Warn().Err(warn).Msg("redis not reachable yet")
	}
	inf.Vendor = batchapi.New(batchapi.Config{
		APIKey: cfg.OpenAIAPIKey, BaseURL: cfg.OpenAIBaseURL, CallTimeout: cfg.VendorCallTimeout,
		TransferTimeout: cfg.VendorTransferTimeout,
	})
	if cfg.AnthropicEnabled() {
		ac := batchapi.Config{
			APIKey: cfg.AnthropicAPIKey, BaseURL: cfg.AnthropicBaseURL, CallTimeout: cfg.VendorCallTimeout,
			TransferTimeout: cfg.VendorTransferTimeout,
		}
		if rpm := cfg.AnthropicRPM; rpm > 0 {
			// One Redis bucket for every worker and role of the fleet.
			ac.Limiter = ratelimit.New(inf.Redis, "ANTHROPIC_RPM", ratelimit.Limit{Rate: rpm, Per: time.Minute, Burst: max(1, rpm/10)})
		}
		inf.Anthropic = batchapi.NewAnthropic(ac)
	}
	return inf, nil
}

// redisCheckTimeout bounds the start-up ping of Redis.
const redisCheckTimeout = 3 * time.Second

// RunFunc adapts a function to a Runner.
type RunFunc func(ctx context.Context) error

// Run calls f.
func (f RunFunc) Run(ctx context.Context) error { return f(ctx) }

// Group runs runners together: all stop when ctx is done or one fails.
func Group(runners ...Runner) Runner {
	return RunFunc(func(ctx context.Context) error {
		g, gctx := errgroup.WithContext(ctx)
		for _, r := range runners {
			g.Go(func() error { return r.Run(gctx) })
		}
		return g.Wait()
	})
}
