// Package lock guards idempotency keys so one key never becomes two vendor
// batches: a Redis lease lock with a random owner token, renewed and released
// by compare-and-set Lua scripts.
//
// # Use
//
//	lk, err := locker.Acquire(ctx, key, 30*time.Second)
//	if errors.Is(err, lock.ErrNotAcquired) {
//		// someone else is working on key; HeldError says for how long
//	}
//	lk.KeepAlive(ctx)
//	defer lk.Release(context.WithoutCancel(ctx))
//	...
//	if _, err := lk.Check(ctx); err != nil { // right before the side effect
//		return err // ErrLockLost: stop, another owner may be acting
//	}
//
// # What this lock does not guarantee
//
// A Redis lock is a lease, and a lease can end without its holder knowing:
//
//   - Expiry while a slow call is in flight: Check said 2s were left, the
//     vendor call took 5s, and another worker acquired the key meanwhile.
//   - Process pauses: a GC pause, a stopped container or a swapped-out page
//     can outlast the lease between Check and the side effect; KeepAlive
//     cannot renew while the process is not running.
//   - Redis losing the key: a restart without persistence, FLUSHALL, eviction
//     under memory pressure, or a failover to a replica that had not received
//     the SET (replication is asynchronous). The old holder keeps working
//     while a new one acquires the "free" key.
//   - Clock drift: Redis expires keys by its own clock, Valid reads ours. The
//     local deadline is kept short of the lease by a margin (DriftFactor), which
//     covers ordinary drift, not clock jumps.
//   - Network partition: the holder cannot renew, the key expires, and the
//     holder only learns it when renewing fails past the lease (Lost closes).
//
// So this lock is an efficiency and mutual-exclusion layer: it keeps workers
// from duplicating work almost always, and makes the rare race cheap to
// detect. It is not a correctness guarantee. Correctness must come from a
// durable record updated with compare-and-set (the job store): the worker
// records its intent before the side effect and only the state transition
// that wins the compare-and-set may act on the result. The random owner token
// is not a fencing token: it is not monotonic and the vendor never sees it.
//
// # Errors
//
// ErrNotAcquired (as *HeldError) means another owner holds the key.
// ErrLockLost means this owner no longer holds it: the token in Redis differs,
// the key is gone, or the lease ran out while renewing failed. Other errors
// are Redis or network failures, wrapped: the lock may or may not still be
// held, and Valid and Check tell.
package lock
