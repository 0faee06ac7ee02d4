// Package emulator is an in-memory emulator of OpenAI's Files and Batch
// API and of Anthropic's Message Batches API, with fault injection, for
// developing and testing the fleet without the vendors. Workers reach it
// only over HTTP through openai-go and anthropic-sdk-go, exactly as they
// reach the vendors, so it answers with their JSON shapes: for OpenAI, File
// and Batch objects, cursor lists, output and error JSONL whose bodies
// decode with openai-go's types, and the error envelope
// {"error":{"message","type","param","code"}}; for Anthropic, see
// "Anthropic Message Batches" below. Both APIs share one server, one
// Config, one clock and one fault injection.
//
// # Use
//
// [New] returns an [Emulator], an http.Handler to mount with httptest:
//
//	emu := emulator.New(emulator.Config{ExpireAfter: 3 * time.Second})
//	defer emu.Close()
//	srv := httptest.NewServer(emu)
//	client := openai.NewClient(option.WithBaseURL(srv.URL+"/v1"), option.WithAPIKey("test"))
//
// [Server] serves one on a TCP address; cmd/openai-emulator wraps it and is
// configured by environment (see [LoadEnv]).
//
// # API
//
//	POST   /v1/files                 multipart file + purpose
//	GET    /v1/files, /v1/files/{id}, /v1/files/{id}/content
//	DELETE /v1/files/{id}
//	POST   /v1/batches               input_file_id, endpoint, completion_window, metadata, output_expires_after
//	GET    /v1/batches?limit=&after= newest first, cursor pagination
//	GET    /v1/batches/{id}
//	POST   /v1/batches/{id}/cancel
//
// Every OpenAI /v1 call needs "Authorization: Bearer <key>" (any key unless
// [Config.APIKey] is set).
//
// # Lifecycle
//
// A batch's lifecycle is planned at creation from the [Config] durations
// and evaluated lazily from timestamps on every read, so it advances with
// nobody polling and 100,000 batches cost nothing while idle. A scheduler
// (a timer heap of terminal times) finishes batches on time for webhooks
// and the active-batch count. The phases:
//
//   - validating for ValidatingFor; then the input JSONL is checked (each
//     line a JSON object with a unique custom_id, method POST, url equal to
//     the batch endpoint, a body with the same model on every line,
//     1..50000 lines, the enqueued token limit). A violation fails the batch
//     with errors.data entries such as invalid_json_line,
//     missing_required_parameter, duplicate_custom_id, mismatched_model,
//     invalid_url or token_limit_exceeded.
//   - in_progress for InProgressFor, requests completing evenly spread over
//     it, so request_counts rise when polled;
//   - finalizing for FinalizingFor, then completed with output_file_id (if
//     any request succeeded) and error_file_id (if any failed). Requests
//     execute in a random order and their lines are written as they do, so
//     output lines are in random order, as OpenAI does not guarantee order.
//
// A batch not finalizing ExpireAfter after creation expires: what executed
// is in its output and error files, every other request is an error line
// with error.code batch_expired (and does not count as failed). Cancelling
// a validating or in_progress batch makes it cancelling, then cancelled
// after CancelDelay, with the requests executed until the cancel in its
// files; requests never executed have no line.
//
// # Large files
//
// The emulator holds each file once. An upload is read straight into one
// buffer sized from the request's Content-Length (a chunked upload into
// blocks that each end at a line end), up to MaxFileBytes (200 MiB, 413
// file_too_large beyond). Creating a batch walks its input in place, line
// by line, and keeps per request only its custom_id, token estimate and
// the few body parameters its reply needs, so a 200 MB, 50,000-line batch
// costs about its files: output and error lines are appended to their
// file as requests execute. ReplyBytes (EMULATOR_REPLY_BYTES) pads every
// reply text to a given size, so a benchmark can make output files as
// large as real ones: 1250 makes 50,000 chat requests ~100 MB of output.
//
// # Choosing outcomes
//
// A request's custom_id decides its outcome: "fail-once" fails with 500 the
// first time that custom_id executes in the emulator's lifetime,
// "fail-always" always fails with 500, "fail-429" with 429, "fail-400"
// with 400, and "never-finish" never executes, keeping its batch
// in_progress until expiry or cancel, as does the model "expire-me" for a
// whole batch. FailureRate adds random 500s. Message Batches take the same
// words (see below).
//
// # Anthropic Message Batches
//
// The same server speaks Anthropic's Message Batches API; an
// anthropic-sdk-go client takes the server's root as its base URL
// (option.WithBaseURL(srv.URL)):
//
//	POST   /v1/messages/batches              {"requests":[{"custom_id","params":{model,max_tokens,messages,...}}]}
//	GET    /v1/messages/batches?limit=&before_id=&after_id=
//	GET    /v1/messages/batches/{id}
//	POST   /v1/messages/batches/{id}/cancel
//	DELETE /v1/messages/batches/{id}
//	GET    /v1/messages/batches/{id}/results  JSONL, Content-Type application/binary
//
// Every call needs the key as "x-api-key: <key>" or "Authorization: Bearer
// <key>" (anthropic-sdk-go v2's option.WithAPIKey sends the latter; any key
// unless [Config.APIKey] is set), else 401 authentication_error, and an
// "anthropic-version: YYYY-MM-DD" header, else 400. Every answer carries a
// request-id header; errors are
// {"type":"error","error":{"type","message"},"request_id"} with Anthropic's types: invalid_request_error (400),
// authentication_error (401), not_found_error (404), request_too_large
// (413), rate_limit_error (429), api_error (500), overloaded_error (529).
//
// A create is validated as Anthropic does before it creates anything:
// the body is {"requests":[...]} and nothing else, 1..100000 requests
// within MaxMessageBatchBytes (256 MB; 413 request_too_large beyond), each
// {"custom_id","params"} with a custom_id matching ^[a-zA-Z0-9_-]{1,64}$
// and unique in the batch, and params holding model (a string), max_tokens
// (an integer >= 0) and messages (a non-empty list); other params are
// taken as they are. The first violation is a 400 naming its field, as
// "requests.2.custom_id: Duplicate custom_id ...".
//
// The answer is a MessageBatch: id msgbatch_..., type message_batch,
// processing_status in_progress, canceling or ended, created_at and
// expires_at (created_at+ExpireAfter, 24h by default) as RFC 3339,
// ended_at, cancel_initiated_at and results_url null until they apply,
// archived_at always null (results are kept until deleted). request_counts
// follow Anthropic's documentation, not progress: "requests start as
// processing and move to one of the other statuses only once processing
// of the entire batch ends", their sum always the number of requests. So
// until ended every request counts as processing and succeeded, errored,
// canceled and expired are 0, even while requests run; at ended they hold
// the outcomes and results_url is <server root>/v1/messages/batches/<id>/results.
// The admin API shows progress before then.
//
// The lifecycle reuses the OpenAI durations: requests execute evenly over
// InProgressFor starting ValidatingFor after creation, in random order,
// and the batch ends FinalizingFor after the last one, all the while
// in_progress. Cancel makes it canceling, ended CancelDelay later with the
// requests not yet executed canceled (cancelling a canceling batch is a
// no-op, an ended one a 400). A batch whose requests have not all executed
// ExpireAfter after creation ends then, the rest expired. Results are one
// line per request, in random order (executed ones first, then canceled
// or expired ones): {"custom_id","result":{"type":"succeeded","message":
// {a Message: id msg_..., role assistant, the model, one text block,
// stop_reason end_turn, usage}}}, {"type":"errored","error":{"type":"error",
// "error":{"type","message"},"request_id"}}, {"type":"canceled"} or
// {"type":"expired"}. The reply text is the OpenAI side's, cut to
// max_tokens (stop_reason max_tokens) when it does not fit. Results of a
// batch not yet ended are a 400 invalid_request_error; deleting one that
// has not ended is a 400 too; a deleted batch is a 404 not_found_error and
// is no longer listed. Lists are newest first, {"data","has_more",
// "first_id","last_id"}: after_id pages to older batches, before_id to
// newer ones, limit 1..1000 (default 20); an unknown cursor lists nothing.
//
// Outcomes are chosen by the trigger words of the OpenAI side, in a
// request's custom_id or, when it holds one, in its
// params.metadata.user_id (the fleet rewrites custom_ids, not params):
// "fail-once" is an errored api_error the first time that string executes,
// "fail-always" api_error, "fail-400" invalid_request_error, "fail-429"
// rate_limit_error, "never-finish" never executes (the batch stays
// in_progress until cancel or expiry, then the request is canceled or
// expired), and one request of model "expire-me" holds the whole batch so.
// FailureRate adds random api_errors. Anthropic batches send no webhooks.
//
// # Faults
//
// [Faults] injects per operation, with Retry-After, 429s (OpenAI's
// rate_limit_exceeded, Anthropic's rate_limit_error), server errors
// (OpenAI's 500 or 503; Anthropic's 500 api_error or 529 overloaded_error)
// and, for Anthropic operations only, 529 overloaded_error
// (OverloadedRate); latency on every call; and DropAfterCreateRate, for
// both creates: the batch is created, then the connection is closed
// without an answer, as a network failure after the vendor committed
// would. Operations are named OpCreate, OpGet, ... for OpenAI and
// OpAnthropicCreate, OpAnthropicGet, OpAnthropicList, OpAnthropicCancel,
// OpAnthropicDelete, OpAnthropicResults for Anthropic. Change them at run
// time with [Emulator.SetFaults] or PUT /_emulator/faults. Note that
// anthropic-sdk-go retries a create only on 429 or a connection that never
// opened, never on 5xx or 529.
//
// # Webhooks
//
// With WebhookURL set, each terminal status is POSTed as OpenAI's event
// (batch.completed, batch.failed, batch.expired, batch.cancelled) signed per
// Standard Webhooks with WebhookSecret, so openai-go's Webhooks.Unwrap
// accepts it. Non-2xx answers are retried WebhookAttempts times.
//
// # Admin API
//
// Not a vendor's; no auth. Lists are {"object":"list","data":[...]}:
//
//	GET  /_emulator/batches?provider= every batch ever created through either API, oldest
//	                                  first ([BatchInfo]: provider "openai" or "anthropic"; an
//	                                  Anthropic one has custom_ids, counts of executed
//	                                  requests even before it has ended, deleted when
//	                                  deleted); provider=openai|anthropic keeps one API's
//	GET  /_emulator/calls?batch_id=   the bounded /v1 call log ([Call]: method, path, op,
//	                                  batch_id, status, started_at, ended_at as RFC3339Nano wall clock)
//	GET  /_emulator/stats             [Stats]: batches_created, active_now, max_active, calls_by_op
//	GET  /_emulator/faults            the [Faults] in force
//	PUT  /_emulator/faults            {"latency_ms","rate_limit_rate","server_error_rate","overloaded_rate",
//	                                   "ops":{"create":{"rate_limit_rate","server_error_rate"},
//	                                          "anthropic_create":{...,"overloaded_rate"},...},
//	                                   "retry_after_seconds","drop_after_create_rate","failure_rate"}
//	POST /_emulator/reset-stats       zeroes counters and the call log, answers [Stats]
//
// The same is available in Go: [Emulator.Batches], [Emulator.Calls],
// [Emulator.Stats], [Emulator.SetFaults], [Emulator.ResetStats].
//
// # Known differences from the vendors
//
// Image and video endpoints are rejected; files never expire by themselves
// (expires_at is reported only); token counts are estimates (~4 characters
// a token); the reply text is fixed per custom_id (padded to ReplyBytes). Where OpenAI's exact
// answer is undocumented the emulator chooses: cancelling a batch that is
// finalizing or terminal is a 400 invalid_request_error, unknown IDs are
// 404 with code file_not_found or batch_not_found, an unknown list cursor
// lists nothing, and errors.data reports at most 100 line errors.
//
// Of Anthropic's API: only the Message Batches endpoints are served (the
// synchronous Messages API is a 404); params beyond model, max_tokens and
// messages are not validated, where Anthropic validates them while the
// batch runs and reports errored results; any anthropic-version date is
// accepted; batches are never archived; results before ended are a 400
// (Anthropic leaves results_url null then); a batch listed with both
// before_id and after_id is a 400; token counts are the OpenAI side's
// estimates.
package emulator
