// Package jobstore keeps the durable record of every job in JetStream
// key-value buckets and changes it only by compare-and-set on the entry's
// revision, so two workers can never both believe they made the same
// transition. It is the fleet's source of truth: Redis may lose everything
// and a job record still prevents a second vendor batch for a key.
//
// Buckets:
//   - batch_jobs: one Job per original idempotency key (attempts, vendor
//     batch ids, outcome, timings, cost). Kept JOB_RETENTION (30 days) after
//     its last change, so a key published again is answered from the record.
//   - batch_polls: one Poll per active vendor batch (last status published,
//     request counts), read by pollers and the vendor webhook receiver.
//   - Object stores batch_inputs (the JSONL of each vendor batch, kept until
//     the job is final, for retry batches) and batch_results (merged results).
package jobstore
