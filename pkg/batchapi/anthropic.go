package batchapi

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/base32"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// Anthropic is the Anthropic Message Batches client, on anthropic-sdk-go
// with the SDK's own retries off (the fleet decides what to retry: a
// create whose answer was lost must be searched for, never sent again).
type Anthropic struct {
	c   anthropic.Client
	cfg Config
}

// NewAnthropic returns a client (cfg.APIKey is ANTHROPIC_API_KEY,
// cfg.BaseURL ANTHROPIC_BASE_URL); it makes no call.
func NewAnthropic(cfg Config) *Anthropic {
	cfg, hc := cfg.withDefaults(64, "anthropic")
	opts := []option.RequestOption{option.WithMaxRetries(0), option.WithAPIKey(cfg.APIKey), option.WithHTTPClient(hc)}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(cfg.BaseURL))
	}
	return &Anthropic{c: anthropic.NewClient(opts...), cfg: cfg}
}

// Anthropic's processing statuses.
const (
	anthropicInProgress = "in_progress"
	anthropicCanceling  = "canceling"
	anthropicEnded      = "ended"
)

// AnthropicStatus maps a Message Batch's processing status onto the
// contract's batch statuses: in_progress -> in_progress, canceling ->
// cancelling, and ended -> cancelled when a cancel was initiated, expired
// when requests expired (the batch reached its 24 h limit), else
// completed. An unknown status is returned as it is.
func AnthropicStatus(processing string, cancelInitiated bool, expired int64) string {
	switch processing {
	case anthropicInProgress:
		return contract.StatusInProgress
	case anthropicCanceling:
		return contract.StatusCancelling
	case anthropicEnded:
		switch {
		case cancelInitiated:
			return contract.StatusCancelled
		case expired > 0:
			return contract.StatusExpired
		}
		return contract.StatusCompleted
	}
	return processing
}

// AnthropicCounts maps Message Batch request counts onto the contract's:
// total is every request; completed the succeeded ones; failed the
// errored, canceled and expired ones. (Anthropic moves requests out of
// processing only when the whole batch ends: until then completed and
// failed are 0.)
func AnthropicCounts(processing, succeeded, errored, canceled, expired int64) contract.Counts {
	return contract.Counts{
		Total:     int(processing + succeeded + errored + canceled + expired),
		Completed: int(succeeded),
		Failed:    int(errored + canceled + expired),
	}
}

func fromAnthropic(b *anthropic.MessageBatch) Batch {
	rc := b.RequestCounts
	out := Batch{
		ID:        b.ID,
		Status:    AnthropicStatus(string(b.ProcessingStatus), !b.CancelInitiatedAt.IsZero(), rc.Expired),
		Endpoint:  AnthropicEndpoint,
		Counts:    AnthropicCounts(rc.Processing, rc.Succeeded, rc.Errored, rc.Canceled, rc.Expired),
		CreatedAt: b.CreatedAt.UTC(),
		ExpiresAt: b.ExpiresAt.UTC(),
	}
	if !b.EndedAt.IsZero() {
		out.FinishedAt = b.EndedAt.UTC()
	}
	return out
}

// AnthropicEndpoint is the endpoint of every Anthropic batch request.
const AnthropicEndpoint = "/v1/messages"

// call waits for the request budget, then bounds the call by
// CallTimeout. A budget that cannot be had (ctx ended) cancels the
// returned context, so the call fails at once with ctx's error.
func (a *Anthropic) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return a.bounded(ctx, a.cfg.CallTimeout)
}

// bounded is call with another bound (TransferTimeout for creates and
// results).
func (a *Anthropic) bounded(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if a.cfg.Limiter != nil {
		if err := a.cfg.Limiter.Wait(ctx); err != nil {
			ctx, cancel := context.WithCancelCause(ctx)
			cancel(err)
			return ctx, func() {}
		}
	}
	return context.WithTimeout(ctx, d)
}

// CreateFrom creates a Message Batch from r, one request per line in
// Anthropic's shape ({"custom_id": ..., "params": {...}}), streamed as the
// body {"requests": [...]} without holding it in memory. Blank lines are
// skipped. The call is bounded by TransferTimeout. An error may leave a
// batch created (the answer was lost): the caller searches before
// creating again.
func (a *Anthropic) CreateFrom(ctx context.Context, r io.Reader) (Batch, error) {
	ctx, cancel := a.bounded(ctx, a.cfg.TransferTimeout)
	defer cancel()
	body := &requestsBody{src: bufio.NewReaderSize(r, 64<<10), state: bodyStart}
	b, err := a.c.Messages.Batches.New(ctx, anthropic.MessageBatchNewParams{},
		option.WithRequestBody("application/json", body))
	if err != nil {
		return Batch{}, Classify(ctx, "create message batch", err)
	}
	if body.err != nil {
		return Batch{}, body.err
	}
	return fromAnthropic(b), nil
}

// requestsBody turns JSONL into {"requests":[line,line,...]} as it is read.
type requestsBody struct {
	src   *bufio.Reader
	state int
	pend  []byte // bytes ready to hand out
	n     int    // lines written
	err   error
}

const (
	bodyStart = iota
	bodyLines
	bodyEnd
	bodyDone
)

func (b *requestsBody) Read(p []byte) (int, error) {
	for len(b.pend) == 0 {
		switch b.state {
		case bodyStart:
			b.pend, b.state = []byte(`{"requests":[`), bodyLines
		case bodyLines:
			line, err := b.src.ReadSlice('\n')
			if errors.Is(err, bufio.ErrBufferFull) {
				// A line longer than the buffer: read it whole (copy the
				// buffered part first: the next read reuses the buffer).
				head := append([]byte(nil), line...)
				rest, rerr := b.src.ReadBytes('\n')
				line, err = append(head, rest...), rerr
			}
			trimmed := strings.TrimSpace(string(line))
			if trimmed != "" {
				if b.n > 0 {
					b.pend = append(b.pend[:0], ',')
				}
				b.pend = append(b.pend, trimmed...)
				b.n++
			}
			if errors.Is(err, io.EOF) {
				b.state = bodyEnd
			} else if err != nil {
				b.err = fmt.Errorf("read the batch input: %w", err)
				return 0, b.err
			}
		case bodyEnd:
			b.pend, b.state = []byte(`]}`), bodyDone
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, b.pend)
	b.pend = b.pend[n:]
	return n, nil
}

// Get reads a batch.
func (a *Anthropic) Get(ctx context.Context, id string) (Batch, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	b, err := a.c.Messages.Batches.Get(ctx, id, anthropic.MessageBatchGetParams{})
	if err != nil {
		return Batch{}, Classify(ctx, "get message batch "+id, err)
	}
	return fromAnthropic(b), nil
}

// List reads one page of batches, newest first, after the batch afterID
// ("" for the first page); more reports whether older ones follow.
func (a *Anthropic) List(ctx context.Context, afterID string, limit int) ([]Batch, bool, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	p := anthropic.MessageBatchListParams{Limit: anthropic.Int(int64(cmp.Or(limit, 100)))}
	if afterID != "" {
		p.AfterID = anthropic.String(afterID)
	}
	page, err := a.c.Messages.Batches.List(ctx, p)
	if err != nil {
		return nil, false, Classify(ctx, "list message batches", err)
	}
	out := make([]Batch, 0, len(page.Data))
	for i := range page.Data {
		out = append(out, fromAnthropic(&page.Data[i]))
	}
	return out, page.HasMore, nil
}

// Cancel asks the vendor to cancel a batch.
func (a *Anthropic) Cancel(ctx context.Context, id string) (Batch, error) {
	ctx, cancel := a.call(ctx)
	defer cancel()
	b, err := a.c.Messages.Batches.Cancel(ctx, id, anthropic.MessageBatchCancelParams{})
	if err != nil {
		return Batch{}, Classify(ctx, "cancel message batch "+id, err)
	}
	return fromAnthropic(b), nil
}

// Delete removes an ended batch and its results (404 is not an error).
func (a *Anthropic) Delete(ctx context.Context, id string) error {
	ctx, cancel := a.call(ctx)
	defer cancel()
	_, err := a.c.Messages.Batches.Delete(ctx, id, anthropic.MessageBatchDeleteParams{})
	if err != nil {
		if ve, ok := AsError(Classify(ctx, "", err)); ok && ve.StatusCode == http.StatusNotFound {
			return nil
		}
		return Classify(ctx, "delete message batch "+id, err)
	}
	return nil
}

// Results streams an ended batch's results as output-file lines in the
// fleet's (OpenAI's) shape, one per request, in the vendor's order (any
// order): see AnthropicLine. The stream is bounded by TransferTimeout.
func (a *Anthropic) Results(ctx context.Context, b Batch) (io.ReadCloser, error) {
	id := b.ID
	ctx, cancel := a.bounded(ctx, a.cfg.TransferTimeout)
	st := a.c.Messages.Batches.ResultsStreaming(ctx, id, anthropic.MessageBatchResultsParams{})
	if err := st.Err(); err != nil {
		cancel()
		return nil, Classify(ctx, "results of message batch "+id, err)
	}
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		defer st.Close()
		w := bufio.NewWriterSize(pw, 64<<10)
		for st.Next() {
			line, err := AnthropicLine([]byte(st.Current().RawJSON()))
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			data, _ := line.MarshalJSON()
			if _, err := w.Write(append(data, '\n')); err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		if err := st.Err(); err != nil {
			pw.CloseWithError(Classify(ctx, "results of message batch "+id, err))
			return
		}
		pw.CloseWithError(w.Flush())
	}()
	return pr, nil
}

// anthropicErrorStatus is the HTTP status an errored request's error type
// stands for: what decides whether it is retried (5xx, 429: yes; 4xx: no).
var anthropicErrorStatus = map[string]int{
	"invalid_request_error": http.StatusBadRequest,
	"authentication_error":  http.StatusUnauthorized,
	"billing_error":         http.StatusPaymentRequired,
	"permission_error":      http.StatusForbidden,
	"not_found_error":       http.StatusNotFound,
	"request_too_large":     http.StatusRequestEntityTooLarge,
	"rate_limit_error":      http.StatusTooManyRequests,
	"api_error":             http.StatusInternalServerError,
	"timeout_error":         http.StatusGatewayTimeout,
	"overloaded_error":      529,
}

// AnthropicLine maps one line of a Message Batch's results onto an
// output-file line the fleet merges like OpenAI's, keeping the provider's
// raw response as the body:
//
//   - succeeded: status 200, body = the Message;
//   - errored: the error type's HTTP status (invalid_request_error 400 and
//     other client errors are final; api_error 500, overloaded_error 529,
//     rate_limit_error 429, timeout_error 504 are retried), body = the
//     error response, error {code: <type>, message};
//   - canceled: no response, error {code: batch_cancelled} (final);
//   - expired: no response, error {code: batch_expired} (retried).
//
// The line's id is the Message id when there is one. custom_id is the
// vendor's (the caller maps it back to the producer's).
func AnthropicLine(raw []byte) (results.Line, error) {
	if !gjson.ValidBytes(raw) {
		return results.Line{}, fmt.Errorf("%w: not JSON", results.ErrInvalidLine)
	}
	g := gjson.ParseBytes(raw)
	l := results.Line{CustomID: g.Get("custom_id").String()}
	if l.CustomID == "" {
		return results.Line{}, fmt.Errorf("%w: missing custom_id", results.ErrInvalidLine)
	}
	res := g.Get("result")
	switch t := res.Get("type").String(); t {
	case "succeeded":
		msg := res.Get("message")
		l.ID, l.StatusCode, l.Body = msg.Get("id").String(), http.StatusOK, compact(msg.Raw)
	case "errored":
		e := res.Get("error")
		inner := e.Get("error")
		if !inner.Exists() {
			inner = e
		}
		typ := inner.Get("type").String()
		l.StatusCode = cmp.Or(anthropicErrorStatus[typ], http.StatusBadRequest)
		if typ != "" && anthropicErrorStatus[typ] == 0 && strings.Contains(typ, "server") {
			l.StatusCode = http.StatusInternalServerError
		}
		l.Body = compact(e.Raw)
		l.Error = &results.LineError{Code: cmp.Or(typ, "errored"), Message: inner.Get("message").String()}
	case "canceled":
		l.Error = &results.LineError{Code: "batch_cancelled", Message: "the batch was cancelled before this request ran"}
	case "expired":
		l.Error = &results.LineError{Code: "batch_expired", Message: "the batch expired before this request ran"}
	default:
		return results.Line{}, fmt.Errorf("%w: custom_id %q: unknown result type %q", results.ErrInvalidLine, l.CustomID, t)
	}
	return l, nil
}

func compact(raw string) json.RawMessage {
	if raw == "" || raw == "null" {
		return nil
	}
	var b bytes.Buffer
	b.Grow(len(raw))
	if err := json.Compact(&b, []byte(raw)); err != nil {
		return json.RawMessage(raw)
	}
	return b.Bytes()
}

// JobTag is a short tag (10 characters of [a-z2-7]) derived from a vendor
// idempotency key. Anthropic batches carry no metadata: every request of
// an Anthropic batch gets the custom_id "<tag>-<n>" (n: the request's line
// in the batch input, from 0), so a batch found after a lost create answer
// can be told to be the key's (its results name the tag), and n maps each
// result back to the producer's custom_id.
func JobTag(vendorKey string) string {
	sum := sha256.Sum256([]byte(vendorKey))
	return strings.ToLower(base32.StdEncoding.EncodeToString(sum[:]))[:10]
}

// AnthropicCustomID is the vendor custom_id of the n-th request of tag's batch.
func AnthropicCustomID(tag string, n int) string { return tag + "-" + strconv.Itoa(n) }

var vendorIDRE = regexp.MustCompile(`^([a-z2-7]{10})-(\d{1,6})$`)

// ParseAnthropicCustomID splits a vendor custom_id made by
// AnthropicCustomID; ok is false for any other.
func ParseAnthropicCustomID(id string) (tag string, n int, ok bool) {
	m := vendorIDRE.FindStringSubmatch(id)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(m[2])
	return m[1], n, err == nil
}

// anthropicIDRE is the rule for Anthropic custom_ids.
var anthropicIDRE = regexp.MustCompile(`^[a-zA-Z0-9_-]{1,64}$`)

// ValidAnthropicCustomID reports whether id is a custom_id Anthropic takes.
func ValidAnthropicCustomID(id string) bool { return anthropicIDRE.MatchString(id) }

// FindCreated lists the batches created at or after since (newest first,
// stopping at the first older one) with count requests: the candidates
// for a create whose answer was lost. The caller tells them apart by the
// job tag in their results once they end, or by creation time.
func (a *Anthropic) FindCreated(ctx context.Context, since time.Time, count int) ([]Batch, error) {
	var out []Batch
	after := ""
	for {
		page, more, err := a.List(ctx, after, 100)
		if err != nil {
			return nil, err
		}
		for _, b := range page {
			if b.CreatedAt.Before(since) {
				return out, nil
			}
			if b.Counts.Total == count {
				out = append(out, b)
			}
		}
		if !more || len(page) == 0 {
			return out, nil
		}
		after = page[len(page)-1].ID
	}
}

// AnthropicRequests turns a batch input in the fleet's stored form (one
// {"custom_id", "method", "url", "body"} per line, body holding the
// Messages parameters) into Anthropic's batch requests, streamed: the n-th
// line (from 0, blank lines skipped) becomes {"custom_id":
// AnthropicCustomID(tag, n), "params": body}. A line without an object
// body fails the read.
func AnthropicRequests(r io.Reader, tag string) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		w := bufio.NewWriterSize(pw, 64<<10)
		n := 0
		err := results.ScanLines(r, func(_ int, line []byte) error {
			body := gjson.GetBytes(line, "body")
			if !body.IsObject() {
				return errors.New("body is not an object")
			}
			_, _ = w.WriteString(`{"custom_id":"`)
			_, _ = w.WriteString(AnthropicCustomID(tag, n))
			_, _ = w.WriteString(`","params":`)
			_, _ = w.WriteString(body.Raw)
			_, err := w.WriteString("}\n")
			n++
			return err
		})
		if err == nil {
			err = w.Flush()
		}
		pw.CloseWithError(err)
	}()
	return pr
}
