package benchfmt_test

import (
	"fmt"

	"github.com/batchfleet/batchfleet/bench/benchfmt"
)

func ExampleTable() {
	t := benchfmt.Table{Header: []string{"measure", "value", "target"}}
	t.Add("items/s", "21,000", "NOT met")
	t.Add("packs", "10")
	fmt.Print(t.String())
	// Output:
	// | measure | value | target |
	// | --- | --- | --- |
	// | items/s | 21,000 | NOT met |
	// | packs | 10 |  |
}
