package fleettest

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs the tests, removes the binaries BuildBinary built, and
// fails the run if goroutines leaked (goleak.VerifyTestMain). Extra goleak
// options are appended; do not pass goleak.Cleanup, which this function uses.
//
// One upstream leak is ignored: nats.go v1.55.0's object store Put can
// leave resetPendingAcksOnReconnect blocked on a nil channel (about 1 in
// 2,000 puts; the goroutine reads a field that Put's cleanup has already
// cleared). It is a nats.go bug, not the fleet's.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	opts = append(opts, goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
	opts = append(opts, goleak.Cleanup(func(exitCode int) {
		CleanupBinaries()
		os.Exit(exitCode)
	}))
	goleak.VerifyTestMain(m, opts...)
}
