package batchapi_test

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
)

func vendor(t *testing.T, cfg emulator.Config) (*batchapi.Client, *emulator.Emulator) {
	t.Helper()
	emu := emulator.New(cfg)
	t.Cleanup(emu.Close)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return batchapi.New(batchapi.Config{APIKey: "sk-test", BaseURL: srv.URL + "/v1"}), emu
}

// ListBrief decodes the same pages as List, with the fields a sweep reads.
func TestListBriefMatchesList(t *testing.T) {
	c, _ := vendor(t, emulator.Config{})
	ctx := t.Context()
	line := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	file, err := c.Upload(ctx, "in.jsonl", []byte(line))
	require.NoError(t, err)
	for i := range 5 {
		p := batchapi.CreateParams{InputFileID: file, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"}
		if i%2 == 0 {
			p.Metadata = map[string]string{contract.MetaIdempotencyKey: "k" + string(rune('0'+i))}
		}
		_, err := c.Create(ctx, p)
		require.NoError(t, err)
	}
	full, moreFull, err := c.List(ctx, "", 3)
	require.NoError(t, err)
	brief, moreBrief, err := c.ListBrief(ctx, "", 3)
	require.NoError(t, err)
	require.Equal(t, moreFull, moreBrief)
	require.True(t, moreBrief)
	require.Len(t, brief, 3)
	for i := range full {
		require.Equal(t, full[i].ID, brief[i].ID)
		require.Equal(t, full[i].Status, brief[i].Status)
		require.Equal(t, full[i].Counts, brief[i].Counts)
		require.Equal(t, full[i].CreatedAt, brief[i].CreatedAt)
		require.Equal(t, full[i].Metadata[contract.MetaIdempotencyKey], brief[i].Metadata[contract.MetaIdempotencyKey])
	}
	rest, more, err := c.ListBrief(ctx, brief[2].ID, 100)
	require.NoError(t, err)
	require.False(t, more)
	require.Len(t, rest, 2, "the cursor continues after the last id")
}

// A 429 on the list is classified like any other call's, with its
// Retry-After.
func TestListBriefClassifiesRateLimits(t *testing.T) {
	c, _ := vendor(t, emulator.Config{Faults: emulator.Faults{
		Ops: map[string]emulator.OpFaults{emulator.OpList: {RateLimitRate: 1}}, RetryAfter: 3 * time.Second,
	}})
	_, _, err := c.ListBrief(t.Context(), "", 100)
	ve, ok := batchapi.AsError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, batchapi.RateLimited, ve.Kind)
	require.Equal(t, 3*time.Second, ve.RetryAfter)
}

// UploadFrom streams a file with its exact length; the emulator stores the
// same bytes, Download streams them back, and a reader shorter than the
// announced size fails the upload instead of storing a truncated file.
func TestUploadFromDownloadRoundTrip(t *testing.T) {
	c, _ := vendor(t, emulator.Config{})
	ctx := t.Context()
	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}`+"\n", i)
	}
	data := b.String()
	id, err := c.UploadFrom(ctx, "big.jsonl", iotest.OneByteReader(strings.NewReader(data)), int64(len(data)))
	require.NoError(t, err)
	rc, err := c.Download(ctx, id)
	require.NoError(t, err)
	got, err := io.ReadAll(rc)
	require.NoError(t, err)
	require.NoError(t, rc.Close())
	require.Equal(t, data, string(got))

	_, err = c.UploadFrom(ctx, "short.jsonl", strings.NewReader(data[:100]), int64(len(data)))
	require.Error(t, err)

	_, err = c.Download(ctx, "file-missing")
	ve, ok := batchapi.AsError(err)
	require.True(t, ok, "%v", err)
	require.Equal(t, 404, ve.StatusCode)
}
