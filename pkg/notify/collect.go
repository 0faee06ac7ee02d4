package notify

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/tokens"
)

// Synthetic per-request error codes for requests a batch ended without
// running (no line in either file).
const (
	codeNotRun    = "batch_expired"   // retryable, as OpenAI's own code
	codeCancelled = "batch_cancelled" // final: the job was cancelled
	codeMissing   = "missing_result"  // the vendor returned no line for it
	codeTimedOut  = "timeout"         // retryable: cancelled at the hard timeout, action retry
	// codeTokenLimit is the vendor's batch error for a full enqueued token
	// limit: the batch is re-queued whole after TokenLimitDelay.
	codeTokenLimit = "token_limit_exceeded"
)

// collected is what collect learnt of an ended attempt: the change that
// records it final, and the job's merged results so far (nil when the
// attempt ran nothing, e.g. refused for the token limit).
type collected struct {
	key    string // the attempt's
	record func(*jobstore.Job) bool
	merged *results.Merged
}

// collect streams an ended batch's output and error files into the job's
// merged results (object store, batch_results/<job key>) and returns the
// record change that marks the attempt final. Memory holds one line at a
// time plus a small summary per custom_id, whatever the size of the files.
//
// The original batch's lines are the merged results as they stream in. A
// retry batch's lines go to their own object first (batch_results/<retry
// key>); the merged results are then rewritten from the previous ones and
// that object, keeping per custom_id the line the merge rules keep. A
// rewrite interrupted anywhere gives the same file when it runs again.
func (n *Notifier) collect(ctx context.Context, job *jobstore.Job, key string) (collected, error) {
	a := job.Attempt(key)
	v, err := n.vendorOf(job.Provider)
	if err != nil {
		return collected{}, err
	}
	b, err := v.Get(ctx, a.BatchID)
	if err != nil {
		return collected{}, err
	}
	if !contract.TerminalStatus(b.Status) {
		return collected{}, fmt.Errorf("batch %s handed over in status %s", b.ID, b.Status)
	}
	if b.Status == contract.StatusFailed && hasCode(b.Errors, codeTokenLimit) {
		// Not a failure of the requests: the vendor's enqueued token limit
		// was full. Nothing ran; the attempt is re-queued whole.
		failure := &contract.Error{Code: codeTokenLimit, Message: b.Errors[0].Message}
		return collected{key: key, record: markFinal(key, b, failure, nil, nil, 0, n.d.Now().UTC())}, nil
	}
	merged := &results.Merged{}
	if a.N > 0 {
		if err := n.readMerged(ctx, job.Key, merged, a.N); err != nil {
			return collected{}, err
		}
	}
	missing := missingError(b, a)
	segment := job.Key
	if a.N > 0 {
		segment = key
	}
	var count int
	if _, err := n.putStream(ctx, jobstore.BucketResults, segment, func(w io.Writer) error {
		var err error
		count, err = n.writeAttempt(ctx, w, job.Provider, a, b, merged, missing)
		return err
	}); err != nil {
		return collected{}, err
	}
	if a.N > 0 {
		if err := n.rewriteMerged(ctx, job.Key, segment, merged); err != nil {
			return collected{}, err
		}
	}
	var failure *contract.Error
	if b.Status == contract.StatusFailed {
		failure = &contract.Error{Code: missing.Code, Message: missing.Message}
	}
	ref := &contract.ResultsRef{Store: "jetstream-object-store", Bucket: jobstore.BucketResults, Object: job.Key, Lines: merged.Len()}
	billed := map[string]contract.Usage{}
	for model, u := range merged.BilledByModel(a.N) {
		billed[model] = contract.Usage(u)
	}
	n.log.Info().Ctx(ctx).Str("idempotency_key", key).Str("batch_id", b.ID).Str("status", b.Status).
		Int("completed", b.Counts.Completed).Int("failed", b.Counts.Failed).Int("lines", merged.Len()).Msg("batch results merged")
	return collected{key: key, record: markFinal(key, b, failure, ref, billed, count, n.d.Now().UTC()), merged: merged}, nil
}

// writeAttempt writes the attempt's result lines to w (and into merged):
// every line of its output and error files, then a synthetic failure for
// each request of its input the vendor returned no line for. It returns
// the number of requests of the attempt.
func (n *Notifier) writeAttempt(ctx context.Context, w io.Writer, provider string, a *jobstore.Attempt, b batchapi.Batch, merged *results.Merged, missing *results.LineError) (int, error) {
	out := results.NewWriter(w)
	seen := make(map[string]struct{}, max(a.Count, b.Counts.Total))
	v, err := n.vendorOf(provider)
	if err != nil {
		return 0, err
	}
	// An Anthropic batch's results name input lines: the input's ids are
	// read first, and serve the missing-lines pass below too.
	var ids []string
	rename := func(*results.Line) bool { return true }
	if provider == contract.ProviderAnthropic {
		if ids, err = n.inputIDs(ctx, a); err != nil {
			return 0, err
		}
		rename = anthropicRename(a.Key, ids)
	}
	rc, err := v.Results(ctx, b)
	if err != nil {
		return 0, err
	}
	err = results.Scan(rc, func(l results.Line) error {
		if !rename(&l) {
			n.log.Error().Str("batch_id", b.ID).Str("custom_id", l.CustomID).Msg("a result line of another job's batch: ignored (its request counts as missing)")
			return nil
		}
		seen[l.CustomID] = struct{}{}
		merged.Add(a.N, l)
		return out.Write(a.N, l)
	})
	_ = rc.Close()
	if err != nil {
		return 0, fmt.Errorf("read the results of batch %s: %w", b.ID, err)
	}
	count := len(seen)
	// Every request has a line unless the batch ended early: then the
	// input says which ones are missing (read only in that case).
	if total := max(a.Count, b.Counts.Total); total == 0 || count < total {
		count = 0
		each := func(id string) error {
			count++
			if _, ok := seen[id]; ok {
				return nil
			}
			l := results.Line{CustomID: id, Error: missing}
			merged.Add(a.N, l)
			return out.Write(a.N, l)
		}
		if ids != nil {
			for _, id := range ids {
				if err := each(id); err != nil {
					return 0, err
				}
			}
		} else if err := n.scanInput(ctx, a, func(id string, _ []byte) error { return each(id) }); err != nil {
			return 0, err
		}
	}
	_, err = out.Flush()
	return count, err
}

// vendorOf returns the client of a provider's batches ("" is OpenAI).
func (n *Notifier) vendorOf(provider string) (batches, error) {
	if provider == contract.ProviderAnthropic {
		if n.d.Anthropic == nil {
			return nil, fmt.Errorf("notify: %w: %q", batchapi.ErrProviderUnavailable, provider)
		}
		return n.d.Anthropic, nil
	}
	return n.d.Vendor, nil
}

// inputIDs reads the custom_ids of an attempt's input, by line.
func (n *Notifier) inputIDs(ctx context.Context, a *jobstore.Attempt) ([]string, error) {
	ids := make([]string, 0, a.Count)
	err := n.scanInput(ctx, a, func(id string, _ []byte) error {
		ids = append(ids, id)
		return nil
	})
	return ids, err
}

// anthropicRename maps an Anthropic attempt's vendor custom_ids
// ("<tag>-<n>", see batchapi.JobTag) back to the producer's: n is the line
// of the attempt's input, ids its custom_ids. It reports false for an id
// that is not of this attempt.
func anthropicRename(key string, ids []string) func(*results.Line) bool {
	tag := batchapi.JobTag(key)
	return func(l *results.Line) bool {
		t, i, ok := batchapi.ParseAnthropicCustomID(l.CustomID)
		if !ok || t != tag || i >= len(ids) {
			return false
		}
		l.CustomID = ids[i]
		return true
	}
}

// missingError is the synthetic error of requests the batch ended without
// running.
func missingError(b batchapi.Batch, a *jobstore.Attempt) *results.LineError {
	switch b.Status {
	case contract.StatusExpired:
		return &results.LineError{Code: codeNotRun, Message: "not run before the batch expired"}
	case contract.StatusCancelled:
		if a.TimedOut {
			return &results.LineError{Code: codeTimedOut, Message: "not run before the hard timeout; the batch was cancelled to retry it"}
		}
		return &results.LineError{Code: codeCancelled, Message: "not run: the batch was cancelled"}
	case contract.StatusFailed:
		e := contract.Error{Code: contract.CodeBatchFailed, Message: "the vendor failed the batch"}
		if len(b.Errors) > 0 {
			e = b.Errors[0]
		}
		return &results.LineError{Code: e.Code, Message: e.Message}
	}
	return &results.LineError{Code: codeMissing, Message: "the vendor returned no result for this request"}
}

func hasCode(errs []contract.Error, code string) bool {
	for _, e := range errs {
		if e.Code == code {
			return true
		}
	}
	return false
}

// markFinal returns the record change that makes the attempt final with
// what its batch ended with (false when it already is).
func markFinal(key string, b batchapi.Batch, failure *contract.Error, ref *contract.ResultsRef, billed map[string]contract.Usage, count int, now time.Time) func(*jobstore.Job) bool {
	return func(j *jobstore.Job) bool {
		a := j.Attempt(key)
		if a == nil || a.State != jobstore.AttemptSubmitted {
			return false
		}
		a.State, a.Status, a.FinishedAt = jobstore.AttemptFinal, b.Status, now
		a.OutputFileID, a.ErrorFileID, a.Counts, a.Error = b.OutputFileID, b.ErrorFileID, b.Counts, failure
		if len(billed) > 0 {
			a.Billed = billed
		}
		if ref != nil {
			j.Results = ref
		}
		if a.N == 0 && j.Total == 0 {
			j.Total = count
		}
		return true
	}
}

// readMerged adds the job's merged results so far (lines of attempts
// before below) to merged; none stored yet is no error.
func (n *Notifier) readMerged(ctx context.Context, jobKey string, merged *results.Merged, below int) error {
	rc, _, err := n.d.Store.OpenObject(ctx, jobstore.BucketResults, jobKey)
	if errors.Is(err, jobstore.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	return merged.AddMerged(rc, below)
}

// rewriteMerged replaces the job's merged results with the merge of the
// previous ones and a retry's segment, then deletes the segment. The old
// object stays in place until the new one is complete.
func (n *Notifier) rewriteMerged(ctx context.Context, jobKey, segment string, merged *results.Merged) error {
	_, err := n.putStream(ctx, jobstore.BucketResults, jobKey, func(w io.Writer) error {
		var sources []io.Reader
		old, _, err := n.d.Store.OpenObject(ctx, jobstore.BucketResults, jobKey)
		switch {
		case err == nil:
			defer old.Close()
			sources = append(sources, old)
		case !errors.Is(err, jobstore.ErrNotFound):
			return err
		}
		seg, _, err := n.d.Store.OpenObject(ctx, jobstore.BucketResults, segment)
		if err != nil {
			return err
		}
		defer seg.Close()
		_, err = merged.Merge(w, append(sources, seg)...)
		return err
	})
	if err != nil {
		return err
	}
	if err := n.d.Store.DeleteObject(ctx, jobstore.BucketResults, segment); err != nil {
		n.log.Warn().Err(err).Str("object", segment).Msg("delete merged segment")
	}
	return nil
}

// putStream stores what produce writes as the named object, streaming
// through a pipe. A produce error fails the put, which then leaves any
// previous object of that name in place.
func (n *Notifier) putStream(ctx context.Context, bucket, name string, produce func(io.Writer) error) (int64, error) {
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := produce(pw)
		_ = pw.CloseWithError(err)
		errc <- err
	}()
	size, err := n.d.Store.PutObject(ctx, bucket, name, pr)
	_ = pr.CloseWithError(errors.New("object put ended")) // unblocks produce if the put failed first
	if perr := <-errc; perr != nil {
		return 0, perr
	}
	return size, err
}

// openInput opens the JSONL input of an attempt: the stored copy (the
// fleet's, or the producer's input_object), or the vendor's input file.
func (n *Notifier) openInput(ctx context.Context, a *jobstore.Attempt) (io.ReadCloser, error) {
	if a.InputObject != "" {
		rc, _, err := n.d.Store.OpenObject(ctx, a.Bucket(), a.InputObject)
		return rc, err
	}
	if a.InputFileID != "" {
		return n.d.Vendor.Download(ctx, a.InputFileID)
	}
	return nil, fmt.Errorf("attempt %q has no input", a.Key)
}

// scanInput streams an attempt's input and calls fn with each line's
// custom_id and the line itself (valid only during the call).
func (n *Notifier) scanInput(ctx context.Context, a *jobstore.Attempt, fn func(id string, line []byte) error) error {
	rc, err := n.openInput(ctx, a)
	if err != nil {
		return err
	}
	defer rc.Close()
	err = results.ScanLines(rc, func(_ int, line []byte) error {
		id := gjson.GetBytes(line, "custom_id")
		if id.Type != gjson.String || id.Str == "" {
			return errors.New("no custom_id")
		}
		return fn(id.Str, line)
	})
	if err != nil {
		return fmt.Errorf("read input of %s: %w", a.Key, err)
	}
	return nil
}

// writeRetryInput stores, as batch_inputs/<key>, the lines of the job's
// original input whose custom_id is in ids (streamed), and returns an
// estimate of their input tokens as intake makes it (each line's body with
// its model, a sample of the lines of OpenAI models tokenized:
// tokens.Tally; a line without a body object by the byte rule).
func (n *Notifier) writeRetryInput(ctx context.Context, job *jobstore.Job, key string, ids []string) (int64, error) {
	want := make(map[string]struct{}, len(ids))
	for _, id := range ids {
		want[id] = struct{}{}
	}
	var est tokens.Tally
	var other int64
	_, err := n.putStream(ctx, jobstore.BucketInputs, key, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		err := n.scanInput(ctx, &job.Attempts[0], func(id string, line []byte) error {
			if _, ok := want[id]; !ok {
				return nil
			}
			line = bytes.TrimRight(line, " \t\r\n")
			if body := gjson.GetBytes(line, "body"); body.IsObject() {
				var raw []byte
				if i, j := body.Index, body.Index+len(body.Raw); i > 0 && j <= len(line) {
					raw = line[i:j] // where body.Raw is in line: no copy
				} else {
					raw = []byte(body.Raw)
				}
				est.Add(body.Get("model").Str, raw)
			} else {
				other += tokens.Bytes(int64(len(line)))
			}
			if _, err := bw.Write(line); err != nil {
				return err
			}
			return bw.WriteByte('\n')
		})
		if err != nil {
			return err
		}
		return bw.Flush()
	})
	return est.Tokens() + other, err
}
