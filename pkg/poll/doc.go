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
package poll
