package results_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/batchfleet/batchfleet/pkg/results"
)

func Example() {
	// The original batch: one success, one 500, one request not run in time.
	output0 := `{"id":"batch_req_1","custom_id":"q1","response":{"status_code":200,"request_id":"r1","body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}},"error":null}`
	errors0 := `{"id":"batch_req_2","custom_id":"q2","response":{"status_code":500,"request_id":"r2","body":{"error":{"message":"oops","type":"server_error","param":null,"code":null}}},"error":null}
{"id":"batch_req_3","custom_id":"q3","response":null,"error":{"code":"batch_expired","message":"not run"}}`
	// The retry batch (attempt 1) got q2 through; q3 failed for good.
	output1 := `{"id":"batch_req_4","custom_id":"q2","response":{"status_code":200,"request_id":"r4","body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":1000,"completion_tokens":0,"total_tokens":1000}}},"error":null}`
	errors1 := `{"id":"batch_req_5","custom_id":"q3","response":{"status_code":400,"request_id":"r5","body":{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"invalid_value"}}},"error":null}`

	// Merged keeps per custom_id only what the outcome needs; the lines
	// themselves go to a results file as they are read (in the fleet, an
	// object store object per attempt).
	var m results.Merged
	var lines strings.Builder
	w := results.NewWriter(&lines)
	for attempt, files := range [][]string{{output0, errors0}, {output1, errors1}} {
		for _, f := range files {
			err := results.Scan(strings.NewReader(f), func(l results.Line) error {
				m.Add(attempt, l)
				return w.Write(attempt, l)
			})
			if err != nil {
				fmt.Println(err)
				return
			}
		}
		fmt.Printf("after attempt %d: retry %v\n", attempt, m.Failed(true))
	}
	if _, err := w.Flush(); err != nil {
		fmt.Println(err)
		return
	}

	completed, failed := m.Counts()
	kept, billed := m.Usage()
	usd, known := m.Cost(results.DefaultPriceTable())
	fmt.Println("completed", completed, "failed", failed)
	fmt.Println("kept", kept.TotalTokens, "billed", billed.TotalTokens)
	fmt.Printf("cost $%.6f (known %v)\n", usd, known)
	// One line per custom_id: the one Merged keeps.
	if _, err := m.Merge(os.Stdout, strings.NewReader(lines.String())); err != nil {
		fmt.Println(err)
	}
	// Output:
	// after attempt 0: retry [q2 q3]
	// after attempt 1: retry []
	// completed 2 failed 1
	// kept 2500 billed 2500
	// cost $0.000300 (known true)
	// {"custom_id":"q1","status":"succeeded","attempt":0,"status_code":200,"body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}},"batch_request_id":"batch_req_1","request_id":"r1"}
	// {"custom_id":"q2","status":"succeeded","attempt":1,"status_code":200,"body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":1000,"completion_tokens":0,"total_tokens":1000}},"batch_request_id":"batch_req_4","request_id":"r4"}
	// {"custom_id":"q3","status":"failed","attempt":1,"status_code":400,"body":{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"invalid_value"}},"reason":"invalid_value","batch_request_id":"batch_req_5","request_id":"r5"}
}

func ExampleLine_Outcome() {
	for _, s := range []string{
		`{"custom_id":"a","response":{"status_code":200,"body":{}}}`,
		`{"custom_id":"b","response":{"status_code":429,"body":{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}}}`,
		`{"custom_id":"c","response":{"status_code":400,"body":{"error":{"message":"bad","type":"invalid_request_error","code":null}}}}`,
		`{"custom_id":"d","response":null,"error":{"code":"batch_expired","message":"not run"}}`,
	} {
		l, err := results.ParseLine([]byte(s))
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(strings.TrimSpace(fmt.Sprint(l.CustomID, " ", l.Outcome(), " ", l.Reason())))
	}
	// Output:
	// a succeeded
	// b retryable rate_limit_exceeded
	// c permanent invalid_request_error
	// d retryable batch_expired
}
