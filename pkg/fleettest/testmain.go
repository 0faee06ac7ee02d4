package fleettest

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// VerifyTestMain runs the tests, removes the binaries BuildBinary built, and
// fails the run if goroutines leaked (goleak.VerifyTestMain). Extra goleak
// options are appended; do not pass goleak.Cleanup, which this function uses.
func VerifyTestMain(m *testing.M, opts ...goleak.Option) {
	opts = append(opts, goleak.Cleanup(func(exitCode int) {
		CleanupBinaries()
		os.Exit(exitCode)
	}))
	goleak.VerifyTestMain(m, opts...)
}
