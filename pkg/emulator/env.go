package emulator

import (
	"cmp"
	"fmt"
	"strconv"
	"time"
)

// DefaultAddr is the binary's listen address unless EMULATOR_ADDR is set.
const DefaultAddr = "127.0.0.1:8080"

// LoadEnv reads the binary's configuration from the environment through
// lookup (os.LookupEnv in production): the listen address (EMULATOR_ADDR)
// and a validated Config with defaults filled in. Durations use Go syntax
// ("200ms", "24h"), rates are floats in [0,1]. One configuration serves
// both APIs: the lifecycle durations, EMULATOR_API_KEY and the fault rates
// apply to OpenAI batches and Anthropic Message Batches alike, except
// EMULATOR_529_RATE (Anthropic only).
//
//	EMULATOR_ADDR                    listen address, default 127.0.0.1:8080
//	EMULATOR_API_KEY                 the only accepted key; empty accepts any
//	EMULATOR_VALIDATING_FOR          Config.ValidatingFor, default 200ms
//	EMULATOR_IN_PROGRESS_FOR         Config.InProgressFor, default 1s
//	EMULATOR_FINALIZING_FOR          Config.FinalizingFor, default 200ms
//	EMULATOR_EXPIRE_AFTER            Config.ExpireAfter, default 24h
//	EMULATOR_LATENCY                 Faults.Latency, default 0
//	EMULATOR_FAILURE_RATE            Faults.FailureRate, default 0
//	EMULATOR_DROP_AFTER_CREATE_RATE  Faults.DropAfterCreateRate, default 0
//	EMULATOR_429_RATE                Faults.RateLimitRate, default 0
//	EMULATOR_5XX_RATE                Faults.ServerErrorRate, default 0
//	EMULATOR_529_RATE                Faults.OverloadedRate, default 0
//	EMULATOR_ENQUEUED_TOKEN_LIMIT    Config.EnqueuedTokenLimit (OpenAI only), default 0 (off)
//	EMULATOR_SEED                    Config.Seed, default 1
//	EMULATOR_REPLY_BYTES             Config.ReplyBytes, default 0
//	EMULATOR_WEBHOOK_URL             Config.WebhookURL (OpenAI only), default off
//	EMULATOR_WEBHOOK_SECRET          Config.WebhookSecret
func LoadEnv(lookup func(string) (string, bool)) (addr string, cfg Config, err error) {
	get := func(k string) string { v, _ := lookup(k); return v }
	addr = cmp.Or(get("EMULATOR_ADDR"), DefaultAddr)
	cfg.APIKey = get("EMULATOR_API_KEY")
	cfg.WebhookURL = get("EMULATOR_WEBHOOK_URL")
	cfg.WebhookSecret = get("EMULATOR_WEBHOOK_SECRET")
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{
		{"EMULATOR_VALIDATING_FOR", &cfg.ValidatingFor},
		{"EMULATOR_IN_PROGRESS_FOR", &cfg.InProgressFor},
		{"EMULATOR_FINALIZING_FOR", &cfg.FinalizingFor},
		{"EMULATOR_EXPIRE_AFTER", &cfg.ExpireAfter},
		{"EMULATOR_LATENCY", &cfg.Latency},
	} {
		if v := get(d.key); v != "" {
			if *d.dst, err = time.ParseDuration(v); err != nil {
				return "", Config{}, fmt.Errorf("%s: %w", d.key, err)
			}
		}
	}
	for _, r := range []struct {
		key string
		dst *float64
	}{
		{"EMULATOR_FAILURE_RATE", &cfg.FailureRate},
		{"EMULATOR_DROP_AFTER_CREATE_RATE", &cfg.DropAfterCreateRate},
		{"EMULATOR_429_RATE", &cfg.RateLimitRate},
		{"EMULATOR_5XX_RATE", &cfg.ServerErrorRate},
		{"EMULATOR_529_RATE", &cfg.OverloadedRate},
	} {
		if v := get(r.key); v != "" {
			if *r.dst, err = strconv.ParseFloat(v, 64); err != nil {
				return "", Config{}, fmt.Errorf("%s: %w", r.key, err)
			}
		}
	}
	for _, n := range []struct {
		key string
		dst *int64
	}{
		{"EMULATOR_ENQUEUED_TOKEN_LIMIT", &cfg.EnqueuedTokenLimit},
		{"EMULATOR_SEED", &cfg.Seed},
	} {
		if v := get(n.key); v != "" {
			if *n.dst, err = strconv.ParseInt(v, 10, 64); err != nil {
				return "", Config{}, fmt.Errorf("%s: %w", n.key, err)
			}
		}
	}
	if v := get("EMULATOR_REPLY_BYTES"); v != "" {
		if cfg.ReplyBytes, err = strconv.Atoi(v); err != nil {
			return "", Config{}, fmt.Errorf("EMULATOR_REPLY_BYTES: %w", err)
		}
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return "", Config{}, err
	}
	return addr, cfg, nil
}
