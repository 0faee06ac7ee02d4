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
// Retries: failed requests whose errors are retryable (5xx, 429, timeouts,
// batch_expired) become a new vendor batch of only those requests under
// the deterministic key "<key>:retry-<n>" (so creating it is itself
// idempotent), after RETRY_BACKOFF doubled per attempt, up to
// MAX_RETRY_ATTEMPTS. Other failures are final at once.
package notify
