package pack_test

import (
	"fmt"

	"github.com/batchfleet/batchfleet/pkg/pack"
)

// A pack's job key names its model, its group and the stage sequence of
// its first item, so a leader that takes a group over after a crash
// publishes the same pack under the same key.
func ExampleGroup_PackKey() {
	g := pack.Group{Provider: "openai", Endpoint: "/v1/chat/completions", Model: "gpt-4o-mini"}
	fmt.Println(g.PackKey(1))
	fmt.Println(pack.SidecarName(g.PackKey(1)))
	// Output:
	// pack-gpt-4o-mini-097cacfa56348727-1
	// pack-gpt-4o-mini-097cacfa56348727-1.items
}
