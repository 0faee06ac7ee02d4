package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// inlineMargin leaves room in a NATS message for the request's other
// fields and the headers (the margin ops.PublishFile keeps).
const inlineMargin = 8 << 10

// lineOverhead is the JSON around one request's custom_id and body in the
// contract's input line; it bounds the same request inline too.
const lineOverhead = len(`{"custom_id":"","method":"POST","url":"/v1/messages","body":}` + "\n")

// publishAnthropic publishes the Anthropic Message Batches request file at
// path (one {"custom_id", "params"} object per line) as the job key, each
// line becoming a contract request item {custom_id, body: params}. The file
// is checked line by line before anything is sent; it goes inline when it
// fits one NATS message (maxPayload), else into the batch_intake object
// store as the contract's JSONL lines (url /v1/messages) under the job's
// key, streamed from disk, and published as input_object. It returns the
// request as published (without its requests) and the number of requests.
func publishAnthropic(ctx context.Context, js jetstream.JetStream, key, path string, size, maxPayload int64) (contract.Request, int, error) {
	f, err := os.Open(path)
	if err != nil {
		return contract.Request{}, 0, err
	}
	defer f.Close()
	if size+int64(inlineMargin) <= maxPayload {
		req, err := readAnthropic(f, key)
		if err != nil {
			return req, 0, fmt.Errorf("%s: %w", path, err)
		}
		if err := ops.Publish(ctx, js, req); err != nil {
			return req, 0, err
		}
		n := len(req.Requests)
		req.Requests = nil
		return req, n, nil
	}
	req := anthropicJob(key)
	req.InputObject = key
	if err := req.Validate(); err != nil {
		return req, 0, err
	}
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		n, err := writeAnthropicJSONL(pw, f)
		if err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
		pw.CloseWithError(err)
		done <- n
	}()
	err = ops.PutIntake(ctx, js, req.InputObject, pr)
	pr.CloseWithError(errors.New("put stopped")) // unblocks the writer if the put failed
	n := <-done
	if err != nil {
		return req, 0, err
	}
	return req, n, ops.Publish(ctx, js, req)
}

// anthropicJob is the request of an Anthropic job, before its input.
func anthropicJob(key string) contract.Request {
	return contract.Request{IdempotencyKey: key, Provider: contract.ProviderAnthropic, Endpoint: contract.AnthropicEndpoint}
}

// checkAnthropicKey applies the contract's idempotency key rules to key.
func checkAnthropicKey(key string) error {
	if key == "" {
		return errors.New("--key is required for an Anthropic JSONL file")
	}
	probe := contract.Request{IdempotencyKey: key}
	var ce *contract.Error
	if err := probe.Validate(); errors.As(err, &ce) && (ce.Code == contract.CodeMissingKey || ce.Code == contract.CodeInvalidKey) {
		return fmt.Errorf("--key %q: %s", key, ce.Message)
	}
	return nil
}

// checkAnthropicFile checks the Anthropic batch request file at path
// without keeping its requests: it returns their number and their size as
// sent (what decides between inline and input_object).
func checkAnthropicFile(path string) (n int, size int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	n, err = scanAnthropic(f, func(it contract.RequestItem) error {
		size += itemSize(it)
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, size, nil
}

// readAnthropic converts an Anthropic batch request file to the job's
// request, its requests inline, checked by the contract's rules.
func readAnthropic(r io.Reader, key string) (contract.Request, error) {
	req := anthropicJob(key)
	req.Requests = []contract.RequestItem{}
	if _, err := scanAnthropic(r, func(it contract.RequestItem) error {
		req.Requests = append(req.Requests, it)
		return nil
	}); err != nil {
		return req, err
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// writeAnthropicJSONL converts an Anthropic batch request file to the
// contract's input lines {"custom_id","method":"POST","url":"/v1/messages",
// "body"}, one request at a time, and returns their number.
func writeAnthropicJSONL(w io.Writer, r io.Reader) (int, error) {
	return scanAnthropic(r, func(it contract.RequestItem) error {
		one := contract.Request{Endpoint: contract.AnthropicEndpoint, Requests: []contract.RequestItem{it}}
		line, err := one.JSONL()
		if err != nil {
			return err
		}
		_, err = w.Write(line)
		return err
	})
}

// scanAnthropic reads an Anthropic batch request file line by line (blank
// lines skipped), checks every line and the file's limits, and calls fn
// with each request converted. It returns the number of requests; an error
// names the line and what is wrong with it. The size limit applies to the
// contract's input lines (what the fleet checks in batch_intake), counting
// each params as written, not compacted.
func scanAnthropic(r io.Reader, fn func(contract.RequestItem) error) (int, error) {
	seen := make(map[string]int)
	n := 0
	var size int64
	err := results.ScanLines(r, func(line int, b []byte) error {
		if n == contract.MaxAnthropicRequests {
			return fmt.Errorf("the file has more than %d requests, Anthropic's limit", contract.MaxAnthropicRequests)
		}
		it, err := anthropicItem(bytes.TrimSpace(b))
		if err != nil {
			return err
		}
		if first, dup := seen[it.CustomID]; dup {
			return fmt.Errorf("custom_id %q is not unique (line %d has it too)", it.CustomID, first)
		}
		seen[it.CustomID] = line
		if size += itemSize(it); size > intake.MaxAnthropicBytes {
			return fmt.Errorf("the requests are larger than %d bytes, Anthropic's limit", intake.MaxAnthropicBytes)
		}
		n++
		return fn(it)
	})
	if err == nil && n == 0 {
		err = errors.New("the file has no requests")
	}
	return n, err
}

func itemSize(it contract.RequestItem) int64 {
	return int64(lineOverhead + len(it.CustomID) + len(it.Body))
}

// anthropicItem converts one line of an Anthropic batch request file,
// {"custom_id": "...", "params": {...}}, to a contract request item
// {custom_id, body: params}: custom_id by the contract's Anthropic rule,
// params a JSON object with the Messages API's required parameters.
func anthropicItem(line []byte) (contract.RequestItem, error) {
	var it contract.RequestItem
	var fields map[string]json.RawMessage
	if len(line) == 0 || line[0] != '{' {
		return it, errors.New(`not a JSON object {"custom_id", "params"}`)
	}
	if err := json.Unmarshal(line, &fields); err != nil {
		return it, fmt.Errorf("not a JSON object: %v", err)
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if k == "custom_id" || k == "params" {
			continue
		}
		hint := ""
		if k == "body" || k == "method" || k == "url" {
			hint = " (an OpenAI batch line? publish it without --provider anthropic)"
		}
		return it, fmt.Errorf(`unknown field %q: a line is {"custom_id", "params"}%s`, k, hint)
	}
	id, ok := fields["custom_id"]
	switch {
	case !ok || string(id) == "null":
		return it, errors.New("custom_id is required")
	case json.Unmarshal(id, &it.CustomID) != nil:
		return it, fmt.Errorf("custom_id must be a string, got %s", clip(string(id), 40))
	case it.CustomID == "":
		return it, errors.New("custom_id is required")
	case !contract.ValidAnthropicCustomID(it.CustomID):
		return it, fmt.Errorf("custom_id %q: an anthropic custom_id is 1..64 characters of [a-zA-Z0-9_-]", it.CustomID)
	}
	params, ok := fields["params"]
	switch {
	case !ok || string(params) == "null":
		return it, errors.New("params is required")
	case params[0] != '{':
		return it, fmt.Errorf("params must be a JSON object (Messages API parameters), got %s", clip(string(params), 40))
	}
	if err := checkParams(params); err != nil {
		return it, err
	}
	it.Body = params
	return it, nil
}

// checkParams checks the Messages API's required parameters: model,
// max_tokens and messages.
func checkParams(params []byte) error {
	f := gjson.GetManyBytes(params, "model", "max_tokens", "messages")
	model, maxTokens, messages := f[0], f[1], f[2]
	switch {
	case model.Type != gjson.String || model.Str == "":
		return errors.New("params.model is required (a model name)")
	case maxTokens.Type != gjson.Number || maxTokens.Num < 1 || maxTokens.Num != float64(int64(maxTokens.Num)):
		return errors.New("params.max_tokens is required (an integer of at least 1)")
	case !messages.IsArray() || messages.Get("#").Int() == 0:
		return errors.New("params.messages is required (a list of at least one message)")
	}
	return nil
}
