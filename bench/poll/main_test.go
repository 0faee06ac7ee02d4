// Package pollbench measures the pollers at fleet scale: it tracks up to
// 100,000 active vendor batches against the in-process emulator with real
// poller processes (cmd/poller), with the fleet's default (adaptive claims
// plus the List sweep), with adaptive claims alone and with the seed's
// fixed-interval baseline, and prints vendor calls per job (GETs and List
// pages), detection latency, poller memory per tracked job and polls per
// second per poller, plus a List sweep simulated at a real vendor's page
// latency over the same batches.
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./bench/poll/
//
// The defaults fit about fifteen minutes on two cores: 3,000 jobs to
// completion, then 100,000 jobs observed for 90s. POLLBENCH_* variables
// tune the workload:
//
//	POLLBENCH_JOBS        job counts, each optionally @observe ("3000,100000@90s")
//	POLLBENCH_STRATEGIES  "sweep,adaptive,fixed"
//	POLLBENCH_SWEEP       POLL_SWEEP_INTERVAL of the sweep strategy (1s)
//	POLLBENCH_POLLERS     poller processes (2); POLLBENCH_CONCURRENCY each (64)
//	POLLBENCH_INITIAL, POLLBENCH_MAX          poll intervals (2s, 60s)
//	POLLBENCH_VALIDATING, POLLBENCH_IN_PROGRESS, POLLBENCH_FINALIZING,
//	POLLBENCH_STAGGER     vendor timings (5s, 60s, 10s, 60s)
//	POLLBENCH_LIST_PAGE_LATENCY               assumed List page latency (200ms)
package pollbench

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
