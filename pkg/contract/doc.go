// Package contract holds batchfleet's public wire contract: the subjects, the
// JSON messages producers and consumers exchange with the fleet, the
// validation rules for batch requests and the error codes of invalid ones.
//
// It imports nothing of the project's and only the standard library, so
// producers and consumers written in Go can depend on it alone.
//
// The contract is versioned as v1 and only ever extended compatibly: new
// optional fields, new subjects. See the README's "Wire contract" section.
package contract
