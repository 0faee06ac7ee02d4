// Package notify is the notifier: it takes vendor batches that ended (and
// jobs that ended without one), merges their results, starts retry batches
// for retryable failures and publishes exactly one batch.completed per
// original idempotency key, then fans events out to webhook subscribers.
//
// Exactly one final event: the event's Nats-Msg-Id is "<key>:completed"
// (JetStream drops a republish inside the duplicate window) and the job
// record's "completed" flag, set by compare-and-set after the publish,
// answers every later hand-off of the same job from the record.
//
// Streams, not buffers: output and error files are read line by line
// straight into the job's merged results object (batch_results/<key>),
// keeping per request only its attempt, outcome, reason, model and usage
// (results.Merged, ~150 bytes), never the bodies; the input is read again
// only when the vendor returned fewer lines than requests; a retry batch's
// lines go to their own object and the merged results are rewritten from
// the previous ones as a stream; a retry's input is the original input
// streamed through a filter. A job of 50,000 requests and 200 MB costs a
// notifier a few MB whatever the size of its bodies.
//
// One write per ended attempt: the attempt's final state and the job's
// next step (a retry attempt, a re-queue, or the outcome) are decided by a
// pure function of the record and written in one compare-and-set; if the
// record changed meanwhile, the decision is made again on the fresh record.
// A retry's input is stored before the record names it, and a redelivered
// hand-off hands a recorded but unsubmitted retry to the submitters again
// (same Nats-Msg-Id). Failed hand-offs back off exponentially (1s to 2m).
//
// Retries: failed requests whose errors are retryable (5xx, 429, timeouts,
// batch_expired) become a new vendor batch of only those requests under
// the deterministic key "<key>:retry-<n>" (so creating it is itself
// idempotent), after RETRY_BACKOFF doubled per attempt, up to
// MAX_RETRY_ATTEMPTS. Other failures are final at once.
package notify
