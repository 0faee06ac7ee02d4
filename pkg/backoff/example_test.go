package backoff_test

import (
	"fmt"
	"net/http"
	"time"

	"github.com/batchfleet/batchfleet/pkg/backoff"
)

func ExamplePolicy_Next() {
	// Jitter is left at zero (and WithDefaults is not called) so the output is
	// deterministic; production code passes an injected *rand.Rand.
	p := backoff.Policy{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2}
	for attempt := range 7 {
		fmt.Println(attempt, p.Next(attempt, nil))
	}
	// Output:
	// 0 1s
	// 1 2s
	// 2 4s
	// 3 8s
	// 4 16s
	// 5 30s
	// 6 30s
}

func ExampleRetryAfter() {
	now := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)

	h := http.Header{}
	h.Set("Retry-After", "Thu, 02 Jan 2025 15:04:35 GMT")
	fmt.Println(backoff.RetryAfter(h, now))

	h.Set("retry-after-ms", "1500") // OpenAI's hint wins over Retry-After
	fmt.Println(backoff.RetryAfter(h, now))

	fmt.Println(backoff.RetryAfter(http.Header{}, now))
	// Output:
	// 30s true
	// 1.5s true
	// 0s false
}
