// Package poll is the poller: it turns vendor batch state into events.
//
// Claims are JetStream messages. Every active vendor batch has exactly one
// message on batchfleet.poll; the poller that holds it (an unacknowledged
// delivery) is the batch's only poller until it naks the message with the
// delay of the next poll, or acks it when the batch is final. A poller that
// dies holds its messages until their ack wait (POLL_LEASE, 15s) runs out,
// then JetStream delivers them to the surviving pollers: takeover within
// POLL_LEASE plus one fetch (< 2 x POLL_LEASE, 30s at the defaults). Jobs
// live in the stream, so they survive a restart of the whole fleet, and
// adding pollers spreads the messages over them.
//
// Each poll is paced by exponential backoff with jitter from
// POLL_INITIAL_INTERVAL to POLL_MAX_INTERVAL, reset when status or counts
// move and shortened while the batch is finalizing; the vendor's
// Retry-After is honoured, and all pollers together stay under POLL_RATE
// GETs through a limiter shared in Redis.
//
// With POLL_SWEEP_INTERVAL set, one poller (the leader, elected by a Redis
// lock) also sweeps: it lists the vendor's batches newest first, 100 a
// page, down to the oldest batch that was active at its previous sweep,
// and applies every change of the fleet's batches as a poll would, never
// going back to an older view. While its sweep record is fresh and the
// list proved newest first, a claim whose batch the sweep has listed polls
// only when nothing changed for 4 x POLL_MAX_INTERVAL, a safety net: one
// List page replaces up to 100 GETs. A stale sweep, or a batch the list
// left out, keeps a claim on its own schedule.
package poll
