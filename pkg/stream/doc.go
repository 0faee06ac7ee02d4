// Package stream declares the JetStream streams and consumers of the fleet,
// creates or updates them idempotently at start-up, publishes JSON messages
// with a Nats-Msg-Id, dead-letters poison messages and runs bounded,
// gracefully stoppable consume loops.
//
// Every worker calls Ensure for the streams it touches, so starting the
// workers and then publishing to batch.requests works in any order.
//
// Consume pulls only as many messages as it has free handlers (no message
// waits in a client buffer while its ack wait runs out), and when its
// consumer or stream is deleted (an operator's mistake, a restore from an
// old backup) it recreates them with ConsumeOptions.Recreate, or ends with
// ErrConsumerGone so the worker exits and its supervisor restarts it,
// rather than idling while it looks healthy.
package stream
