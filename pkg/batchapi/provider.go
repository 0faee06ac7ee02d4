package batchapi

import (
	"context"
	"errors"
	"io"

	"github.com/batchfleet/batchfleet/pkg/contract"
)

// Provider is one vendor's Batch API as the fleet's roles use it once a
// batch exists: read it, list the account's batches (the poller's sweep),
// cancel it, stream its results and clean up after it. Submitting differs
// too much between vendors to share a method (OpenAI uploads a file and
// creates from it; Anthropic takes the requests in the create call and has
// no metadata to find a batch by), so the submitter uses each client's own
// calls (Client.UploadFrom/Create/FindByKey, Anthropic.CreateFrom/
// FindCreated).
type Provider interface {
	// Name is the contract's provider name: contract.ProviderOpenAI or
	// contract.ProviderAnthropic.
	Name() string
	Get(ctx context.Context, id string) (Batch, error)
	Cancel(ctx context.Context, id string) (Batch, error)
	// ListBrief returns one page of the account's batches, newest first,
	// with at least ID, Status, Counts, Metadata (OpenAI only) and
	// CreatedAt set.
	ListBrief(ctx context.Context, after string, limit int) ([]Batch, bool, error)
	// Results streams an ended batch's result lines in the output-file
	// shape (results.Line), in the vendor's order, with the vendor's
	// custom_ids: OpenAI's output file then its error file; Anthropic's
	// results mapped by AnthropicLine. No lines when the batch has none.
	Results(ctx context.Context, b Batch) (io.ReadCloser, error)
	// Cleanup deletes what the vendor keeps of an ended batch that the
	// fleet no longer needs once its results are stored: OpenAI's
	// uploaded input file (inputFileID; the fleet's own upload only), the
	// Anthropic batch with its results. Missing things are no error.
	Cleanup(ctx context.Context, b Batch, inputFileID string) error
}

// ErrProviderUnavailable: a job names a provider this worker has no
// client for.
var ErrProviderUnavailable = errors.New("provider unavailable")

// Both clients are Providers.
var (
	_ Provider = (*Client)(nil)
	_ Provider = (*Anthropic)(nil)
)

// Name is contract.ProviderOpenAI.
func (c *Client) Name() string { return contract.ProviderOpenAI }

// Name is contract.ProviderAnthropic.
func (a *Anthropic) Name() string { return contract.ProviderAnthropic }

// Results streams the batch's output file, then its error file.
func (c *Client) Results(ctx context.Context, b Batch) (io.ReadCloser, error) {
	var files []string
	for _, fid := range []string{b.OutputFileID, b.ErrorFileID} {
		if fid != "" {
			files = append(files, fid)
		}
	}
	return &chainedFiles{ctx: ctx, c: c, files: files}, nil
}

// chainedFiles reads files one after the other, opening each when the
// previous one ends (a download is bounded by the transfer timeout).
type chainedFiles struct {
	ctx   context.Context
	c     *Client
	files []string
	cur   io.ReadCloser
}

func (f *chainedFiles) Read(p []byte) (int, error) {
	for {
		if f.cur == nil {
			if len(f.files) == 0 {
				return 0, io.EOF
			}
			rc, err := f.c.Download(f.ctx, f.files[0])
			if err != nil {
				return 0, err
			}
			f.cur, f.files = rc, f.files[1:]
		}
		n, err := f.cur.Read(p)
		if errors.Is(err, io.EOF) {
			_ = f.cur.Close()
			f.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (f *chainedFiles) Close() error {
	if f.cur != nil {
		return f.cur.Close()
	}
	return nil
}

// Cleanup deletes the fleet's uploaded input file, if any.
func (c *Client) Cleanup(ctx context.Context, _ Batch, inputFileID string) error {
	if inputFileID == "" {
		return nil
	}
	return c.DeleteFile(ctx, inputFileID)
}

// ListBrief is List (Anthropic's list is already small).
func (a *Anthropic) ListBrief(ctx context.Context, after string, limit int) ([]Batch, bool, error) {
	return a.List(ctx, after, limit)
}

// Cleanup deletes the ended batch and its results at the vendor.
func (a *Anthropic) Cleanup(ctx context.Context, b Batch, _ string) error {
	return a.Delete(ctx, b.ID)
}
