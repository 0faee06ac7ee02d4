// Package e2e holds the end-to-end tests: the three worker binaries and the
// vendor emulator run as separate processes against a real JetStream server
// and a real redis-server, configured only through the contract's
// environment variables, exactly as in production.
package e2e
