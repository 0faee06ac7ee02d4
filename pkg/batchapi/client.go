package batchapi

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/param"
	"github.com/openai/openai-go/v3/shared"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Config configures the vendor client.
type Config struct {
	// APIKey is the provider's key (OPENAI_API_KEY, ANTHROPIC_API_KEY).
	APIKey string `json:"-"`
	// BaseURL is OPENAI_BASE_URL or ANTHROPIC_BASE_URL (the SDK's default when empty).
	BaseURL string
	// CallTimeout bounds each call but uploads and downloads (VENDOR_CALL_TIMEOUT). Defaults to 30s.
	CallTimeout time.Duration
	// TransferTimeout bounds uploads and downloads (VENDOR_TRANSFER_TIMEOUT). Defaults to 10m.
	TransferTimeout time.Duration
	// HTTPClient overrides the HTTP client.
	HTTPClient *http.Client
	// Limiter, if set, is waited on before every call (Anthropic's
	// ANTHROPIC_RPM budget, shared by the fleet).
	Limiter interface {
		Wait(ctx context.Context) error
	}
}

// Client is the vendor client.
type Client struct {
	c   openai.Client
	cfg Config
}

// New returns a client; it makes no call.
func New(cfg Config) *Client {
	cfg, hc := cfg.withDefaults(256, "openai")
	opts := []option.RequestOption{option.WithMaxRetries(0), option.WithAPIKey(cfg.APIKey), option.WithHTTPClient(hc)}
	if cfg.BaseURL != "" {
		opts = append(opts, option.WithBaseURL(cfg.BaseURL))
	}
	return &Client{c: openai.NewClient(opts...), cfg: cfg}
}

// withDefaults fills the timeouts and returns the HTTP client of a
// provider's SDK: cfg.HTTPClient or one keeping idle connections per host,
// traced either way.
func (cfg Config) withDefaults(idlePerHost int, provider string) (Config, *http.Client) {
	cfg.CallTimeout = cmp.Or(cfg.CallTimeout, 30*time.Second)
	cfg.TransferTimeout = cmp.Or(cfg.TransferTimeout, 10*time.Minute)
	hc := cfg.HTTPClient
	if hc == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = idlePerHost
		hc = &http.Client{Transport: t}
	}
	return cfg, traced(hc, provider)
}

// Batch is the fleet's view of a vendor batch.
type Batch struct {
	ID           string
	Status       string
	Endpoint     string
	InputFileID  string
	OutputFileID string
	ErrorFileID  string
	Counts       contract.Counts
	Metadata     map[string]string
	Errors       []contract.Error
	Model        string
	Usage        contract.Usage
	CreatedAt    time.Time
	ExpiresAt    time.Time
	// FinishedAt is when the batch reached its terminal status (zero before).
	FinishedAt time.Time
}

func unix(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

func fromVendor(b *openai.Batch) Batch {
	out := Batch{
		ID: b.ID, Status: string(b.Status), Endpoint: b.Endpoint, InputFileID: b.InputFileID,
		OutputFileID: b.OutputFileID, ErrorFileID: b.ErrorFileID, Model: b.Model,
		Counts: contract.Counts{
			Total: int(b.RequestCounts.Total), Completed: int(b.RequestCounts.Completed), Failed: int(b.RequestCounts.Failed),
		},
		Usage:     contract.Usage{InputTokens: b.Usage.InputTokens, OutputTokens: b.Usage.OutputTokens, TotalTokens: b.Usage.TotalTokens},
		CreatedAt: unix(b.CreatedAt), ExpiresAt: unix(b.ExpiresAt),
		Metadata: map[string]string(b.Metadata),
	}
	for _, e := range b.Errors.Data {
		msg := e.Message
		if e.Line > 0 {
			msg = fmt.Sprintf("line %d: %s", e.Line, e.Message)
		}
		out.Errors = append(out.Errors, contract.Error{Code: e.Code, Message: msg})
	}
	out.FinishedAt = unix(max(b.CompletedAt, b.FailedAt, b.ExpiredAt, b.CancelledAt))
	return out
}

func (c *Client) call(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.CallTimeout)
}

// Upload uploads a JSONL batch input file (purpose "batch") held in memory
// and returns its id.
func (c *Client) Upload(ctx context.Context, name string, data []byte) (string, error) {
	return c.UploadFrom(ctx, name, bytes.NewReader(data), int64(len(data)))
}

// UploadFrom uploads a JSONL batch input file (purpose "batch") read from
// r, size bytes long, and returns its id. The multipart body is streamed:
// the file is never held in memory (openai-go's Files.New would buffer
// it), and it is sent with its exact Content-Length. A reader that ends
// before size bytes fails the upload.
func (c *Client) UploadFrom(ctx context.Context, name string, r io.Reader, size int64) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TransferTimeout)
	defer cancel()
	var head bytes.Buffer
	mw := multipart.NewWriter(&head)
	if err := mw.WriteField("purpose", string(openai.FilePurposeBatch)); err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name="file"; filename=%q`, name))
	h.Set("Content-Type", "application/jsonl")
	if _, err := mw.CreatePart(h); err != nil {
		return "", fmt.Errorf("upload file: %w", err)
	}
	prefix := bytes.Clone(head.Bytes())
	head.Reset()
	if err := mw.Close(); err != nil { // writes the closing boundary
		return "", fmt.Errorf("upload file: %w", err)
	}
	suffix := head.Bytes()
	// A reader that ends early fails before the closing boundary is sent,
	// so the vendor never stores a truncated file as a complete one.
	body := io.MultiReader(bytes.NewReader(prefix), &exactReader{r: r, left: size}, bytes.NewReader(suffix))
	length := int64(len(prefix)) + size + int64(len(suffix))
	var f openai.FileObject
	err := c.c.Post(ctx, "files", nil, &f,
		option.WithRequestBody(mw.FormDataContentType(), body),
		option.WithMiddleware(func(req *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			req.ContentLength = length
			return next(req)
		}))
	if err != nil {
		return "", Classify(ctx, "upload file", err)
	}
	return f.ID, nil
}

// exactReader yields exactly left bytes of r: io.ErrUnexpectedEOF if r
// ends sooner.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if errors.Is(err, io.EOF) {
		if e.left > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

// CreateParams are a batch's creation parameters.
type CreateParams struct {
	InputFileID      string
	Endpoint         string
	CompletionWindow string
	Metadata         map[string]string
}

// Create creates a batch, once: no automatic retry. An error whose
// Ambiguous() is true means the batch may exist anyway.
func (c *Client) Create(ctx context.Context, p CreateParams) (Batch, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	b, err := c.c.Batches.New(ctx, openai.BatchNewParams{
		InputFileID:      p.InputFileID,
		Endpoint:         openai.BatchNewParamsEndpoint(p.Endpoint),
		CompletionWindow: openai.BatchNewParamsCompletionWindow(p.CompletionWindow),
		Metadata:         shared.Metadata(p.Metadata),
	})
	if err != nil {
		return Batch{}, Classify(ctx, "create batch", err)
	}
	return fromVendor(b), nil
}

// Get retrieves a batch.
func (c *Client) Get(ctx context.Context, id string) (Batch, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	b, err := c.c.Batches.Get(ctx, id)
	if err != nil {
		return Batch{}, Classify(ctx, "get batch", err)
	}
	return fromVendor(b), nil
}

// Cancel asks the vendor to cancel a batch.
func (c *Client) Cancel(ctx context.Context, id string) (Batch, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	b, err := c.c.Batches.Cancel(ctx, id)
	if err != nil {
		return Batch{}, Classify(ctx, "cancel batch", err)
	}
	return fromVendor(b), nil
}

// listParams is one List page's query: after the cursor ("" for the first
// page), 1..100 entries.
func listParams(after string, limit int) openai.BatchListParams {
	q := openai.BatchListParams{Limit: param.NewOpt(int64(min(max(limit, 1), 100)))}
	if after != "" {
		q.After = param.NewOpt(after)
	}
	return q
}

// List returns one page of batches, newest first, after the cursor ("" for
// the first page), with at most limit (1..100) entries.
func (c *Client) List(ctx context.Context, after string, limit int) ([]Batch, bool, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	q := listParams(after, limit)
	page, err := c.c.Batches.List(ctx, q)
	if err != nil {
		return nil, false, Classify(ctx, "list batches", err)
	}
	out := make([]Batch, 0, len(page.Data))
	for i := range page.Data {
		out = append(out, fromVendor(&page.Data[i]))
	}
	return out, page.HasMore, nil
}

// briefPage is a List page decoded with encoding/json into the few fields
// a sweep reads: several times cheaper than the SDK's full decoding, which
// keeps every field's raw JSON.
type briefPage struct {
	Data []struct {
		ID            string            `json:"id"`
		Status        string            `json:"status"`
		CreatedAt     int64             `json:"created_at"`
		Metadata      map[string]string `json:"metadata"`
		RequestCounts struct {
			Total     int `json:"total"`
			Completed int `json:"completed"`
			Failed    int `json:"failed"`
		} `json:"request_counts"`
	} `json:"data"`
	HasMore bool `json:"has_more"`
}

// ListBrief is List with only ID, Status, Counts, Metadata and CreatedAt
// set: the same GET /v1/batches through the SDK, decoded leanly, for the
// poller's List sweep.
func (c *Client) ListBrief(ctx context.Context, after string, limit int) ([]Batch, bool, error) {
	ctx, cancel := c.call(ctx)
	defer cancel()
	q := listParams(after, limit)
	var page briefPage
	if err := c.c.Get(ctx, "batches", q, &page); err != nil {
		return nil, false, Classify(ctx, "list batches", err)
	}
	out := make([]Batch, len(page.Data))
	for i, b := range page.Data {
		out[i] = Batch{ID: b.ID, Status: b.Status, CreatedAt: unix(b.CreatedAt), Metadata: b.Metadata,
			Counts: contract.Counts{Total: b.RequestCounts.Total, Completed: b.RequestCounts.Completed, Failed: b.RequestCounts.Failed}}
	}
	return out, page.HasMore, nil
}

// FindByKey searches the vendor's batches, newest first, for one whose
// metadata idempotency_key is key, stopping at batches created before since.
// It returns nil when there is none. This is how a submission whose outcome
// is unknown is reconciled before any new create.
func (c *Client) FindByKey(ctx context.Context, key string, since time.Time) (*Batch, error) {
	after := ""
	for {
		page, more, err := c.List(ctx, after, 100)
		if err != nil {
			return nil, err
		}
		for i := range page {
			b := page[i]
			if b.Metadata[contract.MetaIdempotencyKey] == key {
				return &b, nil
			}
			if !since.IsZero() && b.CreatedAt.Before(since) {
				return nil, nil
			}
		}
		if !more || len(page) == 0 {
			return nil, nil
		}
		after = page[len(page)-1].ID
	}
}

// Content opens a file's content; the caller closes it.
func (c *Client) Content(ctx context.Context, fileID string) (io.ReadCloser, error) {
	resp, err := c.c.Files.Content(ctx, fileID)
	if err != nil {
		return nil, Classify(ctx, "download file", err)
	}
	return resp.Body, nil
}

// Download opens a file's content for streaming, bounded by the transfer
// timeout; the caller closes it. Errors while reading are classified like
// the call's own.
func (c *Client) Download(ctx context.Context, fileID string) (io.ReadCloser, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TransferTimeout)
	rc, err := c.Content(ctx, fileID)
	if err != nil {
		cancel()
		return nil, err
	}
	return &download{ctx: ctx, rc: rc, cancel: cancel}, nil
}

type download struct {
	ctx    context.Context
	rc     io.ReadCloser
	cancel context.CancelFunc
}

func (d *download) Read(p []byte) (int, error) {
	n, err := d.rc.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = Classify(d.ctx, "download file", err)
	}
	return n, err
}

func (d *download) Close() error {
	err := d.rc.Close()
	d.cancel()
	return err
}

// ReadFile downloads a whole file (for small files; stream large ones
// with Download).
func (c *Client) ReadFile(ctx context.Context, fileID string) ([]byte, error) {
	rc, err := c.Download(ctx, fileID)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// DeleteFile deletes a vendor file; a missing file is not an error.
func (c *Client) DeleteFile(ctx context.Context, fileID string) error {
	ctx, cancel := c.call(ctx)
	defer cancel()
	if _, err := c.c.Files.Delete(ctx, fileID); err != nil {
		cerr := Classify(ctx, "delete file", err)
		if e, ok := AsError(cerr); ok && e.StatusCode == http.StatusNotFound {
			return nil
		}
		return cerr
	}
	return nil
}
