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
// ("200ms", "24h"), rates are floats in [0,1].
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
