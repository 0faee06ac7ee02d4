package batchapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/emulator"
	"github.com/batchfleet/batchfleet/pkg/results"
)

// The fleet's stored input becomes Anthropic's requests: custom_ids
// "<tag>-<n>" by line (blank lines skipped), params = body verbatim.
func TestAnthropicRequestsRewritesIDs(t *testing.T) {
	tag := batchapi.JobTag("job-1")
	in := `{"custom_id":"first","method":"POST","url":"/v1/messages","body":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"a"}]}}` + "\n\n" +
		`{"custom_id":"second","method":"POST","url":"/v1/messages","body":{"model":"claude-haiku-4-5","max_tokens":9,"messages":[]}}`
	data, err := io.ReadAll(batchapi.AnthropicRequests(strings.NewReader(in), tag))
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2)
	for i, want := range []string{
		`{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"a"}]}`,
		`{"model":"claude-haiku-4-5","max_tokens":9,"messages":[]}`,
	} {
		var l struct {
			CustomID string          `json:"custom_id"`
			Params   json.RawMessage `json:"params"`
		}
		require.NoError(t, json.Unmarshal([]byte(lines[i]), &l))
		require.Equal(t, batchapi.AnthropicCustomID(tag, i), l.CustomID)
		require.JSONEq(t, want, string(l.Params))
		gotTag, n, ok := batchapi.ParseAnthropicCustomID(l.CustomID)
		require.True(t, ok)
		require.Equal(t, tag, gotTag)
		require.Equal(t, i, n)
	}
	_, err = io.ReadAll(batchapi.AnthropicRequests(strings.NewReader(`{"custom_id":"x","body":"text"}`), tag))
	require.ErrorContains(t, err, "line 1: body is not an object")
}

// An OpenAI batch's results are its output file then its error file.
func TestOpenAIResultsChainsFiles(t *testing.T) {
	emu := emulator.New(emulator.Config{ValidatingFor: time.Millisecond, InProgressFor: time.Millisecond, FinalizingFor: time.Millisecond})
	t.Cleanup(emu.Close)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	c := batchapi.New(batchapi.Config{APIKey: "sk-test", BaseURL: srv.URL + "/v1"})
	ctx := t.Context()
	var in strings.Builder
	for _, id := range []string{"ok-1", "bad-fail-400", "ok-2"} {
		in.WriteString(`{"custom_id":"` + id + `","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}}` + "\n")
	}
	file, err := c.Upload(ctx, "in.jsonl", []byte(in.String()))
	require.NoError(t, err)
	b, err := c.Create(ctx, batchapi.CreateParams{InputFileID: file, Endpoint: "/v1/chat/completions", CompletionWindow: "24h"})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		b, err = c.Get(ctx, b.ID)
		return err == nil && b.Status == contract.StatusCompleted
	}, 10*time.Second, 10*time.Millisecond)
	require.NotEmpty(t, b.OutputFileID)
	require.NotEmpty(t, b.ErrorFileID)
	rc, err := c.Results(ctx, b)
	require.NoError(t, err)
	defer rc.Close()
	got := map[string]int{}
	errorsSeen := 0
	require.NoError(t, results.Scan(rc, func(l results.Line) error {
		got[l.CustomID] = l.StatusCode
		if l.Error != nil || l.StatusCode >= 400 {
			errorsSeen++
		}
		return nil
	}))
	require.Len(t, got, 3, "every line of both files")
	require.Equal(t, 1, errorsSeen)
}

type countingLimiter struct{ n atomic.Int64 }

func (c *countingLimiter) Wait(context.Context) error { c.n.Add(1); return nil }

type refusingLimiter struct{}

func (refusingLimiter) Wait(context.Context) error { return errors.New("budget closed") }

// Every Anthropic call waits for the shared request budget first.
func TestAnthropicCallsWaitForTheBudget(t *testing.T) {
	emu := emulator.New(emulator.Config{})
	t.Cleanup(emu.Close)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	lim := &countingLimiter{}
	a := batchapi.NewAnthropic(batchapi.Config{APIKey: "sk-test", BaseURL: srv.URL, Limiter: lim})
	ctx := t.Context()
	b, err := a.CreateFrom(ctx, strings.NewReader(`{"custom_id":"a-0","params":{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}}`))
	require.NoError(t, err)
	_, err = a.Get(ctx, b.ID)
	require.NoError(t, err)
	_, _, err = a.List(ctx, "", 10)
	require.NoError(t, err)
	require.Equal(t, int64(3), lim.n.Load())

	closed := batchapi.NewAnthropic(batchapi.Config{APIKey: "sk-test", BaseURL: srv.URL, Limiter: refusingLimiter{}})
	_, err = closed.Get(ctx, b.ID)
	require.Error(t, err, "no budget, no call")
}
