package webhook_test

import (
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/webhook"
)

// TestOpenAIInterop: openai-go's webhook verification (the SDK the vendor
// publishes, used by receivers in Go) accepts what Sign produces, for the
// secret in both accepted forms.
func TestOpenAIInterop(t *testing.T) {
	t.Parallel()
	body := []byte(`{"id":"evt_1","object":"event","created_at":1,"type":"batch.completed","data":{"id":"batch_1"}}`)
	for _, secret := range []string{testSecret, "a raw secret, not whsec"} {
		key, err := webhook.ParseSecret(secret)
		require.NoError(t, err)
		ts := testNow.Add(-30 * time.Second)
		h := webhook.Headers(key, "evt_1", ts, body)

		client := openai.NewClient(option.WithWebhookSecret(secret))
		ev, err := client.Webhooks.UnwrapWithToleranceAndTime(body, h, 5*time.Minute, testNow)
		require.NoError(t, err, secret)
		require.Equal(t, "batch.completed", ev.Type)
		require.Equal(t, "batch_1", ev.AsBatchCompleted().Data.ID)

		// And our Verify agrees with it on the same delivery.
		require.NoError(t, webhook.Verify(key, h, body, 5*time.Minute, testNow))

		// Sanity: openai-go is really checking.
		_, err = client.Webhooks.UnwrapWithToleranceAndTime(append([]byte(" "), body...), h, 5*time.Minute, testNow)
		require.Error(t, err)
		_, err = client.Webhooks.UnwrapWithToleranceAndTime(body, h, 5*time.Minute, testNow.Add(10*time.Minute))
		require.Error(t, err)
	}
}
