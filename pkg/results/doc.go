// Package results turns OpenAI batch output and error files into per-request
// outcomes and merges them across a job's attempts (the original batch and
// its retry batches).
//
// Both files are JSONL, one line per request, in no guaranteed order:
//
//	{"id":"batch_req_..","custom_id":"..","response":{"status_code":200,"request_id":"..","body":{...}},"error":null}
//	{"id":"batch_req_..","custom_id":"..","response":null,"error":{"code":"batch_expired","message":".."}}
//
// [Scan] streams a file of any size (lines of any length) into [Line] values;
// [Line.Outcome] classifies a line as [Succeeded], [Retryable] or [Permanent]
// following the contract's batch.retry rules (5xx, 429, 408, timeouts and
// batch_expired are retryable; other 4xx and input validation are not);
// [Line.Usage] reads its token usage.
//
// [Merged] keeps the final result per original custom_id: a success always
// wins over a failure, among failures the latest attempt wins, among
// successes the earliest is kept. It keeps only what the outcome needs
// (attempt, outcome, reason, model, usage), never the bodies, so its memory
// does not grow with the size of requests and responses. It counts two
// usages: the kept one (one success per custom_id) and the billed one
// (every successful line of every attempt, what the vendor charges).
//
// The merged results file (one JSONL line per custom_id) is written by
// streaming: a [Writer] writes each attempt's lines as they are read, and
// [Merged.Merge] streams those files again, writing the line Merged keeps
// for each custom_id. [ReadMerged] and [Merged.AddMerged] read a merged
// file back into a Merged.
//
// [PriceTable] estimates cost from usage. Its default table is an estimate
// of OpenAI's published standard prices, not a bill: PRICE_TABLE overrides it.
//
// The package uses only the standard library; only pkg/batchapi talks to the
// vendor.
package results
