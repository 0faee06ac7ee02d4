package pack_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
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

// A producer publishes one batch.items message per request and a consumer
// reads one batch.item.completed per custom_id (the README's example; it
// needs a running fleet, so it is compiled, not run).
func Example_producerAndConsumer() {
	ctx := context.Background()
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	// Consumer: a durable consumer of the answers, created before publishing.
	cons, err := js.CreateOrUpdateConsumer(ctx, "BATCH_EVENTS", jetstream.ConsumerConfig{
		Durable: "classifier", FilterSubject: contract.SubjectItemCompleted, AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return
	}
	cc, _ := cons.Consume(func(m jetstream.Msg) {
		var ev contract.ItemCompleted
		if json.Unmarshal(m.Data(), &ev) == nil && ev.Outcome == contract.OutcomeSucceeded {
			fmt.Println(ev.CustomID, len(ev.Response.Body)) // one event per custom_id
		}
		_ = m.Ack()
	})
	defer cc.Stop()
	// Producer: one message per request, the custom_id as its idempotency key.
	for i, text := range []string{"the parcel never came", "thanks, all good"} {
		it := contract.Item{CustomID: fmt.Sprintf("ticket-%d", i), Metadata: map[string]string{"table": "tickets"},
			Body: json.RawMessage(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":` + strconv.Quote(text) + `}]}`)}
		data, _ := json.Marshal(it)
		if _, err := js.Publish(ctx, contract.SubjectItems, data, jetstream.WithMsgID(it.CustomID)); err != nil {
			return // not stored: publish it again (the custom_id makes that safe)
		}
	}
}
