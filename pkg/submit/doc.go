// Package submit is the submitter: it takes batch requests from the
// BATCH_REQUESTS stream (and retry batches from the notifiers), validates
// them, and turns each idempotency key into at most one vendor batch.
//
// The promise "one key never becomes two vendor batches" rests on three
// layers, each covering what the one before cannot:
//
//  1. A Redis lock per key (SET NX PX with a random token, renewed while
//     working, released by compare-and-delete) keeps two submitters from
//     working on one key at once. It is fast but not durable: Redis may lose
//     it (flush, restart, failover) and a paused holder may outlive it.
//  2. The durable job record (JetStream KV, compare-and-set on the revision)
//     is the fence. Right before Batches.New the submitter records
//     create_started_at by compare-and-set; a second submitter whose lock
//     was a lie loses that compare-and-set, or sees the mark and does not
//     create.
//  3. Reconciliation: while a create's outcome is unknown (killed after the
//     call, 5xx, dropped connection), the next attempt searches the vendor's
//     batches (newest first, back to the mark) for metadata.idempotency_key
//     and adopts the batch it finds. It creates again only when none is
//     found after the first call's deadline (VENDOR_CALL_TIMEOUT) has
//     passed, so a call still in flight cannot land after the search.
//
// Inputs of any size the vendor takes: a request may name an input_object
// in the batch_intake object store instead of carrying its requests
// (contract v1.1, "Large inputs"). The submitter checks it line by line as
// a stream (intake.Check: JSON, custom_id unique, method POST, url
// the job's endpoint, one model, at most 50,000 lines and 200 MiB) before
// recording the job; a missing object or a bad line fails the job like an
// invalid message (input_not_found, invalid_input naming the line), with
// a dead-letter entry. Uploads stream from the object store to the vendor
// (batchapi.Client.UploadFrom), never holding the file in memory.
//
// openai-go's own retries are off: a silent second Batches.New is exactly
// the double billing this package exists to prevent.
package submit
