// Package bench measures the submitters on this machine and prints the
// figures:
//
//   - fleet submissions/s with 1 and 4 in-process submitters (real NATS
//     JetStream, redis-server, job store and locks, openai-go against the
//     emulator with no latency), next to the ceiling of the bare pipeline
//     (pull consumer + Redis lock/unlock + publish + ack, no vendor, no job
//     store) at the same concurrency, and their ratio; beside them the two
//     vendor calls of a submission alone (upload + create through openai-go
//     to the in-process emulator), which bound what the ratio can reach;
//   - submissions/s against a vendor answering every call in 200ms, with
//     1, 4 and 16 submissions in flight;
//   - a fleet-wide create rate limit shared by two submitters, checked
//     against the emulator's batch creation times.
//
// Run it with
//
//	go test -run '^$' -bench . -benchtime 1x ./bench/
//
// Each sub-benchmark runs its scenario once, whatever b.N is: the figures
// are the custom metrics (submissions/s, msgs/s, ...) and the summary table
// each top-level benchmark logs; ns/op is suppressed. cpu/msg is this
// process's CPU per message (embedded NATS server, emulator and clients;
// not redis-server): the machine may be shared, so rates vary from run to
// run while the CPU per message hardly does.
package bench

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// TestMain fails the run on leaked goroutines, but one: nats.go v1.55.0
// leaks a goroutine in some ObjectStore.Put calls (jobstore.PutInput, once
// per submission). Put makes a private JetStream context for its async
// chunk publishes; its first PublishAsync starts resetPendingAcksOnReconnect,
// which reads js.publisher.connStatusCh only once it runs, and Put's
// deferred cleanupReplySub may set that field to nil first: the goroutine
// then blocks forever receiving from a nil channel. A library race, not
// this package's: a few Puts in ten thousand on two cores.
func TestMain(m *testing.M) {
	fleettest.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}
