// Package ops holds the operator and producer tooling behind the
// batchfleet command: publishing a job, awaiting its batch.completed,
// fetching merged results and working the dead-letter streams.
package ops

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// RequestFromJSONL builds a batch request from an OpenAI batch input file
// (lines {"custom_id","method","url","body"}); the endpoint is the lines' url.
func RequestFromJSONL(key string, r io.Reader, meta map[string]string) (contract.Request, error) {
	req := contract.Request{IdempotencyKey: key, Metadata: meta}
	br := bufio.NewReader(r)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && string(line) != "\n" {
			var l struct {
				CustomID string          `json:"custom_id"`
				URL      string          `json:"url"`
				Body     json.RawMessage `json:"body"`
			}
			if jerr := json.Unmarshal(line, &l); jerr != nil {
				return req, fmt.Errorf("line %d: %w", n, jerr)
			}
			if req.Endpoint == "" {
				req.Endpoint = l.URL
			} else if l.URL != req.Endpoint {
				return req, fmt.Errorf("line %d: url %q differs from %q", n, l.URL, req.Endpoint)
			}
			req.Requests = append(req.Requests, contract.RequestItem{CustomID: l.CustomID, Body: l.Body})
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return req, err
		}
	}
	if err := req.Validate(); err != nil {
		return req, err
	}
	return req, nil
}

// Publish JetStream-publishes a request with its key as Nats-Msg-Id.
func Publish(ctx context.Context, js jetstream.JetStream, req contract.Request) error {
	if err := stream.EnsureMissing(ctx, js, stream.Settings{}, stream.Requests); err != nil {
		return err
	}
	_, err := stream.Publish(ctx, js, contract.SubjectRequests, req, stream.WithMsgID(req.IdempotencyKey))
	return err
}

// WaitCompleted returns the batch.completed event of key, waiting for it
// if it has not been published yet.
func WaitCompleted(ctx context.Context, js jetstream.JetStream, key string) (contract.Completed, error) {
	if err := stream.EnsureMissing(ctx, js, stream.Settings{}, stream.Events); err != nil {
		return contract.Completed{}, err
	}
	c, err := js.OrderedConsumer(ctx, stream.Events, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{contract.SubjectCompleted},
	})
	if err != nil {
		return contract.Completed{}, fmt.Errorf("watch %s: %w", contract.SubjectCompleted, err)
	}
	it, err := c.Messages()
	if err != nil {
		return contract.Completed{}, err
	}
	defer it.Stop()
	go func() { <-ctx.Done(); it.Stop() }()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return contract.Completed{}, ctx.Err()
			}
			return contract.Completed{}, err
		}
		var ev contract.Completed
		if json.Unmarshal(m.Data(), &ev) == nil && ev.IdempotencyKey == key {
			return ev, nil
		}
	}
}

// Results returns the merged results (JSONL) of a job (small jobs; stream
// large ones with CopyResults).
func Results(ctx context.Context, js jetstream.JetStream, key string) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := CopyResults(ctx, js, key, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Job returns a job's durable record.
func Job(ctx context.Context, js jetstream.JetStream, key string) (*jobstore.Job, error) {
	st, err := jobstore.Open(ctx, js, jobstore.Settings{})
	if err != nil {
		return nil, err
	}
	return st.Get(ctx, key)
}

// ErrFinal: the job is already final (Cancel).
var ErrFinal = errors.New("not cancelled")

// Cancel publishes a batch.cancel for key (the fleet cancels its vendor
// batches and ends the job cancelled). It fails for a key the fleet has no
// record of, or whose job is already final.
func Cancel(ctx context.Context, js jetstream.JetStream, st *jobstore.Store, key string) error {
	j, err := st.Get(ctx, key)
	if err != nil {
		return err
	}
	if j.Final {
		return fmt.Errorf("%w: job %q is already final (%s)", ErrFinal, key, j.Outcome)
	}
	if err := stream.EnsureMissing(ctx, js, stream.Settings{}, stream.Cancels); err != nil {
		return err
	}
	_, err = stream.Publish(ctx, js, contract.SubjectCancel, contract.Cancel{IdempotencyKey: key})
	return err
}
