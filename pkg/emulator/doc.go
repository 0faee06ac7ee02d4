// Package emulator is an in-memory emulator of OpenAI's Files and Batch
// API, with fault injection, for developing and testing the fleet without
// the vendor. Workers reach it only over HTTP through openai-go, exactly as
// they reach OpenAI, so it answers with OpenAI's JSON shapes: File and
// Batch objects, cursor lists, output and error JSONL whose bodies decode
// with openai-go's types, and OpenAI's error envelope
// {"error":{"message","type","param","code"}}.
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
// Every /v1 call needs "Authorization: Bearer <key>" (any key unless
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
// whole batch. FailureRate adds random 500s.
//
// # Faults
//
// [Faults] injects 429s and 5xx per operation (with Retry-After),
// latency on every call, and DropAfterCreateRate: the batch is created,
// then the connection is closed without an answer, as a network failure
// after the vendor committed would. Change them at run time with
// [Emulator.SetFaults] or PUT /_emulator/faults.
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
// Not OpenAI's; no auth. Lists are {"object":"list","data":[...]}:
//
//	GET  /_emulator/batches           every batch ever created, oldest first ([BatchInfo])
//	GET  /_emulator/calls?batch_id=   the bounded /v1 call log ([Call]: method, path, op,
//	                                  batch_id, status, started_at, ended_at as RFC3339Nano wall clock)
//	GET  /_emulator/stats             [Stats]: batches_created, active_now, max_active, calls_by_op
//	GET  /_emulator/faults            the [Faults] in force
//	PUT  /_emulator/faults            {"latency_ms","rate_limit_rate","server_error_rate",
//	                                   "ops":{"create":{"rate_limit_rate","server_error_rate"},...},
//	                                   "retry_after_seconds","drop_after_create_rate","failure_rate"}
//	POST /_emulator/reset-stats       zeroes counters and the call log, answers [Stats]
//
// The same is available in Go: [Emulator.Batches], [Emulator.Calls],
// [Emulator.Stats], [Emulator.SetFaults], [Emulator.ResetStats].
//
// # Known differences from OpenAI
//
// Image and video endpoints are rejected; files never expire by themselves
// (expires_at is reported only); token counts are estimates (~4 characters
// a token); the reply text is fixed per custom_id (padded to ReplyBytes). Where OpenAI's exact
// answer is undocumented the emulator chooses: cancelling a batch that is
// finalizing or terminal is a 400 invalid_request_error, unknown IDs are
// 404 with code file_not_found or batch_not_found, an unknown list cursor
// lists nothing, and errors.data reports at most 100 line errors.
package emulator
