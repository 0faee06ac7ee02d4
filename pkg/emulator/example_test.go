package emulator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

// Example runs a batch of two chat requests, one of which the custom_id
// makes fail, through openai-go against an in-process emulator.
func Example() {
	emu := emulator.New(emulator.Config{
		ValidatingFor: 10 * time.Millisecond,
		InProgressFor: 50 * time.Millisecond,
		FinalizingFor: 10 * time.Millisecond,
	})
	defer emu.Close()
	srv := httptest.NewServer(emu)
	defer srv.Close()
	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("sk-anything"))
	ctx := context.Background()

	input := `{"custom_id":"req-1","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}}
{"custom_id":"req-2-fail-always","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}}
`
	file, err := client.Files.New(ctx, openai.FileNewParams{
		File:    openai.File(strings.NewReader(input), "input.jsonl", "application/jsonl"),
		Purpose: openai.FilePurposeBatch,
	})
	if err != nil {
		panic(err)
	}
	batch, err := client.Batches.New(ctx, openai.BatchNewParams{
		InputFileID:      file.ID,
		Endpoint:         openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h,
		Metadata:         map[string]string{"idempotency_key": "example"},
	})
	if err != nil {
		panic(err)
	}
	for batch.Status != openai.BatchStatusCompleted {
		time.Sleep(20 * time.Millisecond)
		if batch, err = client.Batches.Get(ctx, batch.ID); err != nil {
			panic(err)
		}
	}
	fmt.Println(batch.Status, batch.RequestCounts.Completed, batch.RequestCounts.Failed)

	resp, err := client.Files.Content(ctx, batch.OutputFileID)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var line struct {
			CustomID string `json:"custom_id"`
			Response struct {
				Body openai.ChatCompletion `json:"body"`
			} `json:"response"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			panic(err)
		}
		fmt.Printf("%s: %s\n", line.CustomID, line.Response.Body.Choices[0].Message.Content)
	}
	// Output:
	// completed 1 1
	// req-1: This is the emulator's reply to request req-1.
}

// ExampleLoadEnv shows the binary's configuration from the environment.
func ExampleLoadEnv() {
	env := map[string]string{
		"EMULATOR_ADDR":         "127.0.0.1:0",
		"EMULATOR_EXPIRE_AFTER": "3s",
		"EMULATOR_429_RATE":     "0.1",
	}
	addr, cfg, err := emulator.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		panic(err)
	}
	fmt.Println(addr, cfg.ExpireAfter, cfg.RateLimitRate, cfg.ValidatingFor)
	// Output: 127.0.0.1:0 3s 0.1 200ms
}
