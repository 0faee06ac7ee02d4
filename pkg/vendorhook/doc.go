// Package vendorhook receives the vendor's batch webhooks (POST
// /webhooks/openai) so a batch's final state is seen within a second of the
// vendor's event instead of at the next poll.
//
// # Why webhooks and polling
//
// OpenAI sends batch.completed, batch.failed, batch.expired and
// batch.cancelled to a registered endpoint. Delivery is at least once and
// best effort: an event can arrive twice, late (the vendor retries with
// backoff for a while), or never (the vendor gives up, the endpoint was down
// or misconfigured, the secret was rotated). So a webhook never carries state
// into the fleet by itself: it only makes the poller that owns the batch poll
// it now ([Deps.Trigger]), and that poll reads the authoritative state from
// the vendor and publishes the change exactly as a scheduled poll would.
// Polling stays the fallback that bounds how late a lost webhook makes the
// fleet; the webhook only shortens the common case.
//
// # What the receiver answers
//
//   - 405 to anything but POST; 413 to a body over [Config.MaxBody].
//   - 400 to a bad or missing signature, a webhook-timestamp outside
//     [Config.Tolerance] (Standard Webhooks, verified by openai-go through
//     batchapi.VerifyWebhook), or a signed body that is not an event.
//   - 200 to an event of another type (ignored), to a webhook-id already
//     processed (not processed again), and to a batch the fleet does not
//     know (Trigger returned an error wrapping [ErrUnknownBatch]; logged).
//   - 200 once Trigger succeeded; 500 when it failed, so the vendor
//     redelivers and the next attempt triggers again.
//   - 409 while another delivery of the same webhook-id is being processed:
//     the vendor retries later and then gets 200 (done) or a new attempt
//     (the first one failed).
//
// # De-duplication
//
// The webhook-id header stays the same across the vendor's redeliveries.
// Before triggering, the receiver claims batchfleet:webhook:<webhook-id>
// with SET NX and a short "processing" TTL (TriggerTimeout plus a margin);
// after Trigger succeeds it overwrites the key with "1" for DedupTTL; after
// Trigger fails it deletes its own claim, so a redelivery tries again.
// De-duplication is an optimisation, not a guarantee (Trigger only polls,
// which is idempotent): if Redis is unreachable the receiver triggers
// anyway, and a key lost from Redis means at most one extra poll.
package vendorhook
