// Package pollbench measures the pollers at fleet scale: it tracks up to
// 100,000 active vendor batches against the in-process emulator with real
// poller processes (cmd/poller), once with the adaptive strategy and once
// with the fixed-interval baseline, and prints vendor GETs per job, detection
// latency, poller memory per tracked job and polls per second per poller.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./bench/poll/
//
// The workload is tuned by POLLBENCH_* variables (see scenarios in
// bench_test.go); the defaults fit about ten minutes on two cores.
package pollbench

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
