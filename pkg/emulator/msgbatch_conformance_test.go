package emulator_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/anthropics/anthropic-sdk-go/v2/shared"
	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

// claude returns an anthropic-sdk-go client for h's server that never
// retries, so every fault is visible, and reads nothing from the
// environment.
func claude(h harness, opts ...aoption.RequestOption) anthropic.Client {
	base := []aoption.RequestOption{
		aoption.WithoutEnvironmentDefaults(), aoption.WithBaseURL(h.srv.URL), aoption.WithAPIKey(testKey),
		aoption.WithMaxRetries(0), aoption.WithHTTPClient(h.srv.Client()),
	}
	return anthropic.NewClient(append(base, opts...)...)
}

func msgReq(customID, model string) anthropic.MessageBatchNewParamsRequest {
	return anthropic.MessageBatchNewParamsRequest{CustomID: customID, Params: anthropic.MessageBatchNewParamsRequestParams{
		Model: model, MaxTokens: 1024,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("Say hello to " + customID))},
	}}
}

func msgReqs(model string, ids ...string) []anthropic.MessageBatchNewParamsRequest {
	out := make([]anthropic.MessageBatchNewParamsRequest, len(ids))
	for i, id := range ids {
		out[i] = msgReq(id, model)
	}
	return out
}

func newMsgBatch(t *testing.T, c anthropic.Client, reqs ...anthropic.MessageBatchNewParamsRequest) *anthropic.MessageBatch {
	t.Helper()
	b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs})
	require.NoError(t, err)
	return b
}

// awaitEnded polls the batch until it has ended and returns every
// observed batch.
func awaitEnded(t *testing.T, c anthropic.Client, id string) []*anthropic.MessageBatch {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var seen []*anthropic.MessageBatch
	for {
		b, err := c.Messages.Batches.Get(context.Background(), id, anthropic.MessageBatchGetParams{})
		require.NoError(t, err)
		seen = append(seen, b)
		if b.ProcessingStatus == anthropic.MessageBatchProcessingStatusEnded {
			return seen
		}
		require.True(t, time.Now().Before(deadline), "message batch %s still %s", id, b.ProcessingStatus)
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

// msgResults streams a batch's results, keyed by custom_id, and their order.
func msgResults(t *testing.T, c anthropic.Client, id string) (map[string]anthropic.MessageBatchResultUnion, []string) {
	t.Helper()
	stream := c.Messages.Batches.ResultsStreaming(context.Background(), id, anthropic.MessageBatchResultsParams{})
	defer func() { require.NoError(t, stream.Close()) }()
	byID := map[string]anthropic.MessageBatchResultUnion{}
	var order []string
	for stream.Next() {
		r := stream.Current()
		require.NotContains(t, byID, r.CustomID, "one line per request")
		byID[r.CustomID] = r.Result
		order = append(order, r.CustomID)
	}
	require.NoError(t, stream.Err())
	return byID, order
}

// requireMsgError checks err is the SDK's API error with status and type.
func requireMsgError(t *testing.T, err error, status int, typ shared.ErrorType, msg string) *anthropic.Error {
	t.Helper()
	var apiErr *anthropic.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, status, apiErr.StatusCode, apiErr.RawJSON())
	require.Equal(t, typ, apiErr.Type(), apiErr.RawJSON())
	require.Contains(t, apiErr.Message, msg)
	require.True(t, strings.HasPrefix(apiErr.RequestID, "req_"), "request-id header %q", apiErr.RequestID)
	require.Contains(t, apiErr.RawJSON(), `"request_id":"`+apiErr.RequestID+`"`)
	return apiErr
}

func TestMessageBatchLifecycle(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	once := "req-fail-once-" + t.Name()
	var ids []string
	for i := range 30 {
		ids = append(ids, fmt.Sprintf("ok-%02d", i))
	}
	ids = append(ids, "req-fail-always", "req-fail-400", "req-fail-429", once)
	short := msgReq("short-reply", "claude-haiku-4-5")
	short.Params.MaxTokens = 3
	reqs := append(msgReqs("claude-sonnet-4-5", ids...), short)
	ids = append(ids, short.CustomID)

	var resp *http.Response
	created, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: reqs}, aoption.WithResponseInto(&resp))
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(resp.Header.Get("request-id"), "req_"))
	require.True(t, strings.HasPrefix(created.ID, "msgbatch_"), created.ID)
	require.Equal(t, "message_batch", string(created.Type))
	require.Equal(t, anthropic.MessageBatchProcessingStatusInProgress, created.ProcessingStatus)
	require.Equal(t, 24*time.Hour, created.ExpiresAt.Sub(created.CreatedAt))
	for _, key := range []string{"ended_at", "archived_at", "cancel_initiated_at", "results_url"} {
		require.Contains(t, created.RawJSON(), fmt.Sprintf(`"%s":null`, key))
	}
	require.Equal(t, counts{Processing: int64(len(reqs))}, countsOf(created))

	_, err = msgResultsErr(c, created.ID)
	requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, "in_progress")

	seen := awaitEnded(t, c, created.ID)
	require.Greater(t, len(seen), 1)
	for _, b := range seen[:len(seen)-1] {
		// Anthropic: requests "move to one of the other statuses only once
		// processing of the entire batch ends".
		require.Equal(t, counts{Processing: int64(len(reqs))}, countsOf(b), "counts before ended")
		require.Empty(t, b.ResultsURL)
		require.True(t, b.EndedAt.IsZero())
	}
	done := seen[len(seen)-1]
	require.Equal(t, counts{Succeeded: 31, Errored: 4}, countsOf(done))
	require.False(t, done.EndedAt.IsZero())
	require.Equal(t, h.srv.URL+"/v1/messages/batches/"+done.ID+"/results", done.ResultsURL)
	require.Contains(t, done.RawJSON(), `"archived_at":null`)

	results, order := msgResults(t, c, done.ID)
	require.ElementsMatch(t, ids, order)
	require.NotEqual(t, ids, order, "results come in random order, as Anthropic does not guarantee it")
	for _, id := range ids[:30] {
		r := results[id]
		require.Equal(t, "succeeded", r.Type, id)
		msg := r.AsSucceeded().Message
		require.True(t, strings.HasPrefix(msg.ID, "msg_"), msg.ID)
		require.Equal(t, "message", string(msg.Type))
		require.Equal(t, "assistant", string(msg.Role))
		require.Equal(t, "claude-sonnet-4-5", msg.Model)
		require.Len(t, msg.Content, 1)
		require.Equal(t, "text", msg.Content[0].Type)
		require.Contains(t, msg.Content[0].Text, id)
		require.Equal(t, anthropic.StopReasonEndTurn, msg.StopReason)
		require.Positive(t, msg.Usage.InputTokens)
		require.Positive(t, msg.Usage.OutputTokens)
		require.Equal(t, anthropic.UsageServiceTierBatch, msg.Usage.ServiceTier)
	}
	cut := results["short-reply"].AsSucceeded().Message
	require.Equal(t, anthropic.StopReasonMaxTokens, cut.StopReason)
	require.EqualValues(t, 3, cut.Usage.OutputTokens)
	require.Equal(t, "claude-haiku-4-5", cut.Model)
	for id, typ := range map[string]string{
		"req-fail-always": "api_error", "req-fail-400": "invalid_request_error", "req-fail-429": "rate_limit_error", once: "api_error",
	} {
		r := results[id]
		require.Equal(t, "errored", r.Type, id)
		e := r.AsErrored().Error
		require.Equal(t, "error", string(e.Type), id)
		require.Equal(t, typ, e.Error.Type, id)
		require.NotEmpty(t, e.Error.Message, id)
		require.True(t, strings.HasPrefix(e.RequestID, "req_"), id)
	}

	// fail-once succeeds the second time; fail-always fails again.
	again := newMsgBatch(t, c, msgReqs("claude-sonnet-4-5", once, "req-fail-always")...)
	final := awaitEnded(t, c, again.ID)
	require.Equal(t, counts{Succeeded: 1, Errored: 1}, countsOf(final[len(final)-1]))
	results, _ = msgResults(t, c, again.ID)
	require.Equal(t, "succeeded", results[once].Type)
}

// msgResultsErr reads a batch's results and returns the error that ended them.
func msgResultsErr(c anthropic.Client, id string) (int, error) {
	stream := c.Messages.Batches.ResultsStreaming(context.Background(), id, anthropic.MessageBatchResultsParams{})
	defer func() { _ = stream.Close() }()
	n := 0
	for stream.Next() {
		n++
	}
	return n, stream.Err()
}

type counts struct{ Processing, Succeeded, Errored, Canceled, Expired int64 }

func countsOf(b *anthropic.MessageBatch) counts {
	c := b.RequestCounts
	return counts{c.Processing, c.Succeeded, c.Errored, c.Canceled, c.Expired}
}

func TestMessageBatchCancel(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.CancelDelay = 300 * time.Millisecond
	h := start(t, cfg)
	c := claude(h)
	b := newMsgBatch(t, c, msgReqs("claude-sonnet-4-5", "ok-1", "ok-2", "slow-never-finish")...)
	eventually(t, "ok requests to run", func() bool { return h.emu.Batches()[0].RequestCounts.Completed == 2 })

	got, err := c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err)
	require.Equal(t, anthropic.MessageBatchProcessingStatusCanceling, got.ProcessingStatus)
	require.False(t, got.CancelInitiatedAt.IsZero())
	require.True(t, got.EndedAt.IsZero())
	require.Equal(t, counts{Processing: 3}, countsOf(got))

	again, err := c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err, "cancelling a canceling batch is a no-op")
	require.Equal(t, anthropic.MessageBatchProcessingStatusCanceling, again.ProcessingStatus)
	require.Equal(t, got.CancelInitiatedAt, again.CancelInitiatedAt)

	seen := awaitEnded(t, c, b.ID)
	done := seen[len(seen)-1]
	require.Equal(t, counts{Succeeded: 2, Canceled: 1}, countsOf(done))
	require.Equal(t, got.CancelInitiatedAt, done.CancelInitiatedAt)
	require.False(t, done.EndedAt.Before(done.CancelInitiatedAt))
	results, _ := msgResults(t, c, b.ID)
	require.Equal(t, "canceled", results["slow-never-finish"].Type)
	require.Equal(t, "succeeded", results["ok-1"].Type)

	_, err = c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, "ended")
	_, err = c.Messages.Batches.Cancel(context.Background(), "msgbatch_nope", anthropic.MessageBatchCancelParams{})
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, "msgbatch_nope")
	_, err = c.Messages.Batches.Get(context.Background(), "msgbatch_nope", anthropic.MessageBatchGetParams{})
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, "msgbatch_nope")
}

func TestMessageBatchExpiry(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ExpireAfter = 1500 * time.Millisecond
	h := start(t, cfg)
	c := claude(h)
	partial := newMsgBatch(t, c, msgReqs("claude-sonnet-4-5", "ok-1", "x-fail-always", "x-never-finish-1", "x-never-finish-2")...)
	require.Equal(t, 1500*time.Millisecond, partial.ExpiresAt.Sub(partial.CreatedAt), "expires_at follows ExpireAfter")
	whole := newMsgBatch(t, c, append(msgReqs(emulator.ModelExpireMe, "a"), msgReq("b", "claude-sonnet-4-5"))...)

	seen := awaitEnded(t, c, partial.ID)
	done := seen[len(seen)-1]
	require.Equal(t, counts{Succeeded: 1, Errored: 1, Expired: 2}, countsOf(done))
	require.Equal(t, done.ExpiresAt, done.EndedAt)
	results, _ := msgResults(t, c, partial.ID)
	require.Equal(t, "expired", results["x-never-finish-1"].Type)
	require.Equal(t, "expired", results["x-never-finish-2"].Type)
	require.Equal(t, "errored", results["x-fail-always"].Type)

	// One request of model expire-me keeps the whole batch from executing.
	seen = awaitEnded(t, c, whole.ID)
	require.Equal(t, counts{Expired: 2}, countsOf(seen[len(seen)-1]))
}

func TestMessageBatchDelete(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	ctx := context.Background()
	b := newMsgBatch(t, c, msgReq("a", "claude-sonnet-4-5"))
	kept := newMsgBatch(t, c, msgReq("b", "claude-sonnet-4-5"))
	_, err := c.Messages.Batches.Delete(ctx, b.ID, anthropic.MessageBatchDeleteParams{})
	requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, "in_progress")

	awaitEnded(t, c, b.ID)
	del, err := c.Messages.Batches.Delete(ctx, b.ID, anthropic.MessageBatchDeleteParams{})
	require.NoError(t, err)
	require.Equal(t, b.ID, del.ID)
	require.Equal(t, "message_batch_deleted", string(del.Type))

	_, err = c.Messages.Batches.Get(ctx, b.ID, anthropic.MessageBatchGetParams{})
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, b.ID)
	_, err = c.Messages.Batches.Delete(ctx, b.ID, anthropic.MessageBatchDeleteParams{})
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, b.ID)
	_, err = msgResultsErr(c, b.ID)
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, b.ID)

	page, err := c.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)
	require.Equal(t, kept.ID, page.Data[0].ID)

	var list struct {
		Data []emulator.BatchInfo `json:"data"`
	}
	h.admin(t, http.MethodGet, "/_emulator/batches?provider=anthropic", nil, &list)
	require.Len(t, list.Data, 2, "the admin listing keeps deleted batches")
	require.Equal(t, b.ID, list.Data[0].ID)
	require.True(t, list.Data[0].Deleted)
	require.False(t, list.Data[1].Deleted)
}

func TestMessageBatchListPaging(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ValidatingFor = time.Hour
	h := start(t, cfg)
	c := claude(h)
	ctx := context.Background()
	var want []string
	for i := range 45 {
		want = append(want, newMsgBatch(t, c, msgReq(fmt.Sprint("r", i), "claude-sonnet-4-5")).ID)
	}
	slices.Reverse(want) // newest first

	var got []string
	pager := c.Messages.Batches.ListAutoPaging(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(20)})
	for pager.Next() {
		got = append(got, pager.Current().ID)
	}
	require.NoError(t, pager.Err())
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("listed message batches (-want +got):\n%s", diff)
	}

	ids := func(p []anthropic.MessageBatch) []string {
		var out []string
		for _, b := range p {
			out = append(out, b.ID)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		params  anthropic.MessageBatchListParams
		want    []string
		hasMore bool
	}{
		{"default limit", anthropic.MessageBatchListParams{}, want[:20], true},
		{"after_id", anthropic.MessageBatchListParams{AfterID: anthropic.String(want[40])}, want[41:], false},
		{"before_id", anthropic.MessageBatchListParams{BeforeID: anthropic.String(want[10]), Limit: anthropic.Int(5)}, want[5:10], true},
		{"before_id at the start", anthropic.MessageBatchListParams{BeforeID: anthropic.String(want[3])}, want[:3], false},
		{"unknown cursor", anthropic.MessageBatchListParams{AfterID: anthropic.String("msgbatch_nope")}, nil, false},
	} {
		page, err := c.Messages.Batches.List(ctx, tc.params)
		require.NoError(t, err, tc.name)
		require.Equal(t, tc.want, ids(page.Data), tc.name)
		require.Equal(t, tc.hasMore, page.HasMore, tc.name)
		if len(tc.want) > 0 {
			require.Equal(t, tc.want[0], page.FirstID, tc.name)
			require.Equal(t, tc.want[len(tc.want)-1], page.LastID, tc.name)
		} else {
			require.Contains(t, page.RawJSON(), `"first_id":null`, tc.name)
		}
	}
	for _, limit := range []int64{0, 1001} {
		_, err := c.Messages.Batches.List(ctx, anthropic.MessageBatchListParams{Limit: anthropic.Int(limit)})
		requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, "limit")
	}
}

func TestMessageBatchCreateValidation(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	ok := msgReq("ok", "claude-sonnet-4-5")
	with := func(mod func(r *anthropic.MessageBatchNewParamsRequest)) anthropic.MessageBatchNewParamsRequest {
		r := msgReq("x", "claude-sonnet-4-5")
		mod(&r)
		return r
	}
	for _, tc := range []struct {
		name string
		reqs []anthropic.MessageBatchNewParamsRequest
		want string
	}{
		{"custom_id with a space", []anthropic.MessageBatchNewParamsRequest{ok, with(func(r *anthropic.MessageBatchNewParamsRequest) { r.CustomID = "a b" })},
			"requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"},
		{"custom_id too long", []anthropic.MessageBatchNewParamsRequest{with(func(r *anthropic.MessageBatchNewParamsRequest) { r.CustomID = strings.Repeat("a", 65) })},
			"requests.0.custom_id: String should match pattern"},
		{"empty custom_id", []anthropic.MessageBatchNewParamsRequest{with(func(r *anthropic.MessageBatchNewParamsRequest) { r.CustomID = "" })},
			"requests.0.custom_id: String should match pattern"},
		{"duplicate custom_id", []anthropic.MessageBatchNewParamsRequest{ok, msgReq("b", "m"), ok}, `requests.2.custom_id: Duplicate custom_id "ok"`},
		{"no requests", nil, "requests: Field required"},
		{"missing model", []anthropic.MessageBatchNewParamsRequest{with(func(r *anthropic.MessageBatchNewParamsRequest) { r.Params.Model = "" })},
			"requests.0.params.model: Field required"},
		{"missing messages", []anthropic.MessageBatchNewParamsRequest{with(func(r *anthropic.MessageBatchNewParamsRequest) { r.Params.Messages = nil })},
			"requests.0.params.messages: Field required"},
		{"negative max_tokens", []anthropic.MessageBatchNewParamsRequest{with(func(r *anthropic.MessageBatchNewParamsRequest) { r.Params.MaxTokens = -1 })},
			"requests.0.params.max_tokens:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: tc.reqs})
			requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, tc.want)
		})
	}
	for _, tc := range []struct{ name, body, want string }{
		{"not json", `{"requests":[`, "not valid JSON"},
		{"extra member", `{"requests":[],"metadata":{}}`, "metadata: Extra inputs are not permitted"},
		{"empty list", `{"requests":[]}`, "requests: List should have between 1 and 100000 items, not 0"},
		{"too many requests", `{"requests":[{}` + strings.Repeat(`,{}`, emulator.MaxRequestsPerMessageBatch) + `]}`, "not 100001"},
		{"missing max_tokens", `{"requests":[{"custom_id":"a","params":{"model":"m","messages":[{"role":"user","content":"hi"}]}}]}`,
			"requests.0.params.max_tokens: Field required"},
		{"fractional max_tokens", `{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}}]}`,
			"requests.0.params.max_tokens: Input should be an integer"},
		{"no messages", `{"requests":[{"custom_id":"a","params":{"model":"m","max_tokens":1,"messages":[]}}]}`,
			"requests.0.params.messages: List should have at least 1 item"},
		{"params not an object", `{"requests":[{"custom_id":"a","params":[]}]}`, "requests.0.params: Input should be an object"},
		{"extra request member", `{"requests":[{"custom_id":"a","params":{},"url":"/v1/messages"}]}`, "requests.0.url: Extra inputs are not permitted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Post(context.Background(), "v1/messages/batches", nil, nil, aoption.WithRequestBody("application/json", []byte(tc.body)))
			requireMsgError(t, err, http.StatusBadRequest, shared.ErrorTypeInvalidRequestError, tc.want)
		})
	}
	require.Empty(t, h.emu.Batches(), "no invalid request creates a batch")

	cfg := fast()
	cfg.MaxMessageBatchBytes = 1 << 10
	small := claude(start(t, cfg))
	big := msgReq("big", "claude-sonnet-4-5")
	big.Params.Messages = []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(strings.Repeat("x", 2<<10)))}
	_, err := small.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: []anthropic.MessageBatchNewParamsRequest{big}})
	requireMsgError(t, err, http.StatusRequestEntityTooLarge, "request_too_large", "maximum")
}

func TestMessageBatchAuthAndHeaders(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	_, err := c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{}, aoption.WithAPIKey("sk-ant-wrong"))
	requireMsgError(t, err, http.StatusUnauthorized, shared.ErrorTypeAuthenticationError, "x-api-key")

	raw := func(headers map[string]string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, h.srv.URL+"/v1/messages/batches", nil)
		require.NoError(t, err)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := h.srv.Client().Do(req)
		require.NoError(t, err)
		defer func() { require.NoError(t, resp.Body.Close()) }()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(resp.Header.Get("request-id"), "req_"), "request-id on every answer")
		return resp, string(b)
	}
	resp, body := raw(map[string]string{"x-api-key": testKey, "anthropic-version": "2023-06-01"})
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	require.JSONEq(t, `{"data":[],"has_more":false,"first_id":null,"last_id":null}`, body)

	resp, body = raw(map[string]string{"x-api-key": testKey})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)
	require.JSONEq(t, fmt.Sprintf(`{"type":"error","error":{"type":"invalid_request_error","message":"anthropic-version: header is required"},"request_id":%q}`,
		resp.Header.Get("request-id")), body)
	resp, _ = raw(map[string]string{"anthropic-version": "2023-06-01"})
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	resp, body = raw(map[string]string{"x-api-key": testKey, "anthropic-version": "latest"})
	require.Equal(t, http.StatusBadRequest, resp.StatusCode, body)

	err = c.Post(context.Background(), "v1/messages", nil, nil)
	requireMsgError(t, err, http.StatusNotFound, shared.ErrorTypeNotFoundError, "/v1/messages")

	open := start(t, emulator.Config{})
	anyKey := claude(open)
	_, err = anyKey.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{}, aoption.WithAPIKey("anything"))
	require.NoError(t, err, "no APIKey configured accepts any key")
}

func TestMessageBatchInjectedFaults(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	b := newMsgBatch(t, c, msgReq("a", "claude-sonnet-4-5"))
	require.NoError(t, h.emu.SetFaults(emulator.Faults{
		RetryAfter: 2 * time.Second,
		Ops: map[string]emulator.OpFaults{
			emulator.OpAnthropicCreate: {OverloadedRate: 1},
			emulator.OpAnthropicGet:    {ServerErrorRate: 1},
			emulator.OpAnthropicList:   {RateLimitRate: 1},
		},
	}))
	_, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgReqs("m", "b")})
	apiErr := requireMsgError(t, err, emulator.StatusOverloaded, shared.ErrorTypeOverloadedError, "Overloaded")
	require.Equal(t, "2", apiErr.Response.Header.Get("Retry-After"))

	_, err = c.Messages.Batches.Get(context.Background(), b.ID, anthropic.MessageBatchGetParams{})
	require.ErrorAs(t, err, &apiErr)
	require.Contains(t, []int{http.StatusInternalServerError, emulator.StatusOverloaded}, apiErr.StatusCode)
	require.Contains(t, []shared.ErrorType{shared.ErrorTypeAPIError, shared.ErrorTypeOverloadedError}, apiErr.Type())
	require.Equal(t, "2", apiErr.Response.Header.Get("Retry-After"))

	_, err = c.Messages.Batches.List(context.Background(), anthropic.MessageBatchListParams{})
	requireMsgError(t, err, http.StatusTooManyRequests, shared.ErrorTypeRateLimitError, "rate limit")

	// Other operations are untouched, OpenAI's included.
	_, err = c.Messages.Batches.Cancel(context.Background(), b.ID, anthropic.MessageBatchCancelParams{})
	require.NoError(t, err)
	require.Len(t, h.emu.Batches(), 1, "an overloaded create creates nothing")

	st := h.emu.Stats()
	require.EqualValues(t, 2, st.CallsByOp[emulator.OpAnthropicCreate])
	require.EqualValues(t, 1, st.CallsByOp[emulator.OpAnthropicGet])
	require.EqualValues(t, 1, st.CallsByOp[emulator.OpAnthropicList])
	require.EqualValues(t, 1, st.CallsByOp[emulator.OpAnthropicCancel])

	// anthropic-sdk-go retries a 529 on reads, but a create only when the
	// API cannot have processed it (a 429, a connection never opened).
	require.NoError(t, h.emu.SetFaults(emulator.Faults{Ops: map[string]emulator.OpFaults{
		emulator.OpAnthropicCreate: {OverloadedRate: 1}, emulator.OpAnthropicGet: {OverloadedRate: 1},
	}}))
	_, err = c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgReqs("m", "c")}, aoption.WithMaxRetries(3))
	requireMsgError(t, err, emulator.StatusOverloaded, shared.ErrorTypeOverloadedError, "Overloaded")
	_, err = c.Messages.Batches.Get(context.Background(), b.ID, anthropic.MessageBatchGetParams{}, aoption.WithMaxRetries(1))
	requireMsgError(t, err, emulator.StatusOverloaded, shared.ErrorTypeOverloadedError, "Overloaded")
	st = h.emu.Stats()
	require.EqualValues(t, 3, st.CallsByOp[emulator.OpAnthropicCreate], "a create is not retried on 529")
	require.EqualValues(t, 3, st.CallsByOp[emulator.OpAnthropicGet], "a get is retried on 529")
}

func TestMessageBatchDropAfterCreate(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ValidatingFor = time.Hour
	h := start(t, cfg)
	require.NoError(t, h.emu.SetFaults(emulator.Faults{DropAfterCreateRate: 1}))
	c := claude(h)
	_, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{Requests: msgReqs("claude-sonnet-4-5", "job7-a", "job7-b")})
	require.Error(t, err)
	var apiErr *anthropic.Error
	require.False(t, errors.As(err, &apiErr), "want a transport error, got %v", err)

	var list struct {
		Data []emulator.BatchInfo `json:"data"`
	}
	h.admin(t, http.MethodGet, "/_emulator/batches?provider=anthropic", nil, &list)
	require.Len(t, list.Data, 1, "the batch was created before the connection dropped")
	got := list.Data[0]
	require.Equal(t, emulator.ProviderAnthropic, got.Provider)
	require.Equal(t, emulator.StatusInProgress, got.Status)
	require.Equal(t, []string{"job7-a", "job7-b"}, got.CustomIDs)
	require.Equal(t, "claude-sonnet-4-5", got.Model)
	require.EqualValues(t, 2, got.RequestCounts.Total)

	h.admin(t, http.MethodGet, "/_emulator/batches?provider=openai", nil, &list)
	require.Empty(t, list.Data)
	calls := h.emu.Calls(got.ID)
	require.Len(t, calls, 1)
	require.Equal(t, emulator.OpAnthropicCreate, calls[0].Op)
	require.Zero(t, calls[0].Status, "dropped")
	require.EqualValues(t, 1, h.emu.Stats().BatchesCreated)
}

// TestMessageBatchStreamedCreateAndUserIDTriggers creates batches the way
// the fleet does: the body streamed with no length and no line ends, and
// custom_ids rewritten, so outcomes are chosen by params.metadata.user_id.
func TestMessageBatchStreamedCreateAndUserIDTriggers(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	c := claude(h)
	once := "u-fail-once-" + t.Name()
	create := func(tag string) *anthropic.MessageBatch {
		t.Helper()
		var reqs []string
		for i, user := range []string{"u-ok", "u-fail-400", once} {
			reqs = append(reqs, fmt.Sprintf(`{"custom_id":"%s-%d","params":{"model":"claude-sonnet-4-5","max_tokens":16,`+
				`"messages":[{"role":"user","content":"hi"}],"metadata":{"user_id":%q}}}`, tag, i, user))
		}
		body := io.MultiReader(strings.NewReader(`{"requests":[`), strings.NewReader(strings.Join(reqs, ",")), strings.NewReader(`]}`))
		b, err := c.Messages.Batches.New(context.Background(), anthropic.MessageBatchNewParams{}, aoption.WithRequestBody("application/json", body))
		require.NoError(t, err)
		return b
	}
	first := create("aaaaaaaaaa")
	awaitEnded(t, c, first.ID)
	second := create("bbbbbbbbbb")
	awaitEnded(t, c, second.ID)
	r1, _ := msgResults(t, c, first.ID)
	r2, _ := msgResults(t, c, second.ID)
	require.Equal(t, "succeeded", r1["aaaaaaaaaa-0"].Type)
	require.Equal(t, "invalid_request_error", r1["aaaaaaaaaa-1"].AsErrored().Error.Error.Type)
	require.Equal(t, "api_error", r1["aaaaaaaaaa-2"].AsErrored().Error.Error.Type, "fail-once fails the first time its user_id runs")
	require.Equal(t, "errored", r2["bbbbbbbbbb-1"].Type)
	require.Equal(t, "succeeded", r2["bbbbbbbbbb-2"].Type, "and succeeds the next, whatever the custom_id")
}
