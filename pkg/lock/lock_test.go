package lock_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/lock"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// awaitClosed fails the test unless ch closes within timeout.
func awaitClosed(t *testing.T, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("%s: not closed within %s", what, timeout)
	}
}

func setup(t *testing.T) (*fleettest.Redis, *redis.Client, *lock.Locker) {
	t.Helper()
	r := fleettest.StartRedis(t)
	rdb := r.Client(t)
	return r, rdb, lock.New(rdb, lock.Options{})
}

func TestAcquireIsExclusive(t *testing.T) {
	t.Parallel()
	_, rdb, _ := setup(t)
	ctx := context.Background()

	// Many lockers (as many processes would be) race for one key.
	errs := make(chan error, 20)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			_, err := lock.New(rdb, lock.Options{}).Acquire(ctx, "job-1", 10*time.Second)
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	winners := 0
	for err := range errs {
		if err == nil {
			winners++
			continue
		}
		require.ErrorIs(t, err, lock.ErrNotAcquired)
	}
	require.Equal(t, 1, winners)

	// Another key is independent.
	lk, err := lock.New(rdb, lock.Options{}).Acquire(ctx, "job-2", time.Second)
	require.NoError(t, err)
	require.Equal(t, "job-2", lk.Key())
	require.Equal(t, time.Second, lk.TTL())
	require.NoError(t, lk.Release(ctx))
}

func TestHeldErrorCarriesTTL(t *testing.T) {
	t.Parallel()
	_, rdb, l := setup(t)
	ctx := context.Background()

	_, err := l.Acquire(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	_, err = l.Acquire(ctx, "k", time.Second)
	require.ErrorIs(t, err, lock.ErrNotAcquired)
	var held *lock.HeldError
	require.ErrorAs(t, err, &held)
	require.Equal(t, "k", held.Key)
	require.Greater(t, held.TTL, 9*time.Second)
	require.LessOrEqual(t, held.TTL, 10*time.Second)
	require.Contains(t, err.Error(), `lock: "k" held by another owner for`)

	// A key set without expiry by someone else reports TTL -1.
	require.NoError(t, rdb.Set(ctx, lock.DefaultPrefix+"foreign", "x", 0).Err())
	_, err = l.Acquire(ctx, "foreign", time.Second)
	require.ErrorAs(t, err, &held)
	require.Equal(t, time.Duration(-1), held.TTL)
}

func TestAcquireRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, _, l := setup(t)
	ctx := context.Background()
	_, err := l.Acquire(ctx, "", time.Second)
	require.ErrorContains(t, err, "empty key")
	_, err = l.Acquire(ctx, "k", 500*time.Microsecond)
	require.ErrorContains(t, err, "below 1ms")

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, err = l.Acquire(canceled, "k", time.Second)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, lock.ErrNotAcquired)
}

func TestPrefix(t *testing.T) {
	t.Parallel()
	_, rdb, _ := setup(t)
	ctx := context.Background()
	l := lock.New(rdb, lock.Options{Prefix: "test:prefix:"})
	lk, err := l.Acquire(ctx, "k", time.Second)
	require.NoError(t, err)
	require.Equal(t, int64(1), rdb.Exists(ctx, "test:prefix:k").Val())
	require.NoError(t, lk.Release(ctx))
	require.Equal(t, int64(0), rdb.Exists(ctx, "test:prefix:k").Val())
}

func TestKeepAliveHoldsPastTTL(t *testing.T) {
	t.Parallel()
	_, rdb, l := setup(t)
	ctx := context.Background()
	const ttl = 300 * time.Millisecond

	// Control: without KeepAlive the lease runs out.
	short, err := l.Acquire(ctx, "control", ttl)
	require.NoError(t, err)

	lk, err := l.Acquire(ctx, "k", ttl)
	require.NoError(t, err)
	lk.KeepAlive(ctx)
	lk.KeepAlive(ctx) // second call is a no-op

	<-time.After(3 * ttl) // the point of the test is that time passes

	require.False(t, short.Valid())
	require.Equal(t, int64(0), rdb.Exists(ctx, lock.DefaultPrefix+"control").Val())

	require.True(t, lk.Valid())
	left, err := lk.Check(ctx)
	require.NoError(t, err)
	require.Greater(t, left, time.Duration(0))
	_, err = l.Acquire(ctx, "k", ttl)
	require.ErrorIs(t, err, lock.ErrNotAcquired)

	require.NoError(t, lk.Release(ctx))
	require.NoError(t, lk.Release(ctx), "Release is idempotent")
	require.False(t, lk.Valid())
	require.ErrorIs(t, lk.Renew(ctx), lock.ErrLockLost, "renew after release")
	select {
	case <-lk.Lost():
		t.Fatal("Release must not close Lost")
	default:
	}

	again, err := l.Acquire(ctx, "k", ttl)
	require.NoError(t, err)
	require.NoError(t, again.Release(ctx))
}

func TestRenewExtendsLease(t *testing.T) {
	t.Parallel()
	_, rdb, l := setup(t)
	ctx := context.Background()
	lk, err := l.Acquire(ctx, "k", 2*time.Second)
	require.NoError(t, err)
	require.NoError(t, rdb.PExpire(ctx, lock.DefaultPrefix+"k", 100*time.Millisecond).Err())
	require.NoError(t, lk.Renew(ctx))
	require.Greater(t, rdb.PTTL(ctx, lock.DefaultPrefix+"k").Val(), time.Second)
}

func TestReleaseByStaleOwnerDeletesNothing(t *testing.T) {
	t.Parallel()
	_, rdb, l := setup(t)
	ctx := context.Background()

	stale, err := l.Acquire(ctx, "k", 100*time.Millisecond)
	require.NoError(t, err)
	fleettest.WaitFor(t, 5*time.Second, func() bool {
		return rdb.Exists(ctx, lock.DefaultPrefix+"k").Val() == 0
	}, "lease of the first owner expires")

	owner, err := l.Acquire(ctx, "k", 10*time.Second)
	require.NoError(t, err)

	err = stale.Release(ctx)
	require.ErrorIs(t, err, lock.ErrLockLost)
	require.ErrorIs(t, stale.Release(ctx), lock.ErrLockLost, "same answer again")
	awaitClosed(t, stale.Lost(), time.Second, "stale Lost")
	require.ErrorIs(t, stale.Renew(ctx), lock.ErrLockLost)
	_, err = stale.Check(ctx)
	require.ErrorIs(t, err, lock.ErrLockLost)

	left, err := owner.Check(ctx)
	require.NoError(t, err, "the new owner's key survives")
	require.Greater(t, left, 9*time.Second)
	require.NoError(t, owner.Release(ctx))
}

func TestFlushAllLosesLock(t *testing.T) {
	t.Parallel()
	r, rdb, _ := setup(t)
	ctx := context.Background()
	var logs bytes.Buffer
	l := lock.New(rdb, lock.Options{Logger: zerolog.New(&syncWriter{w: &logs})})

	manual, err := l.Acquire(ctx, "manual", 10*time.Second)
	require.NoError(t, err)
	kept, err := l.Acquire(ctx, "kept", 300*time.Millisecond)
	require.NoError(t, err)
	kept.KeepAlive(ctx)

	r.FlushAll(t)

	_, err = manual.Check(ctx)
	require.ErrorIs(t, err, lock.ErrLockLost)
	awaitClosed(t, manual.Lost(), time.Second, "manual Lost")
	require.False(t, manual.Valid())
	require.ErrorIs(t, manual.Renew(ctx), lock.ErrLockLost)
	require.ErrorIs(t, manual.Err(), lock.ErrLockLost)

	awaitClosed(t, kept.Lost(), 5*time.Second, "KeepAlive Lost")
	require.ErrorIs(t, kept.Err(), lock.ErrLockLost)
	require.False(t, kept.Valid())
	require.ErrorIs(t, kept.Release(ctx), lock.ErrLockLost) // also awaits the goroutine

	// A new owner can take both keys.
	for _, k := range []string{"manual", "kept"} {
		lk, err := l.Acquire(ctx, k, time.Second)
		require.NoError(t, err)
		require.NoError(t, lk.Release(ctx))
	}
	require.Contains(t, logs.String(), `"component":"lock"`)
	require.Contains(t, logs.String(), `"lock_key":"kept"`)
	require.Contains(t, logs.String(), `"message":"lock lost"`)
}

func TestRedisRestartLosesLock(t *testing.T) {
	t.Parallel()
	r, _, l := setup(t)
	ctx := context.Background()
	lk, err := l.Acquire(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	r.Restart(t)
	require.ErrorIs(t, lk.Renew(ctx), lock.ErrLockLost)
	awaitClosed(t, lk.Lost(), time.Second, "Lost")
}

func TestKeepAliveLeaseRunsOutWhileRedisDown(t *testing.T) {
	t.Parallel()
	r, _, l := setup(t)
	ctx := context.Background()
	lk, err := l.Acquire(ctx, "k", 400*time.Millisecond)
	require.NoError(t, err)
	lk.KeepAlive(ctx)

	r.Kill()
	awaitClosed(t, lk.Lost(), 5*time.Second, "Lost while Redis is down")
	require.ErrorIs(t, lk.Err(), lock.ErrLockLost)
	require.ErrorContains(t, lk.Err(), "lease ran out while renewing failed")
	require.False(t, lk.Valid())

	down, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	require.Error(t, lk.Release(down), "Redis is still down")

	r.Restart(t)
	require.ErrorIs(t, lk.Release(ctx), lock.ErrLockLost, "retried release reports the loss")
}

func TestKeepAliveStopsWithContext(t *testing.T) {
	t.Parallel()
	_, rdb, l := setup(t)
	ctx, cancel := context.WithCancel(context.Background())
	lk, err := l.Acquire(ctx, "k", 150*time.Millisecond)
	require.NoError(t, err)
	lk.KeepAlive(ctx)
	cancel()
	// Without renewals the lease runs out; Valid turns false with no network call.
	fleettest.WaitFor(t, 5*time.Second, func() bool { return !lk.Valid() }, "lease runs out after ctx ends")
	// Local validity ends a safety margin before Redis expires the key; once
	// Redis has expired it too, there is nothing left to release.
	fleettest.WaitFor(t, 5*time.Second, func() bool {
		n, err := rdb.Exists(context.Background(), lock.DefaultPrefix+"k").Result()
		return err == nil && n == 0
	}, "key expired in Redis")
	err = lk.Release(context.Background())
	require.ErrorIs(t, err, lock.ErrLockLost)
}

func TestValidFollowsInjectedClock(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	clock := &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	start := clock.Now()
	l := lock.New(r.Client(t), lock.Options{Clock: clock})
	ctx := context.Background()

	lk, err := l.Acquire(ctx, "k", 10*time.Second)
	require.NoError(t, err)
	margin := 100*time.Millisecond + 2*time.Millisecond // 1% drift + 2ms
	require.Equal(t, start.Add(10*time.Second-margin), lk.Deadline())
	require.True(t, lk.Valid())

	clock.Advance(10*time.Second - margin - time.Nanosecond)
	require.True(t, lk.Valid())
	clock.Advance(time.Nanosecond)
	require.False(t, lk.Valid(), "deadline reached, no network call needed")

	require.NoError(t, lk.Renew(ctx), "the key itself is still there")
	require.True(t, lk.Valid())
	require.Equal(t, clock.Now().Add(10*time.Second-margin), lk.Deadline())

	require.NoError(t, lk.Release(ctx))
	require.False(t, lk.Valid())
}

func TestErrorsAreDistinct(t *testing.T) {
	t.Parallel()
	held := &lock.HeldError{Key: "k", TTL: time.Second}
	require.ErrorIs(t, held, lock.ErrNotAcquired)
	require.False(t, errors.Is(held, lock.ErrLockLost))
	require.False(t, errors.Is(lock.ErrLockLost, lock.ErrNotAcquired))
}

// syncWriter serialises writes from the KeepAlive goroutine and the test.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
