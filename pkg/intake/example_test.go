package intake_test

import (
	"fmt"
	"strings"

	"github.com/batchfleet/batchfleet/pkg/intake"
)

func ExampleCheck() {
	file := `{"custom_id":"q1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[]}}
{"custom_id":"q2","method":"POST","url":"/v1/embeddings","body":{"model":"gpt-4o-mini","input":"x"}}
`
	_, err := intake.Check(strings.NewReader(file), "/v1/chat/completions")
	fmt.Println(err)
	sum, err := intake.Check(strings.NewReader(file[:strings.Index(file, "\n")+1]), "/v1/chat/completions")
	fmt.Println(sum.Lines, sum.Model, err)
	// Output:
	// invalid_input: line 2: url must be the job's endpoint "/v1/chat/completions", got "/v1/embeddings"
	// 1 gpt-4o-mini <nil>
}
