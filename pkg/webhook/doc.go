// Package webhook signs, verifies and delivers webhooks per Standard
// Webhooks (https://www.standardwebhooks.com), the scheme OpenAI uses too.
//
// A delivery is an HTTP POST of a JSON [Envelope]
// {"type","timestamp","data"} with three headers:
//
//	webhook-id:        stable per event (the same on every retry), e.g. its Nats-Msg-Id
//	webhook-timestamp: unix seconds of this attempt
//	webhook-signature: "v1,<base64 HMAC-SHA256(secret, id + "." + timestamp + "." + body)>"
//
// [Sign] makes the signature, [Verify] checks one (any of several
// space-separated signatures may match, compared in constant time, and the
// timestamp must be within a tolerance of now, 5 minutes by default, both
// directions). [ParseSecret] reads a secret given as "whsec_<base64>" or raw.
//
// [Sender.Send] makes exactly one signed delivery attempt and reports a
// non-2xx answer, a transport error or no answer within its timeout as a
// [*DeliveryError]. Retries, backoff and dead-lettering are deliberately NOT
// in this package: the caller drives them from a durable JetStream consumer
// (redelivery with backoff, then the dead-letter subject), so a delivery in
// progress survives a restart and one slow URL never blocks another. Send the
// same webhook-id on every attempt so receivers can deduplicate.
//
// The package uses only the standard library.
package webhook
