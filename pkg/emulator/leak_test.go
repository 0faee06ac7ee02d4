package emulator_test

import (
	"testing"

	"go.uber.org/goleak"
)

// verifyNoLeaks fails the package if a test leaves a goroutine behind (the
// scheduler, a webhook worker, a served request).
func verifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m)
}
