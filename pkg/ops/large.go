package ops

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/intake"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
)

// FileJob describes a batch input file to publish as one job.
type FileJob struct {
	Key      string
	Path     string
	Metadata map[string]string
	// MaxPayload is the NATS server's max payload (nats.Conn.MaxPayload):
	// a message that would not fit goes by reference (input_object).
	MaxPayload int64
}

// payloadMargin leaves room in a NATS message for the request's other
// fields and the headers.
const payloadMargin = 8 << 10

// PublishFile publishes an OpenAI batch JSONL file as one job. The file is
// checked line by line first (the rules the fleet and the vendor apply).
// A file that fits in one NATS message is sent inline (requests); a larger
// one is put into the batch_intake object store under the job's key and
// sent as input_object (contract v1.1, "Large inputs"), streamed from disk.
// It returns the request as published (without its requests) and the
// number of requests.
func PublishFile(ctx context.Context, js jetstream.JetStream, job FileJob) (contract.Request, int, error) {
	endpoint, err := firstURL(job.Path)
	if err != nil {
		return contract.Request{}, 0, err
	}
	f, err := os.Open(job.Path)
	if err != nil {
		return contract.Request{}, 0, err
	}
	defer f.Close()
	sum, err := intake.Check(f, endpoint)
	if err != nil {
		return contract.Request{}, 0, fmt.Errorf("%s: %w", job.Path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return contract.Request{}, 0, err
	}
	if sum.Bytes+payloadMargin <= job.MaxPayload {
		req, err := RequestFromJSONL(job.Key, f, job.Metadata)
		if err != nil {
			return req, 0, err
		}
		if err := Publish(ctx, js, req); err != nil {
			return req, 0, err
		}
		req.Requests = nil
		return req, sum.Lines, nil
	}
	req := contract.Request{IdempotencyKey: job.Key, Endpoint: endpoint, Metadata: job.Metadata, InputObject: job.Key}
	if err := req.Validate(); err != nil {
		return req, 0, err
	}
	if err := PutIntake(ctx, js, req.InputObject, f); err != nil {
		return req, 0, err
	}
	return req, sum.Lines, Publish(ctx, js, req)
}

// firstURL returns the url of the file's first non-blank line: the job's
// endpoint.
func firstURL(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	br := bufio.NewReader(f)
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && len(jsonSpace(line)) > 0 {
			var l struct {
				URL string `json:"url"`
			}
			if jerr := json.Unmarshal(line, &l); jerr != nil || l.URL == "" {
				return "", fmt.Errorf("%s: line 1 has no url", path)
			}
			return l.URL, nil
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, contract.Errorf(contract.CodeInvalidInput, "the file has no requests"))
		}
	}
}

func jsonSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	return b
}

// PutIntake streams r into the batch_intake object store under name,
// creating the bucket (with the workers' defaults) if no worker has yet.
func PutIntake(ctx context.Context, js jetstream.JetStream, name string, r io.Reader) error {
	os, err := js.ObjectStore(ctx, jobstore.BucketIntake)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		os, err = js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{
			Bucket: jobstore.BucketIntake, Storage: jetstream.FileStorage,
			Description: "producers' large batch inputs (input_object), deleted when their job ends",
			TTL:         jobstore.Settings{}.WithDefaults().Retention,
		})
	}
	if err != nil {
		return fmt.Errorf("open object store %s: %w", jobstore.BucketIntake, err)
	}
	if _, err := os.Put(ctx, jetstream.ObjectMeta{Name: name}, r); err != nil {
		return fmt.Errorf("put %s/%s: %w", jobstore.BucketIntake, name, err)
	}
	return nil
}

// CopyResults streams the merged results (JSONL) of a job to w;
// jobstore.ErrNotFound if there are none.
func CopyResults(ctx context.Context, js jetstream.JetStream, key string, w io.Writer) (int64, error) {
	os, err := js.ObjectStore(ctx, jobstore.BucketResults)
	if err != nil {
		return 0, fmt.Errorf("open object store %s: %w", jobstore.BucketResults, err)
	}
	r, err := os.Get(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, fmt.Errorf("results of %q: %w", key, jobstore.ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("results of %q: %w", key, err)
	}
	defer r.Close()
	return io.Copy(w, r)
}
