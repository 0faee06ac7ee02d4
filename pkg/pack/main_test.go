package pack_test

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
