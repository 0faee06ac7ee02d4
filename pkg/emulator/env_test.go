package emulator_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

func TestLoadEnv(t *testing.T) {
	t.Parallel()
	secret := "whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	full := map[string]string{
		"EMULATOR_ADDR": "127.0.0.1:0", "EMULATOR_API_KEY": "sk-x",
		"EMULATOR_VALIDATING_FOR": "1s", "EMULATOR_IN_PROGRESS_FOR": "2s", "EMULATOR_FINALIZING_FOR": "3s",
		"EMULATOR_EXPIRE_AFTER": "4s", "EMULATOR_LATENCY": "5ms", "EMULATOR_FAILURE_RATE": "0.1",
		"EMULATOR_DROP_AFTER_CREATE_RATE": "0.2", "EMULATOR_429_RATE": "0.3", "EMULATOR_5XX_RATE": "0.4", "EMULATOR_529_RATE": "0.5",
		"EMULATOR_WEBHOOK_URL": "http://127.0.0.1:9/hook", "EMULATOR_WEBHOOK_SECRET": secret,
		"EMULATOR_ENQUEUED_TOKEN_LIMIT": "1000", "EMULATOR_SEED": "42", "EMULATOR_REPLY_BYTES": "2048",
	}
	lookup := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	}
	addr, cfg, err := emulator.LoadEnv(lookup(full))
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:0", addr)
	require.Equal(t, "sk-x", cfg.APIKey)
	require.Equal(t, []time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second, 5 * time.Millisecond},
		[]time.Duration{cfg.ValidatingFor, cfg.InProgressFor, cfg.FinalizingFor, cfg.ExpireAfter, cfg.Latency})
	require.Equal(t, []float64{0.1, 0.2, 0.3, 0.4, 0.5},
		[]float64{cfg.FailureRate, cfg.DropAfterCreateRate, cfg.RateLimitRate, cfg.ServerErrorRate, cfg.OverloadedRate})
	require.Equal(t, "http://127.0.0.1:9/hook", cfg.WebhookURL)
	require.Equal(t, secret, cfg.WebhookSecret)
	require.EqualValues(t, 1000, cfg.EnqueuedTokenLimit)
	require.EqualValues(t, 42, cfg.Seed)
	require.Equal(t, 2048, cfg.ReplyBytes)

	addr, cfg, err = emulator.LoadEnv(lookup(nil))
	require.NoError(t, err)
	require.Equal(t, emulator.DefaultAddr, addr)
	require.Equal(t, 24*time.Hour, cfg.ExpireAfter)
	require.Zero(t, cfg.ReplyBytes)

	for _, tc := range []struct{ key, value, want string }{
		{"EMULATOR_LATENCY", "soon", "EMULATOR_LATENCY"},
		{"EMULATOR_429_RATE", "1.5", "EMULATOR_429_RATE"},
		{"EMULATOR_529_RATE", "-0.1", "EMULATOR_529_RATE"},
		{"EMULATOR_FAILURE_RATE", "x", "EMULATOR_FAILURE_RATE"},
		{"EMULATOR_SEED", "1.5", "EMULATOR_SEED"},
		{"EMULATOR_ENQUEUED_TOKEN_LIMIT", "-1", "EMULATOR_ENQUEUED_TOKEN_LIMIT"},
		{"EMULATOR_WEBHOOK_URL", "ftp://x", "EMULATOR_WEBHOOK_URL"},
		{"EMULATOR_WEBHOOK_SECRET", "whsec_short", "EMULATOR_WEBHOOK_SECRET"},
		{"EMULATOR_VALIDATING_FOR", "-1s", "EMULATOR_VALIDATING_FOR"},
		{"EMULATOR_REPLY_BYTES", "1k", "EMULATOR_REPLY_BYTES"},
		{"EMULATOR_REPLY_BYTES", "-1", "EMULATOR_REPLY_BYTES must not be negative"},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			_, _, err := emulator.LoadEnv(lookup(map[string]string{tc.key: tc.value}))
			require.ErrorContains(t, err, tc.want)
		})
	}
	_, _, err = emulator.LoadEnv(lookup(map[string]string{"EMULATOR_WEBHOOK_URL": "http://x"}))
	require.ErrorContains(t, err, "EMULATOR_WEBHOOK_SECRET is required")
}
