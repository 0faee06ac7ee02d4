package emulator_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

// Example_anthropic runs a Message Batch of two requests, one of which the
// custom_id makes fail, through anthropic-sdk-go against an in-process
// emulator: the same server, whose root is the Anthropic base URL.
func Example_anthropic() {
	emu := emulator.New(emulator.Config{
		ValidatingFor: 10 * time.Millisecond,
		InProgressFor: 50 * time.Millisecond,
		FinalizingFor: 10 * time.Millisecond,
	})
	defer emu.Close()
	srv := httptest.NewServer(emu)
	defer srv.Close()
	client := anthropic.NewClient(aoption.WithoutEnvironmentDefaults(), aoption.WithBaseURL(srv.URL), aoption.WithAPIKey("sk-ant-anything"))
	ctx := context.Background()

	request := func(customID string) anthropic.MessageBatchNewParamsRequest {
		return anthropic.MessageBatchNewParamsRequest{CustomID: customID, Params: anthropic.MessageBatchNewParamsRequestParams{
			Model: "claude-sonnet-4-5", MaxTokens: 1024,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Hello"))},
		}}
	}
	batch, err := client.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{
		Requests: []anthropic.MessageBatchNewParamsRequest{request("req-1"), request("req-2-fail-always")},
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(batch.ProcessingStatus, batch.RequestCounts.Processing, batch.RequestCounts.Succeeded)
	for batch.ProcessingStatus != anthropic.MessageBatchProcessingStatusEnded {
		time.Sleep(20 * time.Millisecond)
		if batch, err = client.Messages.Batches.Get(ctx, batch.ID, anthropic.MessageBatchGetParams{}); err != nil {
			panic(err)
		}
	}
	fmt.Println(batch.ProcessingStatus, batch.RequestCounts.Succeeded, batch.RequestCounts.Errored)

	results := map[string]string{}
	stream := client.Messages.Batches.ResultsStreaming(ctx, batch.ID, anthropic.MessageBatchResultsParams{})
	defer stream.Close()
	for stream.Next() {
		switch r := stream.Current(); r.Result.Type {
		case "succeeded":
			results[r.CustomID] = r.Result.AsSucceeded().Message.Content[0].Text
		case "errored":
			results[r.CustomID] = r.Result.AsErrored().Error.Error.Type
		}
	}
	if err := stream.Err(); err != nil {
		panic(err)
	}
	fmt.Println(results["req-1"])
	fmt.Println(results["req-2-fail-always"])
	// Output:
	// in_progress 2 0
	// ended 1 1
	// This is the emulator's reply to request req-1.
	// api_error
}
