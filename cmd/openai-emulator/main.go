// Command openai-emulator serves pkg/emulator, an emulator of OpenAI's Files
// and Batch API and of Anthropic's Message Batches API on one port,
// configured from EMULATOR_* environment variables (see emulator.LoadEnv).
// With EMULATOR_ADDR port 0 it picks a free port; either way it logs
//
//	{"msg":"listening","message":"listening","base_url":"http://host:port/v1","anthropic_base_url":"http://host:port"}
//
// to stdout once serving: base_url is openai-go's base URL,
// anthropic_base_url anthropic-sdk-go's (ANTHROPIC_BASE_URL). SIGINT or
// SIGTERM stop it gracefully.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

// stopTimeout bounds the graceful shutdown.
const stopTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.LookupEnv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "openai-emulator:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, lookup func(string) (string, bool), stdout io.Writer) error {
	addr, cfg, err := emulator.LoadEnv(lookup)
	if err != nil {
		return err
	}
	level := zerolog.InfoLevel
	if v, ok := lookup("LOG_LEVEL"); ok && v != "" {
		if level, err = zerolog.ParseLevel(v); err != nil {
			return fmt.Errorf("LOG_LEVEL: %w", err)
		}
	}
	log := zerolog.New(stdout).Level(level).With().Timestamp().Str("component", "openai-emulator").Logger()
	cfg.Logger = log
	log.Info().Object("config", cfg).Msg("config")

	srv := emulator.NewServer(addr, cfg)
	if err := srv.Start(ctx); err != nil {
		srv.Emulator().Close()
		return err
	}
	// Always printed, whatever LOG_LEVEL: scripts wait for this line to
	// learn the port. "msg" duplicates zerolog's "message" for parsers
	// that expect either.
	always := log.Level(zerolog.InfoLevel)
	always.Info().Str("msg", "listening").Str("base_url", srv.BaseURL()).
		Str("anthropic_base_url", srv.AnthropicBaseURL()).Msg("listening")
	<-ctx.Done()

	stopCtx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	err = srv.Stop(stopCtx)
	log.Info().Err(err).Msg("stopped")
	return err
}
