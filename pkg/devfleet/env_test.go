package devfleet

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestWorkersGetBothProvidersPointedAtTheEmulator(t *testing.T) {
	a := Addrs{NATSURL: "nats://127.0.0.1:14222", RedisURL: "redis://127.0.0.1:6390/0",
		OpenAIBaseURL: "http://127.0.0.1:18080/v1", AnthropicBaseURL: "http://127.0.0.1:18080"}
	caller := map[string]string{"ANTHROPIC_RPM": "50", "OPENAI_API_KEY": "", "POLL_MAX_INTERVAL": "1s"}
	env := workerEnv(func(k string) (string, bool) { v, ok := caller[k]; return v, ok }, a)
	for k, want := range map[string]string{
		"NATS_URL":           "nats://127.0.0.1:14222",
		"REDIS_URL":          "redis://127.0.0.1:6390/0",
		"OPENAI_BASE_URL":    "http://127.0.0.1:18080/v1",
		"OPENAI_API_KEY":     "sk-dev", // an empty setting takes the default
		"ANTHROPIC_BASE_URL": "http://127.0.0.1:18080",
		"ANTHROPIC_API_KEY":  "sk-dev",
		"ANTHROPIC_RPM":      "50", // the caller's settings win
		"POLL_MAX_INTERVAL":  "1s",
	} {
		v, ok := env(k)
		require.True(t, ok, k)
		require.Equal(t, want, v, k)
	}
	_, ok := env("ANTHROPIC_UNKNOWN")
	require.False(t, ok)
}
