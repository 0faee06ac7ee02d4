package emulator_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/emulator"
)

func TestMain(m *testing.M) { verifyNoLeaks(m) }

func TestBatchCompletesWithOutputAndErrorFiles(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.InProgressFor = time.Second
	h := start(t, cfg)
	once := "req-fail-once-" + t.Name()
	lines := chatLines("gpt-4o-mini", "ok-1", "ok-2", "ok-3", "ok-4", "ok-5", "req-fail-always", "req-fail-400", "req-fail-429", once)
	created := h.create(t, h.upload(t, lines...), openai.BatchNewParamsEndpointV1ChatCompletions,
		map[string]string{"idempotency_key": "k1"})

	require.Equal(t, openai.BatchStatusValidating, created.Status)
	require.True(t, strings.HasPrefix(created.ID, "batch_"), created.ID)
	require.Equal(t, "batch", string(created.Object))
	require.Equal(t, "24h", created.CompletionWindow)
	require.Equal(t, "/v1/chat/completions", created.Endpoint)
	require.Equal(t, map[string]string{"idempotency_key": "k1"}, map[string]string(created.Metadata))
	require.Equal(t, created.CreatedAt+24*3600, created.ExpiresAt)
	for _, key := range []string{"in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at", "cancelled_at", "output_file_id", "error_file_id", "errors"} {
		require.Contains(t, created.RawJSON(), fmt.Sprintf(`"%s":null`, key))
	}
	require.Zero(t, created.RequestCounts.Total)

	seen := h.await(t, created.ID, openai.BatchStatusCompleted)
	var prev openai.BatchRequestCounts
	partial := false
	for _, b := range seen {
		c := b.RequestCounts
		require.GreaterOrEqual(t, c.Completed, prev.Completed, "completed count fell")
		require.GreaterOrEqual(t, c.Failed, prev.Failed, "failed count fell")
		if b.Status == openai.BatchStatusInProgress {
			require.EqualValues(t, len(lines), c.Total)
			partial = partial || (c.Completed+c.Failed > 0 && c.Completed+c.Failed < c.Total)
		}
		prev = c
	}
	require.True(t, partial, "never saw counts rising within in_progress over %d polls", len(seen))

	done := seen[len(seen)-1]
	require.Equal(t, openai.BatchRequestCounts{Total: 9, Completed: 5, Failed: 4}.Total, done.RequestCounts.Total)
	require.EqualValues(t, 5, done.RequestCounts.Completed)
	require.EqualValues(t, 4, done.RequestCounts.Failed)
	require.NotZero(t, done.InProgressAt)
	require.NotZero(t, done.FinalizingAt)
	require.NotZero(t, done.CompletedAt)
	require.Zero(t, done.FailedAt)
	require.Equal(t, "gpt-4o-mini", done.Model)

	out := h.content(t, done.OutputFileID)
	require.Len(t, out, 5)
	var prompt, completion int64
	for _, l := range out {
		require.True(t, strings.HasPrefix(l.ID, "batch_req_"), l.ID)
		require.Nil(t, l.Error)
		require.Contains(t, l.raw, `"error":null`)
		require.Equal(t, 200, l.Response.StatusCode)
		require.NotEmpty(t, l.Response.RequestID)
		var cc openai.ChatCompletion
		require.NoError(t, json.Unmarshal(l.Response.Body, &cc))
		require.Equal(t, "chat.completion", string(cc.Object))
		require.Equal(t, "gpt-4o-mini", cc.Model)
		require.Len(t, cc.Choices, 1)
		require.Equal(t, "assistant", string(cc.Choices[0].Message.Role))
		require.Contains(t, cc.Choices[0].Message.Content, l.CustomID)
		require.Equal(t, "stop", cc.Choices[0].FinishReason)
		require.Equal(t, cc.Usage.PromptTokens+cc.Usage.CompletionTokens, cc.Usage.TotalTokens)
		require.Positive(t, cc.Usage.PromptTokens)
		prompt += cc.Usage.PromptTokens
		completion += cc.Usage.CompletionTokens
	}
	require.Equal(t, prompt, done.Usage.InputTokens)
	require.Equal(t, completion, done.Usage.OutputTokens)
	require.Equal(t, prompt+completion, done.Usage.TotalTokens)

	errs := byCustomID(h.content(t, done.ErrorFileID))
	require.Len(t, errs, 4)
	for id, want := range map[string]struct {
		status int
		typ    string
	}{"req-fail-always": {500, "server_error"}, "req-fail-400": {400, "invalid_request_error"}, "req-fail-429": {429, "requests"}, once: {500, "server_error"}} {
		l := errs[id]
		require.NotNil(t, l.Response, id)
		require.Equal(t, want.status, l.Response.StatusCode, id)
		require.Nil(t, l.Error, id)
		var body struct {
			Error openai.Error `json:"error"`
		}
		require.NoError(t, json.Unmarshal(l.Response.Body, &body))
		require.Equal(t, want.typ, body.Error.Type, id)
		require.NotEmpty(t, body.Error.Message, id)
	}

	f, err := h.client.Files.Get(context.Background(), done.OutputFileID)
	require.NoError(t, err)
	require.Equal(t, openai.FileObjectPurposeBatchOutput, f.Purpose)
	require.Contains(t, f.RawJSON(), `"status":"processed"`)

	// fail-once succeeds the second time; the others fail again.
	again := h.submit(t, chatLines("gpt-4o-mini", once, "req-fail-always")...)
	final := h.await(t, again.ID, openai.BatchStatusCompleted)
	last := final[len(final)-1]
	require.EqualValues(t, 1, last.RequestCounts.Completed)
	require.EqualValues(t, 1, last.RequestCounts.Failed)
	require.Equal(t, once, h.content(t, last.OutputFileID)[0].CustomID)
}

func TestEndpointBodiesDecodeWithOpenAITypes(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	for _, tc := range []struct {
		endpoint openai.BatchNewParamsEndpoint
		body     string
		check    func(t *testing.T, raw []byte)
	}{
		{openai.BatchNewParamsEndpointV1Embeddings, `{"model":"text-embedding-3-small","input":["a b c","d e f"],"dimensions":4}`, func(t *testing.T, raw []byte) {
			var r openai.CreateEmbeddingResponse
			require.NoError(t, json.Unmarshal(raw, &r))
			require.Len(t, r.Data, 2)
			require.Len(t, r.Data[1].Embedding, 4)
			require.EqualValues(t, 1, r.Data[1].Index)
			require.Equal(t, "text-embedding-3-small", r.Model)
			require.Positive(t, r.Usage.PromptTokens)
			require.Equal(t, r.Usage.PromptTokens, r.Usage.TotalTokens)
		}},
		{openai.BatchNewParamsEndpointV1Completions, `{"model":"gpt-3.5-turbo-instruct","prompt":"Once upon a time"}`, func(t *testing.T, raw []byte) {
			var r openai.Completion
			require.NoError(t, json.Unmarshal(raw, &r))
			require.Equal(t, "text_completion", string(r.Object))
			require.Len(t, r.Choices, 1)
			require.NotEmpty(t, r.Choices[0].Text)
			require.Equal(t, openai.CompletionChoiceFinishReasonStop, r.Choices[0].FinishReason)
			require.Equal(t, r.Usage.PromptTokens+r.Usage.CompletionTokens, r.Usage.TotalTokens)
		}},
		{openai.BatchNewParamsEndpointV1Responses, `{"model":"gpt-4.1","input":"Tell me a joke"}`, func(t *testing.T, raw []byte) {
			var r responses.Response
			require.NoError(t, json.Unmarshal(raw, &r))
			require.Equal(t, "response", string(r.Object))
			require.Equal(t, responses.ResponseStatusCompleted, r.Status)
			require.Contains(t, r.OutputText(), "req-1")
			require.Positive(t, r.Usage.InputTokens)
			require.Equal(t, r.Usage.InputTokens+r.Usage.OutputTokens, r.Usage.TotalTokens)
		}},
		{openai.BatchNewParamsEndpointV1Moderations, `{"model":"omni-moderation-latest","input":"hello"}`, func(t *testing.T, raw []byte) {
			var r openai.ModerationNewResponse
			require.NoError(t, json.Unmarshal(raw, &r))
			require.Len(t, r.Results, 1)
			require.False(t, r.Results[0].Flagged)
		}},
		{openai.BatchNewParamsEndpointV1ChatCompletions, `{"model":"gpt-4o","n":2,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`, func(t *testing.T, raw []byte) {
			var r openai.ChatCompletion
			require.NoError(t, json.Unmarshal(raw, &r))
			require.Len(t, r.Choices, 2)
			require.EqualValues(t, 1, r.Choices[1].Index)
		}},
	} {
		t.Run(strings.TrimPrefix(string(tc.endpoint), "/v1/"), func(t *testing.T) {
			t.Parallel()
			line := fmt.Sprintf(`{"custom_id":"req-1","method":"POST","url":%q,"body":%s}`, tc.endpoint, tc.body)
			b := h.create(t, h.upload(t, line), tc.endpoint, nil)
			seen := h.await(t, b.ID, openai.BatchStatusCompleted)
			done := seen[len(seen)-1]
			require.Empty(t, done.ErrorFileID)
			out := h.content(t, done.OutputFileID)
			require.Len(t, out, 1)
			require.Equal(t, 200, out[0].Response.StatusCode)
			tc.check(t, out[0].Response.Body)
		})
	}
}

func TestListAutoPagingNewestFirst(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ValidatingFor = time.Hour
	h := start(t, cfg)
	fileID := h.upload(t, chatLine("a", "m"))
	var want []string
	for range 120 {
		want = append(want, h.create(t, fileID, openai.BatchNewParamsEndpointV1ChatCompletions, nil).ID)
	}
	slices.Reverse(want)

	var got []string
	pager := h.client.Batches.ListAutoPaging(context.Background(), openai.BatchListParams{Limit: openai.Int(50)})
	for pager.Next() {
		got = append(got, pager.Current().ID)
	}
	require.NoError(t, pager.Err())
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("listed batches (-want +got):\n%s", diff)
	}

	page, err := h.client.Batches.List(context.Background(), openai.BatchListParams{})
	require.NoError(t, err)
	require.Len(t, page.Data, 20, "default limit")
	require.True(t, page.HasMore)
	require.Contains(t, page.RawJSON(), fmt.Sprintf(`"first_id":%q`, want[0]))
	require.Contains(t, page.RawJSON(), fmt.Sprintf(`"last_id":%q`, want[19]))

	page, err = h.client.Batches.List(context.Background(), openai.BatchListParams{After: openai.String(want[100]), Limit: openai.Int(100)})
	require.NoError(t, err)
	require.Len(t, page.Data, 19)
	require.False(t, page.HasMore)

	_, err = h.client.Batches.List(context.Background(), openai.BatchListParams{Limit: openai.Int(0)})
	requireAPIError(t, err, http.StatusBadRequest, "integer_below_min_value")
	_, err = h.client.Batches.List(context.Background(), openai.BatchListParams{Limit: openai.Int(101)})
	requireAPIError(t, err, http.StatusBadRequest, "integer_above_max_value")
}

func requireAPIError(t *testing.T, err error, status int, code string) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	require.ErrorAs(t, err, &apiErr)
	require.Equal(t, status, apiErr.StatusCode, apiErr.RawJSON())
	require.Equal(t, code, apiErr.Code, apiErr.RawJSON())
	require.NotEmpty(t, apiErr.Message)
	require.NotEmpty(t, apiErr.Type)
	return apiErr
}

func TestCancel(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.CancelDelay = 300 * time.Millisecond
	h := start(t, cfg)
	b := h.submit(t, chatLines("gpt-4o-mini", "ok-1", "ok-2", "slow-never-finish")...)
	h.await(t, b.ID, openai.BatchStatusInProgress)
	eventually(t, "ok requests to run", func() bool {
		got, err := h.client.Batches.Get(context.Background(), b.ID)
		require.NoError(t, err)
		return got.RequestCounts.Completed == 2
	})

	c, err := h.client.Batches.Cancel(context.Background(), b.ID)
	require.NoError(t, err)
	require.Equal(t, openai.BatchStatusCancelling, c.Status)
	require.NotZero(t, c.CancellingAt)
	require.Zero(t, c.CancelledAt)

	again, err := h.client.Batches.Cancel(context.Background(), b.ID)
	require.NoError(t, err, "cancelling a cancelling batch is a no-op")
	require.Equal(t, openai.BatchStatusCancelling, again.Status)

	seen := h.await(t, b.ID, openai.BatchStatusCancelled)
	done := seen[len(seen)-1]
	require.NotZero(t, done.CancelledAt)
	require.Zero(t, done.CompletedAt)
	require.Equal(t, openai.BatchRequestCounts{}.Failed, done.RequestCounts.Failed)
	require.EqualValues(t, 3, done.RequestCounts.Total)
	require.EqualValues(t, 2, done.RequestCounts.Completed)
	require.Len(t, h.content(t, done.OutputFileID), 2)
	require.Empty(t, done.ErrorFileID)

	_, err = h.client.Batches.Cancel(context.Background(), b.ID)
	requireAPIError(t, err, http.StatusBadRequest, "")

	_, err = h.client.Batches.Cancel(context.Background(), "batch_nope")
	requireAPIError(t, err, http.StatusNotFound, "batch_not_found")
}

func TestCancelWhileValidating(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ValidatingFor = time.Hour
	h := start(t, cfg)
	b := h.submit(t, chatLine("ok-1", "m"))
	c, err := h.client.Batches.Cancel(context.Background(), b.ID)
	require.NoError(t, err)
	require.Equal(t, openai.BatchStatusCancelling, c.Status)
	seen := h.await(t, b.ID, openai.BatchStatusCancelled)
	done := seen[len(seen)-1]
	require.Zero(t, done.InProgressAt)
	require.Zero(t, done.RequestCounts.Total)
	require.Empty(t, done.OutputFileID)
}

func TestInvalidInputFailsBatch(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	ok := chatLine("ok", "gpt-4o-mini")
	for _, tc := range []struct {
		name  string
		lines []string
		want  []emulatorError
	}{
		{"not json", []string{ok, `{"custom_id":`}, []emulatorError{{"invalid_json_line", 2, ""}}},
		{"not an object", []string{`[1,2]`}, []emulatorError{{"invalid_json_line", 1, ""}}},
		{"missing custom_id", []string{`{"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`}, []emulatorError{{"missing_required_parameter", 1, "custom_id"}}},
		{"custom_id not a string", []string{`{"custom_id":7,"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}`}, []emulatorError{{"missing_required_parameter", 1, "custom_id"}}},
		{"missing body", []string{`{"custom_id":"a","method":"POST","url":"/v1/chat/completions"}`}, []emulatorError{{"missing_required_parameter", 1, "body"}}},
		{"missing model", []string{`{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"messages":[]}}`}, []emulatorError{{"missing_required_parameter", 1, "body.model"}}},
		{"wrong method", []string{`{"custom_id":"a","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}}`}, []emulatorError{{"invalid_method", 1, "method"}}},
		{"wrong url", []string{ok, `{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"gpt-4o-mini"}}`}, []emulatorError{{"invalid_url", 2, "url"}}},
		{"duplicate custom_id", []string{ok, chatLine("b", "gpt-4o-mini"), ok}, []emulatorError{{"duplicate_custom_id", 3, "custom_id"}}},
		{"mismatched model", []string{ok, chatLine("b", "gpt-4o")}, []emulatorError{{"mismatched_model", 2, "body.model"}}},
		{"several", []string{`nope`, ok, chatLine("b", "gpt-4o")}, []emulatorError{{"invalid_json_line", 1, ""}, {"mismatched_model", 3, "body.model"}}},
		{"empty", []string{""}, []emulatorError{{"empty_file", 0, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := h.submit(t, tc.lines...)
			seen := h.await(t, b.ID, openai.BatchStatusFailed)
			done := seen[len(seen)-1]
			require.NotZero(t, done.FailedAt)
			require.Zero(t, done.InProgressAt)
			require.Zero(t, done.RequestCounts.Total)
			require.Equal(t, "list", done.Errors.Object)
			var got []emulatorError
			for _, e := range done.Errors.Data {
				require.NotEmpty(t, e.Message)
				got = append(got, emulatorError{e.Code, e.Line, e.Param})
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("errors.data (-want +got):\n%s", diff)
			}
			require.Empty(t, done.OutputFileID)
			require.Empty(t, done.ErrorFileID)
		})
	}
}

type emulatorError struct {
	Code  string
	Line  int64
	Param string
}

func TestCreateValidation(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	fileID := h.upload(t, chatLine("a", "m"))
	userFile, err := h.client.Files.New(context.Background(), openai.FileNewParams{
		File: openai.File(strings.NewReader("x"), "x.txt", "text/plain"), Purpose: openai.FilePurposeUserData,
	})
	require.NoError(t, err)
	many := map[string]string{}
	for i := range 17 {
		many[fmt.Sprint("k", i)] = "v"
	}
	params := func(mod func(*openai.BatchNewParams)) openai.BatchNewParams {
		p := openai.BatchNewParams{InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h"}
		mod(&p)
		return p
	}
	for _, tc := range []struct {
		name   string
		params openai.BatchNewParams
		status int
		code   string
	}{
		{"bad endpoint", params(func(p *openai.BatchNewParams) { p.Endpoint = "/v1/nope" }), 400, "invalid_value"},
		{"bad window", params(func(p *openai.BatchNewParams) { p.CompletionWindow = "48h" }), 400, "invalid_value"},
		{"too many metadata pairs", params(func(p *openai.BatchNewParams) { p.Metadata = many }), 400, "object_above_max_properties"},
		{"metadata key too long", params(func(p *openai.BatchNewParams) { p.Metadata = map[string]string{strings.Repeat("k", 65): "v"} }), 400, "string_above_max_length"},
		{"metadata value too long", params(func(p *openai.BatchNewParams) { p.Metadata = map[string]string{"k": strings.Repeat("v", 513)} }), 400, "string_above_max_length"},
		{"unknown file", params(func(p *openai.BatchNewParams) { p.InputFileID = "file-nope" }), 404, "file_not_found"},
		{"file purpose not batch", params(func(p *openai.BatchNewParams) { p.InputFileID = userFile.ID }), 400, "invalid_file_purpose"},
		{"missing file id", params(func(p *openai.BatchNewParams) { p.InputFileID = "" }), 400, "missing_required_parameter"},
		{"bad output expiry", params(func(p *openai.BatchNewParams) { p.OutputExpiresAfter.Seconds = 60 }), 400, "invalid_value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.Batches.New(context.Background(), tc.params)
			requireAPIError(t, err, tc.status, tc.code)
		})
	}
	// At the limits is fine.
	atLimit := map[string]string{}
	for i := range 16 {
		atLimit[fmt.Sprintf("%064d", i)] = strings.Repeat("v", 512)
	}
	_, err = h.client.Batches.New(context.Background(), params(func(p *openai.BatchNewParams) { p.Metadata = atLimit }))
	require.NoError(t, err)
	require.Len(t, h.emu.Batches(), 1)
}

func TestExpiryKeepsPartialOutput(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ExpireAfter = 2 * time.Second
	h := start(t, cfg)
	b := h.submit(t, chatLines("gpt-4o-mini", "ok-1", "ok-2", "x-fail-always", "x-never-finish-1", "x-never-finish-2")...)
	require.Equal(t, b.CreatedAt+2, b.ExpiresAt, "expires_at follows ExpireAfter")
	seen := h.await(t, b.ID, openai.BatchStatusExpired)
	done := seen[len(seen)-1]
	require.NotZero(t, done.ExpiredAt)
	require.Zero(t, done.FinalizingAt)
	require.Zero(t, done.CompletedAt)
	require.Equal(t, openai.BatchRequestCounts{}.Total+5, done.RequestCounts.Total)
	require.EqualValues(t, 2, done.RequestCounts.Completed)
	require.EqualValues(t, 1, done.RequestCounts.Failed, "expired requests do not count as failed")

	require.ElementsMatch(t, []string{"ok-1", "ok-2"}, customIDs(h.content(t, done.OutputFileID)))
	errs := byCustomID(h.content(t, done.ErrorFileID))
	require.Len(t, errs, 3)
	require.Equal(t, 500, errs["x-fail-always"].Response.StatusCode)
	for _, id := range []string{"x-never-finish-1", "x-never-finish-2"} {
		l := errs[id]
		require.Nil(t, l.Response)
		require.Contains(t, l.raw, `"response":null`)
		require.Equal(t, "batch_expired", l.Error.Code)
		require.Equal(t, "This request could not be executed before the completion window of 24h expired.", l.Error.Message)
	}

	// A whole batch of model expire-me executes nothing.
	b = h.submit(t, chatLines(emulator.ModelExpireMe, "a", "b")...)
	seen = h.await(t, b.ID, openai.BatchStatusExpired)
	done = seen[len(seen)-1]
	require.Empty(t, done.OutputFileID)
	require.Len(t, h.content(t, done.ErrorFileID), 2)
}

func customIDs(lines []resultLine) []string {
	var ids []string
	for _, l := range lines {
		ids = append(ids, l.CustomID)
	}
	return ids
}

func TestInjectedRateLimitAndServerErrors(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	b := h.submit(t, chatLine("a", "m"))

	require.NoError(t, h.emu.SetFaults(emulator.Faults{
		RetryAfter: 2 * time.Second,
		Ops:        map[string]emulator.OpFaults{emulator.OpCreate: {RateLimitRate: 1}, emulator.OpGet: {ServerErrorRate: 1}},
	}))
	_, err := h.client.Batches.New(context.Background(), openai.BatchNewParams{
		InputFileID: b.InputFileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h",
	})
	apiErr := requireAPIError(t, err, http.StatusTooManyRequests, "rate_limit_exceeded")
	require.Equal(t, "2", apiErr.Response.Header.Get("Retry-After"))

	_, err = h.client.Batches.Get(context.Background(), b.ID)
	var getErr *openai.Error
	require.ErrorAs(t, err, &getErr)
	require.Contains(t, []int{500, 503}, getErr.StatusCode)
	require.Equal(t, "server_error", getErr.Type)
	require.Equal(t, "2", getErr.Response.Header.Get("Retry-After"))

	// Other operations are untouched; a retrying client rides out a 5xx burst.
	_, err = h.client.Batches.List(context.Background(), openai.BatchListParams{})
	require.NoError(t, err)
	require.Len(t, h.emu.Batches(), 1, "a rate-limited create creates nothing")

	require.NoError(t, h.emu.SetFaults(emulator.Faults{}))
	_, err = h.client.Batches.Get(context.Background(), b.ID)
	require.NoError(t, err)

	st := h.emu.Stats()
	require.EqualValues(t, 2, st.CallsByOp[emulator.OpCreate])
	require.EqualValues(t, 2, st.CallsByOp[emulator.OpGet])
	require.EqualValues(t, 1, st.CallsByOp[emulator.OpList])
}

func TestDropAfterCreate(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.ValidatingFor = time.Hour
	h := start(t, cfg)
	fileID := h.upload(t, chatLine("a", "m"))
	require.NoError(t, h.emu.SetFaults(emulator.Faults{DropAfterCreateRate: 1}))
	newBatch := func(client openai.Client, key string) error {
		_, err := client.Batches.New(context.Background(), openai.BatchNewParams{
			InputFileID: fileID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: "24h",
			Metadata: map[string]string{"idempotency_key": key},
		})
		return err
	}
	err := newBatch(h.client, "once")
	require.Error(t, err)
	var apiErr *openai.Error
	require.False(t, errors.As(err, &apiErr), "want a transport error, got %v", err)

	// openai-go retries transport errors: each retry creates another batch,
	// which is why the fleet must reconcile by idempotency key.
	retrying := openai.NewClient(option.WithBaseURL(h.srv.URL+"/v1"), option.WithAPIKey(testKey),
		option.WithMaxRetries(2), option.WithHTTPClient(h.srv.Client()))
	require.Error(t, newBatch(retrying, "thrice"))

	var list struct {
		Data []emulator.BatchInfo `json:"data"`
	}
	h.admin(t, http.MethodGet, "/_emulator/batches", nil, &list)
	byKey := map[string]int{}
	for _, b := range list.Data {
		byKey[b.Metadata["idempotency_key"]]++
		require.Equal(t, "validating", b.Status)
	}
	require.Equal(t, map[string]int{"once": 1, "thrice": 3}, byKey)

	calls := h.emu.Calls(list.Data[0].ID)
	require.Len(t, calls, 1)
	require.Equal(t, emulator.OpCreate, calls[0].Op)
	require.Zero(t, calls[0].Status, "dropped")
}

func TestAuth(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	_, err := h.client.Batches.List(context.Background(), openai.BatchListParams{}, option.WithAPIKey("sk-wrong-key-123456"))
	apiErr := requireAPIError(t, err, http.StatusUnauthorized, "invalid_api_key")
	require.NotContains(t, apiErr.Message, "sk-wrong-key-123456", "key must be redacted")

	resp, err := h.srv.Client().Get(h.srv.URL + "/v1/batches")
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	open := start(t, emulator.Config{})
	_, err = open.client.Batches.List(context.Background(), openai.BatchListParams{}, option.WithAPIKey("anything"))
	require.NoError(t, err, "no APIKey configured accepts any key")
}

func TestFiles(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	ctx := context.Background()
	data := chatLine("a", "m") + "\n"
	f, err := h.client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader(data), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
	})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(f.ID, "file-"), f.ID)
	require.Equal(t, "file", string(f.Object))
	require.EqualValues(t, len(data), f.Bytes)
	require.Equal(t, "in.jsonl", f.Filename)
	require.Equal(t, openai.FileObjectPurposeBatch, f.Purpose)
	require.Contains(t, f.RawJSON(), `"status":"processed"`)
	require.NotZero(t, f.CreatedAt)

	got, err := h.client.Files.Get(ctx, f.ID)
	require.NoError(t, err)
	require.Equal(t, f.RawJSON(), got.RawJSON())

	resp, err := h.client.Files.Content(ctx, f.ID)
	require.NoError(t, err)
	body := new(strings.Builder)
	_, err = fmt.Fprint(body, readAll(t, resp))
	require.NoError(t, err)
	require.Equal(t, data, body.String())

	page, err := h.client.Files.List(ctx, openai.FileListParams{Purpose: openai.String("batch")})
	require.NoError(t, err)
	require.Len(t, page.Data, 1)

	del, err := h.client.Files.Delete(ctx, f.ID)
	require.NoError(t, err)
	require.True(t, del.Deleted)
	require.Equal(t, f.ID, del.ID)
	_, err = h.client.Files.Get(ctx, f.ID)
	requireAPIError(t, err, http.StatusNotFound, "file_not_found")
	_, err = h.client.Files.Content(ctx, f.ID)
	requireAPIError(t, err, http.StatusNotFound, "file_not_found")
	_, err = h.client.Files.Delete(ctx, f.ID)
	requireAPIError(t, err, http.StatusNotFound, "file_not_found")

	_, err = h.client.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(data), "in.jsonl", "application/jsonl"), Purpose: "batch_output"})
	requireAPIError(t, err, http.StatusBadRequest, "invalid_value")
	_, err = h.client.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(data), "in.txt", "text/plain"), Purpose: openai.FilePurposeBatch})
	requireAPIError(t, err, http.StatusBadRequest, "")
	exp, err := h.client.Files.New(ctx, openai.FileNewParams{
		File: openai.File(strings.NewReader(data), "in.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch,
		ExpiresAfter: openai.FileNewParamsExpiresAfter{Seconds: 7200},
	})
	require.NoError(t, err)
	require.Equal(t, exp.CreatedAt+7200, exp.ExpiresAt)
	require.Equal(t, f.CreatedAt+30*24*3600, f.ExpiresAt, "batch files expire after 30 days by default")
	for _, p := range []openai.FilePurpose{"assistants", "fine-tune", "vision", "user_data", "evals"} {
		_, err = h.client.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader("x"), "x.bin", "application/octet-stream"), Purpose: p})
		require.NoError(t, err, p)
	}
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer func() { _ = resp.Body.Close() }()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return sb.String()
		}
	}
}

func TestLatencyRespectsCancellation(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.Latency = time.Minute
	h := start(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	began := time.Now()
	_, err := h.client.Batches.Get(ctx, "batch_x")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Less(t, time.Since(began), 30*time.Second)
	eventually(t, "the abandoned call to be logged", func() bool {
		calls := h.emu.Calls("batch_x")
		return len(calls) == 1 && calls[0].Status == 499
	})
}

func TestEnqueuedTokenLimit(t *testing.T) {
	t.Parallel()
	cfg := fast()
	cfg.EnqueuedTokenLimit = 40
	h := start(t, cfg)
	// Each line is "Say hello to <id>": ~5 tokens.
	first := h.submit(t, chatLines("gpt-4o", "a-never-finish", "b", "c", "d", "e")...)
	other := h.submit(t, chatLines("gpt-4o-mini", "a-never-finish", "b", "c", "d", "e")...) // other model: own budget
	over := h.submit(t, chatLines("gpt-4o", "f", "g", "h", "i", "j")...)

	h.await(t, first.ID, openai.BatchStatusInProgress)
	h.await(t, other.ID, openai.BatchStatusInProgress)
	seen := h.await(t, over.ID, openai.BatchStatusFailed)
	errs := seen[len(seen)-1].Errors.Data
	require.Len(t, errs, 1)
	require.Equal(t, "token_limit_exceeded", errs[0].Code)

	_, err := h.client.Batches.Cancel(context.Background(), first.ID)
	require.NoError(t, err)
	h.await(t, first.ID, openai.BatchStatusCancelled)
	fits := h.submit(t, chatLines("gpt-4o", "f", "g", "h", "i", "j")...)
	h.await(t, fits.ID, openai.BatchStatusCompleted)
}

func TestAdminAPI(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	a := h.submit(t, chatLine("a", "m"))
	b := h.submit(t, chatLine("b", "m"))
	h.await(t, a.ID, openai.BatchStatusCompleted)
	h.await(t, b.ID, openai.BatchStatusCompleted)

	var st emulator.Stats
	h.admin(t, http.MethodGet, "/_emulator/stats", nil, &st)
	require.EqualValues(t, 2, st.BatchesCreated)
	require.Zero(t, st.ActiveNow)
	require.Equal(t, 2, st.MaxActive)
	require.EqualValues(t, 2, st.CallsByOp[emulator.OpCreate])
	require.EqualValues(t, 2, st.CallsByOp[emulator.OpUpload])

	var calls struct {
		Data []map[string]any `json:"data"`
	}
	h.admin(t, http.MethodGet, "/_emulator/calls?batch_id="+a.ID, nil, &calls)
	require.NotEmpty(t, calls.Data)
	var prevEnd time.Time
	for _, c := range calls.Data {
		require.Equal(t, a.ID, c["batch_id"])
		started, err := time.Parse(time.RFC3339Nano, c["started_at"].(string))
		require.NoError(t, err)
		ended, err := time.Parse(time.RFC3339Nano, c["ended_at"].(string))
		require.NoError(t, err)
		require.False(t, started.Before(prevEnd), "sequential calls must not overlap")
		require.False(t, ended.Before(started))
		prevEnd = ended
		require.Contains(t, []any{"create", "get"}, c["op"])
		require.Contains(t, []any{"POST", "GET"}, c["method"])
		require.True(t, strings.HasPrefix(c["path"].(string), "/v1/batches"))
	}

	var faults map[string]any
	h.admin(t, http.MethodPut, "/_emulator/faults", strings.NewReader(`{"latency_ms":1,"rate_limit_rate":0.5,"ops":{"get":{"rate_limit_rate":0,"server_error_rate":0}}}`), &faults)
	require.InDelta(t, 0.5, faults["rate_limit_rate"], 0)
	require.Equal(t, time.Millisecond, h.emu.Faults().Latency)
	require.Equal(t, time.Second, h.emu.Faults().RetryAfter, "defaulted")

	req, err := http.NewRequest(http.MethodPut, h.srv.URL+"/_emulator/faults", strings.NewReader(`{"rate_limit_rate":2}`))
	require.NoError(t, err)
	resp, err := h.srv.Client().Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusBadRequest, resp.StatusCode)

	h.admin(t, http.MethodPost, "/_emulator/reset-stats", nil, &st)
	require.Zero(t, st.BatchesCreated)
	require.Zero(t, st.MaxActive)
	require.Empty(t, h.emu.Calls(""))
	require.Len(t, h.emu.Batches(), 2, "batches survive a reset")
}

func TestUnknownRoute(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	err := h.client.Post(context.Background(), "models/x", nil, nil)
	requireAPIError(t, err, http.StatusNotFound, "unknown_url")
}

func TestOutputOrderIsNotInputOrder(t *testing.T) {
	t.Parallel()
	h := start(t, fast())
	var ids []string
	for i := range 40 {
		ids = append(ids, fmt.Sprintf("r-%02d", i))
	}
	b := h.submit(t, chatLines("m", ids...)...)
	seen := h.await(t, b.ID, openai.BatchStatusCompleted)
	got := customIDs(h.content(t, seen[len(seen)-1].OutputFileID))
	require.ElementsMatch(t, ids, got)
	require.NotEqual(t, ids, got, "OpenAI does not guarantee output order; the emulator shuffles it")
}
