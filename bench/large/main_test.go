// Package largebench measures the worker fleet as separate processes
// (cmd/submitter, cmd/poller, cmd/notifier against cmd/openai-emulator,
// with an embedded NATS JetStream server and a child redis-server) and
// prints the figures; it asserts outcomes, never timings:
//
//   - BenchmarkLargeJob: one job of 50,000 chat requests (~100 MB input,
//     ~100 MB output) sent by reference through the batch_intake object
//     store: publish→batch.completed time beside the raw transfer of the
//     same files through openai-go (upload + download), and the peak RSS
//     (VmHWM) of every process;
//   - BenchmarkSmallJobs: 500 inline jobs of 10 requests through 2
//     submitters, 2 pollers and 1 notifier: jobs/s, publish→batch.completed
//     latency per job, and the notifier's completions per second.
//
// Run it with
//
//	go test -run '^$' -bench . -benchtime 1x -v ./bench/large/
//
// Each benchmark runs its scenario once, whatever b.N is: the figures are
// the custom metrics and the table it logs; ns/op is suppressed. The
// machine may be shared, so times vary from run to run. BENCH_* variables
// tune the workload:
//
//	BENCH_LARGE_REQUESTS      requests of the large job (50000)
//	BENCH_LARGE_LINE_BYTES    bytes per input line, padded in the message content (2000)
//	BENCH_REPLY_BYTES         EMULATOR_REPLY_BYTES of the large job (1250: ~2,000-byte output lines)
//	BENCH_SMALL_JOBS          jobs of BenchmarkSmallJobs (500)
//	BENCH_NOTIFY_CONCURRENCY  NOTIFY_CONCURRENCY of its notifier (the worker's default when unset)
package largebench

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
