// Package batchapi is the fleet's one boundary with the vendor: it wraps
// openai-go's Files and Batches services, converts the vendor's objects to
// the fleet's own small types and classifies every error once, so nothing
// above it reads HTTP status codes.
//
// openai-go's automatic retries are switched off (WithMaxRetries(0)): a
// silent second Batches.New after a lost response could create a second
// batch. The callers retry, after reconciling with FindByKey.
package batchapi
