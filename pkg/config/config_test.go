package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/config"
)

func env(m map[string]string) config.Lookup {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestDefaults(t *testing.T) {
	c, err := config.Load(env(nil))
	require.NoError(t, err)
	require.Equal(t, "nats://127.0.0.1:4222", c.NATSURL)
	require.Equal(t, "redis://127.0.0.1:6379/0", c.RedisURL)
	require.Equal(t, 5*time.Second, c.Poll.InitialInterval)
	require.Equal(t, 5*time.Minute, c.Poll.MaxInterval)
	require.Equal(t, 3, c.Notify.MaxRetryAttempts)
	require.Equal(t, 0, c.MaxActiveBatches)
	require.True(t, c.Notify.DeleteInputFiles)
}

func TestContractVariables(t *testing.T) {
	c, err := config.Load(env(map[string]string{
		"NATS_URL": "nats://a:1,nats://b:2", "REDIS_URL": "redis://:pw@r:6379/1",
		"OPENAI_API_KEY": "sk-secret", "OPENAI_BASE_URL": "http://127.0.0.1:8080/v1",
		"POLL_INITIAL_INTERVAL": "100ms", "POLL_MAX_INTERVAL": "2s",
		"MAX_ACTIVE_BATCHES": "3", "MAX_RETRY_ATTEMPTS": "0",
		"WEBHOOK_URLS": "http://a/hook, http://b/hook", "WEBHOOK_SECRET": "whsec_x",
		"VENDOR_WEBHOOK_ADDR": "127.0.0.1:8090", "OPENAI_WEBHOOK_SECRET": "whsec_y",
		"ENQUEUED_TOKEN_LIMITS": "gpt-4o-mini=2000000,*=1000",
	}))
	require.NoError(t, err)
	require.Equal(t, 100*time.Millisecond, c.Poll.InitialInterval)
	require.Equal(t, []string{"http://a/hook", "http://b/hook"}, c.Notify.WebhookURLs)
	require.Equal(t, 0, c.Notify.MaxRetryAttempts)
	require.Equal(t, map[string]int64{"gpt-4o-mini": 2000000, "*": 1000}, c.EnqueuedTokenLimits)
	r := c.Redacted()
	for _, secret := range []string{r.OpenAIAPIKey, r.Notify.WebhookSecret, r.Poll.WebhookSecret} {
		require.Equal(t, "[redacted]", secret)
	}
	require.NotContains(t, r.RedisURL, "pw")
}

func TestErrorsNameTheVariable(t *testing.T) {
	for name, m := range map[string]map[string]string{
		"POLL_INITIAL_INTERVAL": {"POLL_INITIAL_INTERVAL": "soon"},
		"POLL_MAX_INTERVAL":     {"POLL_INITIAL_INTERVAL": "10s", "POLL_MAX_INTERVAL": "1s"},
		"NATS_URL":              {"NATS_URL": "http://x"},
		"MAX_ACTIVE_BATCHES":    {"MAX_ACTIVE_BATCHES": "many"},
		"WEBHOOK_SECRET":        {"WEBHOOK_URLS": "http://a"},
		"OPENAI_WEBHOOK_SECRET": {"VENDOR_WEBHOOK_ADDR": ":8090"},
		"POLL_TIMEOUT_ACTION":   {"POLL_TIMEOUT_ACTION": "panic"},
		"ENQUEUED_TOKEN_LIMITS": {"ENQUEUED_TOKEN_LIMITS": "gpt-4o"},
		"DELETE_INPUT_FILES":    {"DELETE_INPUT_FILES": "perhaps"},
		"POLL_STRATEGY":         {"POLL_STRATEGY": "random"},
		"POLL_SWEEP_INTERVAL":   {"POLL_SWEEP_INTERVAL": "1ms"},
	} {
		_, err := config.Load(env(m))
		require.Error(t, err, name)
		require.True(t, strings.Contains(err.Error(), name), "%s: %v", name, err)
	}
}
