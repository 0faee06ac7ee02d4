// Package packbench measures single requests (issue #14) on this machine
// with in-process packers and fan-outs against a real JetStream server
// (embedded nats-server) and a child redis-server, each step on fresh
// servers, and prints one markdown table of the figures beside the bare
// JetStream rates in the same direction:
//
//  1. bare consume+ack: N items on a work-queue stream (BATCH_ITEMS),
//     taken by 2 clients of one durable pull consumer (fetches of 256,
//     one ack each), as 2 packers share theirs: msgs/s;
//  2. packers: the same N items (two models, alternating) on batch.items,
//     2 pack.Packers (one NATS connection and Redis client each, as 2
//     processes) until every item is in a closed pack (PACK_MAX_REQUESTS
//     10,000: 10 packs): items/s, and the ratio to 1;
//  3. bare publish: N batch.item.completed-sized events (~400 bytes, with
//     Nats-Msg-Id) async-published to BATCH_EVENTS by 2 publishers (one
//     connection each) with up to 1,000 acks pending each: msgs/s;
//  4. fan-out: 2 packs of N/2 items (merged results and sidecar in the
//     object stores) fanned out by 2 pack.Fanouts in parallel (one
//     connection each, as 2 notifiers): events/s, and the ratio to 3;
//  5. packer memory: step 2 again with PACK_MAX_REQUESTS 2,500, 10,000 and
//     50,000: the peak Go heap (HeapInuse, sampled every 5ms) above its
//     value before the packers start. The embedded NATS server shares the
//     process, so that figure includes the server's caches; beside it, the
//     peak live heap of the allocations outside nats-server code (the
//     packers and the clients, read from the heap profile every 100ms).
//     What matters is that the packers' memory does not grow with the
//     pack: they write pack lines to temporary files.
//
// Run it with
//
//	go test -run '^$' -bench . -benchtime 1x -v ./bench/pack/
//
// Each sub-benchmark runs its step once, whatever b.N is; the top-level
// benchmark logs the table. cpu/item is this process's CPU time (user +
// system: server, packers and clients, not redis-server) per item: the
// machine may be shared, so rates vary from run to run while the CPU per
// item hardly does. BENCH_PACK_ITEMS sets N (100000); below 100,000 the
// 50,000-item packs of step 5 close only at PACK_MAX_AGE (1m).
package packbench

import (
	"testing"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }
