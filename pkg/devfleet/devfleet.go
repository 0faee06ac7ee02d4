// Package devfleet runs the whole fleet in one process on embedded
// defaults, for a fresh machine with only Go: an in-process NATS JetStream
// server (data in a directory), a Redis (REDIS_URL if given, else a child
// redis-server if one is on PATH, else an embedded Redis-protocol server),
// the vendor emulator and one submitter, poller and notifier, each wired
// exactly as its own binary would be.
package devfleet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/fleet"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

// Options configure the dev fleet; zero values take the defaults.
type Options struct {
	// DataDir holds JetStream's data (and the child redis-server's). Defaults to ./.batchfleet-dev.
	DataDir string
	// NATSAddr is where the embedded NATS listens. Defaults to 127.0.0.1:14222.
	NATSAddr string
	// EmulatorAddr is where the vendor emulator listens. Defaults to 127.0.0.1:18080.
	EmulatorAddr string
	// RedisURL uses an existing Redis instead of starting one.
	RedisURL string
	// Env overrides worker settings (same variables as the binaries).
	Env config.Lookup
	// Log receives every component's JSON log lines.
	Log io.Writer
	// Ready, if set, is called with the fleet's addresses once it runs.
	Ready func(Addrs)
}

// Addrs are where the dev fleet's servers listen.
type Addrs struct {
	NATSURL, RedisURL, OpenAIBaseURL, RedisKind string
	// AnthropicBaseURL is the emulator's Anthropic API root, without /v1
	// (anthropic-sdk-go's convention, as ANTHROPIC_BASE_URL).
	AnthropicBaseURL string
}

// Run starts everything and blocks until ctx is done, then stops it all.
func Run(ctx context.Context, o Options) error {
	o.DataDir = cmp.Or(o.DataDir, ".batchfleet-dev")
	o.NATSAddr = cmp.Or(o.NATSAddr, "127.0.0.1:14222")
	o.EmulatorAddr = cmp.Or(o.EmulatorAddr, "127.0.0.1:18080")
	if o.Log == nil {
		o.Log = os.Stdout
	}
	if o.Env == nil {
		o.Env = func(string) (string, bool) { return "", false }
	}
	log, err := telemetry.NewLogger(o.Log, "info", "devfleet")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	ns, natsURL, err := startNATS(o.NATSAddr, filepath.Join(o.DataDir, "jetstream"))
	if err != nil {
		return err
	}
	defer ns.Shutdown()
	log.Info().Str("url", natsURL).Str("store_dir", filepath.Join(o.DataDir, "jetstream")).Msg("embedded NATS JetStream running")

	redisURL, kind, stopRedis, err := startRedis(ctx, o.RedisURL, filepath.Join(o.DataDir, "redis"), log)
	if err != nil {
		return err
	}
	defer stopRedis()

	_, emuCfg, err := emulator.LoadEnv(o.Env)
	if err != nil {
		return fmt.Errorf("emulator configuration: %w", err)
	}
	emu := emulator.NewServer(o.EmulatorAddr, emuCfg)
	if err := emu.Start(ctx); err != nil {
		return fmt.Errorf("start emulator: %w", err)
	}
	defer emu.Close()
	log.Info().Str("base_url", emu.BaseURL()).Msg("vendor emulator running")

	a := Addrs{NATSURL: natsURL, RedisURL: redisURL, OpenAIBaseURL: emu.BaseURL(), AnthropicBaseURL: emu.AnthropicBaseURL(), RedisKind: kind}
	env := workerEnv(o.Env, a)
	if o.Ready != nil {
		o.Ready(a)
	}
	g, gctx := errgroup.WithContext(ctx)
	for name, build := range map[string]lifecycle.Build{"submitter": fleet.Submitter, "poller": fleet.Poller, "notifier": fleet.Notifier} {
		g.Go(func() error { return lifecycle.Run(gctx, name, env, o.Log, build) })
	}
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// workerEnv is the workers' settings: those of env (the caller's, when
// set and not empty), else the dev fleet's, which point both providers at
// the emulator (OpenAI's base URL with /v1, Anthropic's without).
func workerEnv(env config.Lookup, a Addrs) config.Lookup {
	dev := map[string]string{
		"NATS_URL": a.NATSURL, "REDIS_URL": a.RedisURL,
		"OPENAI_BASE_URL": a.OpenAIBaseURL, "OPENAI_API_KEY": "sk-dev",
		"ANTHROPIC_BASE_URL": a.AnthropicBaseURL, "ANTHROPIC_API_KEY": "sk-dev",
		"POLL_INITIAL_INTERVAL": "500ms", "POLL_MAX_INTERVAL": "5s", "POLL_SWEEP_INTERVAL": "1s", "RETRY_BACKOFF": "2s",
		"PACK_MAX_AGE": "5s",
	}
	return func(k string) (string, bool) {
		if v, ok := env(k); ok && v != "" {
			return v, true
		}
		v, ok := dev[k]
		return v, ok
	}
}

func startNATS(addr, dir string) (*server.Server, string, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, "", fmt.Errorf("NATS address %q: %w", addr, err)
	}
	ns, err := server.NewServer(&server.Options{Host: host, Port: port, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		return nil, "", fmt.Errorf("embedded NATS: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		return nil, "", fmt.Errorf("embedded NATS did not start on %s (port in use?)", addr)
	}
	return ns, ns.ClientURL(), nil
}

// startRedis returns a Redis URL: the given one, a child redis-server, or
// an embedded Redis-protocol server (miniredis: keeps everything in memory
// and is meant for development only).
func startRedis(ctx context.Context, url, dir string, log zerolog.Logger) (string, string, func(), error) {
	if url != "" {
		return url, "external", func() {}, nil
	}
	if bin, err := exec.LookPath("redis-server"); err == nil {
		port, err := freePort()
		if err != nil {
			return "", "", nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", "", nil, err
		}
		cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir)
		if err := cmd.Start(); err != nil {
			return "", "", nil, fmt.Errorf("start redis-server: %w", err)
		}
		url := fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
		if err := waitRedis(ctx, url); err != nil {
			stop()
			return "", "", nil, err
		}
		log.Info().Str("url", url).Msg("child redis-server running")
		return url, "redis-server", stop, nil
	}
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return "", "", nil, fmt.Errorf("embedded redis: %w", err)
	}
	url = "redis://" + mr.Addr() + "/0"
	log.Warn().Str("url", url).Msg("NO redis-server ON PATH: using an EMBEDDED Redis-protocol server (miniredis), for development only; install redis-server or set REDIS_URL")
	return url, "embedded", mr.Close, nil
}

func waitRedis(ctx context.Context, url string) error {
	opts, err := redis.ParseURL(url)
	if err != nil {
		return err
	}
	c := redis.NewClient(opts)
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := c.Ping(ctx).Err(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("redis-server did not answer: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
