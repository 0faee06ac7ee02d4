package ratelimit_test

import (
	"fmt"

	"github.com/batchfleet/batchfleet/pkg/ratelimit"
)

func ExampleParseLimit() {
	for _, s := range []string{"2000/h", "50/s", "10/30s", "unlimited", "50/fortnight"} {
		l, err := ratelimit.ParseLimit(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Printf("%s: rate=%d per=%s unlimited=%t\n", l, l.Rate, l.Per, l.Unlimited())
	}
	// Output:
	// 2000/h: rate=2000 per=1h0m0s unlimited=false
	// 50/s: rate=50 per=1s unlimited=false
	// 10/30s: rate=10 per=30s unlimited=false
	// unlimited: rate=0 per=0s unlimited=true
	// parse rate limit "50/fortnight": period "fortnight" is not s, m, h or a duration such as 30s
}
