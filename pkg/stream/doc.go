// Package stream declares the JetStream streams and consumers of the fleet,
// creates or updates them idempotently at start-up, publishes JSON messages
// with a Nats-Msg-Id, dead-letters poison messages and runs bounded,
// gracefully stoppable consume loops.
//
// Every worker calls Ensure for the streams it touches, so starting the
// workers and then publishing to batch.requests works in any order.
package stream
