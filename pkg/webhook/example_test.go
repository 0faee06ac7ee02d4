package webhook_test

import (
	"fmt"
	"time"

	"github.com/batchfleet/batchfleet/pkg/webhook"
)

func ExampleSign() {
	secret, err := webhook.ParseSecret("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
	if err != nil {
		fmt.Println(err)
		return
	}
	// The signature can be checked with: printf '%s' "k:completed.1748779200.$body" |
	// openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef -binary | base64
	ts := time.Unix(1748779200, 0)
	body := []byte(`{"type":"batch.completed","timestamp":"2025-06-01T12:00:00Z","data":{"idempotency_key":"k"}}`)

	h := webhook.Headers(secret, "k:completed", ts, body)
	fmt.Println("webhook-id:", h.Get("webhook-id"))
	fmt.Println("webhook-timestamp:", h.Get("webhook-timestamp"))
	fmt.Println("webhook-signature:", webhook.Sign(secret, "k:completed", ts, body))

	fmt.Println(webhook.Verify(secret, h, body, 0, ts.Add(time.Minute)))
	fmt.Println(webhook.Verify(secret, h, body, 0, ts.Add(time.Hour)))
	// Output:
	// webhook-id: k:completed
	// webhook-timestamp: 1748779200
	// webhook-signature: v1,sMOp+eYNYzfSpTnAaP3UiYrLGUfAbAD4Kzppgji8Euc=
	// <nil>
	// webhook: timestamp outside tolerance: webhook-timestamp 1748779200 is 3600s from now, tolerance 5m0s
}
