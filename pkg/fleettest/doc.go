// Package fleettest starts the real servers and processes that batchfleet's
// tests run against: an embedded NATS JetStream server, a child redis-server,
// and the fleet's own binaries. It also has the awaiting helpers (ReadN,
// WaitFor) that replace sleeps in tests.
//
// Only _test.go files and test binaries import this package. Every helper
// takes a testing.TB, fails the test on error (never skips: a missing
// redis-server is a broken machine, not an optional feature) and registers its
// own cleanup, so servers and processes never outlive the test that started
// them. Helpers that fail the test must be called from the test's goroutine.
//
// A package using BuildBinary or StartProcess should wire VerifyTestMain:
//
//	func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
package fleettest
