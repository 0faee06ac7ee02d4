package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"go.opentelemetry.io/otel/attribute"

	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

var (
	// ErrNotAcquired means another owner holds the key. The error returned by
	// Acquire is a *HeldError carrying the holder's remaining lease.
	ErrNotAcquired = errors.New("lock: not acquired")
	// ErrLockLost means this owner no longer holds the key. The caller must
	// stop before any side effect the lock was guarding.
	ErrLockLost = errors.New("lock: lost")
)

// HeldError is returned by Acquire when another owner holds the key. It
// matches ErrNotAcquired with errors.Is.
type HeldError struct {
	// Key is the lock key, without the prefix.
	Key string
	// TTL is the holder's remaining lease, or -1 if the key has no expiry
	// (it was not set by this package).
	TTL time.Duration
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lock: %q held by another owner for %s", e.Key, e.TTL)
}

// Is reports whether target is ErrNotAcquired.
func (e *HeldError) Is(target error) bool { return target == ErrNotAcquired }

// Clock tells the time. Tests inject a fake one to move leases forward.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Defaults filled in by Options.WithDefaults.
const (
	DefaultPrefix      = "batchfleet:lock:"
	DefaultDriftFactor = 0.01
)

// driftFloor is added to every safety margin, as in Redlock.
const driftFloor = 2 * time.Millisecond

// Options configures a Locker.
type Options struct {
	// Prefix is prepended to every key. Defaults to "batchfleet:lock:".
	Prefix string
	// Clock reads the time for local lease deadlines. Defaults to the system
	// clock.
	Clock Clock
	// Logger receives KeepAlive's renew failures and lock losses. The zero
	// value logs nothing.
	Logger zerolog.Logger
	// DriftFactor sizes the safety margin by which the local deadline falls
	// short of the Redis lease: ttl*DriftFactor + 2ms. Defaults to 0.01.
	DriftFactor float64
}

// WithDefaults returns o with zero fields set to their defaults.
func (o Options) WithDefaults() Options {
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.DriftFactor <= 0 {
		o.DriftFactor = DefaultDriftFactor
	}
	return o
}

// Locker acquires locks in one Redis deployment. It is safe for concurrent
// use.
type Locker struct {
	rdb   redis.UniversalClient
	opts  Options
	clock Clock
	log   zerolog.Logger
}

// New returns a Locker on rdb. It panics if rdb is nil.
func New(rdb redis.UniversalClient, opts Options) *Locker {
	if rdb == nil {
		panic("lock.New: nil redis client")
	}
	opts = opts.WithDefaults()
	return &Locker{
		rdb:   rdb,
		opts:  opts,
		clock: opts.Clock,
		log:   opts.Logger.With().Str("component", "lock").Logger(),
	}
}

// Scripts compare the owner token before touching the key, so an owner whose
// lease ran out can never extend, inspect or delete its successor's lock.
var (
	// acquireScript returns {1, ttl} if it set the key, else {0, PTTL}.
	acquireScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(ARGV[2])}
end
return {0, redis.call('PTTL', KEYS[1])}`)
	// renewScript returns 1 if it extended the lease, 0 if the key is not ours.
	renewScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	// releaseScript returns 1 if it deleted the key, 0 if the key is not ours.
	releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
	// checkScript returns the remaining lease in ms, or -2 if the key is not
	// ours.
	checkScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -2`)
)

// Acquire takes the lock on key for ttl (at least 1ms) with SET NX PX and a
// random 128-bit owner token. If another owner holds key it returns a
// *HeldError, which matches ErrNotAcquired; other errors are Redis failures,
// after which the lock may or may not have been taken (it then expires after
// ttl on its own).
func (l *Locker) Acquire(ctx context.Context, key string, ttl time.Duration) (lk *Lock, err error) {
	ctx, end := telemetry.Start(ctx, "lock acquire", attribute.String("batchfleet.lock.key", key))
	defer func() {
		failed := err
		if errors.Is(err, ErrNotAcquired) {
			failed = nil // held by another owner: an answer, not a failure
		}
		end(failed)
	}()
	if key == "" {
		return nil, errors.New("acquire lock: empty key")
	}
	if ttl < time.Millisecond {
		return nil, fmt.Errorf("acquire lock %q: ttl %s is below 1ms", key, ttl)
	}
	token, err := newToken()
	if err != nil {
		return nil, fmt.Errorf("acquire lock %q: %w", key, err)
	}
	rkey := l.opts.Prefix + key
	sent := l.clock.Now()
	res, err := acquireScript.Run(ctx, l.rdb, []string{rkey}, token, ttl.Milliseconds()).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("acquire lock %q: %w", key, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("acquire lock %q: unexpected script reply %v", key, res)
	}
	if res[0] != 1 {
		held := time.Duration(res[1]) * time.Millisecond
		if res[1] < 0 {
			held = -1 // no expiry; -2 (gone) cannot happen inside the script
		}
		return nil, &HeldError{Key: key, TTL: held}
	}
	lk = &Lock{
		locker: l,
		key:    key,
		rkey:   rkey,
		token:  token,
		ttl:    ttl,
		margin: time.Duration(float64(ttl)*l.opts.DriftFactor) + driftFloor,
		lost:   make(chan struct{}),
	}
	lk.deadline = lk.leaseEnd(sent, ttl)
	return lk, nil
}

func newToken() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random token: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Lock is one held lease. Its methods are safe for concurrent use.
type Lock struct {
	locker *Locker
	key    string // as given to Acquire
	rkey   string // with the prefix
	token  string
	ttl    time.Duration
	margin time.Duration // local deadline falls this much short of the lease

	lost chan struct{} // closed once lostErr is set

	mu         sync.Mutex
	deadline   time.Time // local lease deadline
	lostErr    error     // why the lock was lost, or nil
	released   bool      // Release was called: no more renewals
	releaseErr error     // Release's conclusive result, once releaseOK
	releaseOK  bool      // Release reached Redis and got an answer
	kaCancel   context.CancelFunc
	kaDone     chan struct{} // closed when the KeepAlive goroutine returns
}

// Key returns the lock key as given to Acquire, without the prefix.
func (lk *Lock) Key() string { return lk.key }

// TTL returns the lease length each Renew sets.
func (lk *Lock) TTL() time.Duration { return lk.ttl }

// leaseEnd is the local deadline for a lease of d granted to a request sent
// at sent: measured from sending, because Redis may have set it any time
// after that, and short of d by the drift margin.
func (lk *Lock) leaseEnd(sent time.Time, d time.Duration) time.Time {
	return sent.Add(d - lk.margin)
}

// Deadline returns the local lease deadline: the last successful Acquire or
// Renew (measured from when its request was sent) plus the ttl, minus a
// safety margin for clock drift. A side effect should finish before it:
// context.WithDeadline(ctx, lk.Deadline()).
func (lk *Lock) Deadline() time.Time {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.deadline
}

// Valid reports, without a network call, whether the lock is still held as
// far as this process knows: not lost, not released, and the local lease
// deadline not yet passed. A successful Renew can make it true again after
// the deadline passed. Valid is a cheap guard; Check asks Redis.
func (lk *Lock) Valid() bool {
	now := lk.locker.clock.Now()
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.lostErr == nil && !lk.released && now.Before(lk.deadline)
}

// Lost is closed once the lock is known to be lost: a Renew, Check or
// Release found another token or no key, or KeepAlive's renewals failed past
// the lease. It is not closed by Release, so waiters should also watch their
// own context.
func (lk *Lock) Lost() <-chan struct{} { return lk.lost }

// Err returns why the lock was lost (matching ErrLockLost), or nil.
func (lk *Lock) Err() error {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	return lk.lostErr
}

// markLost records err as the reason for the loss and closes Lost, once.
func (lk *Lock) markLost(err error) {
	lk.mu.Lock()
	first := lk.lostErr == nil
	if first {
		lk.lostErr = err
		close(lk.lost)
	}
	lk.mu.Unlock()
	if first {
		lk.locker.log.Warn().Str("lock_key", lk.key).Err(err).Msg("lock lost")
	}
}

// unusable returns an ErrLockLost error for op if the lock is already lost
// or released, else nil.
func (lk *Lock) unusable(op string) error {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	switch {
	case lk.lostErr != nil:
		return fmt.Errorf("%s lock %q: %w", op, lk.key, lk.lostErr)
	case lk.released:
		return fmt.Errorf("%s lock %q: released: %w", op, lk.key, ErrLockLost)
	}
	return nil
}

// Renew extends the lease to a full ttl from now, if the key still holds this
// owner's token. ErrLockLost means another owner took over or the key is gone
// (and Lost closes): the caller must stop before creating a batch. Other
// errors are Redis failures: the lease runs on until Deadline, so retry.
func (lk *Lock) Renew(ctx context.Context) error {
	if err := lk.unusable("renew"); err != nil {
		return err
	}
	sent := lk.locker.clock.Now()
	n, err := renewScript.Run(ctx, lk.locker.rdb, []string{lk.rkey}, lk.token, lk.ttl.Milliseconds()).Int64()
	if err != nil {
		return fmt.Errorf("renew lock %q: %w", lk.key, err)
	}
	if n != 1 {
		err := fmt.Errorf("renew lock %q: %w", lk.key, ErrLockLost)
		lk.markLost(err)
		return err
	}
	lk.mu.Lock()
	if end := lk.leaseEnd(sent, lk.ttl); end.After(lk.deadline) {
		lk.deadline = end
	}
	lk.mu.Unlock()
	return nil
}

// Check asks Redis whether the key still holds this owner's token and returns
// the remaining lease (PTTL). Call it right before a side effect, and finish
// the side effect well within the returned time minus clock drift; ErrLockLost
// means stop. Check also shortens Deadline if Redis reports less time left.
func (lk *Lock) Check(ctx context.Context) (time.Duration, error) {
	if err := lk.unusable("check"); err != nil {
		return 0, err
	}
	sent := lk.locker.clock.Now()
	ms, err := checkScript.Run(ctx, lk.locker.rdb, []string{lk.rkey}, lk.token).Int64()
	if err != nil {
		return 0, fmt.Errorf("check lock %q: %w", lk.key, err)
	}
	if ms == -2 {
		err := fmt.Errorf("check lock %q: %w", lk.key, ErrLockLost)
		lk.markLost(err)
		return 0, err
	}
	left := time.Duration(ms) * time.Millisecond
	if ms < 0 { // no expiry: someone PERSISTed our key; report a full lease
		left = lk.ttl
	}
	lk.mu.Lock()
	if end := lk.leaseEnd(sent, left); end.Before(lk.deadline) {
		lk.deadline = end
	}
	lk.mu.Unlock()
	return left, nil
}

// Release stops KeepAlive (waiting for its goroutine) and deletes the key if
// it still holds this owner's token. It returns ErrLockLost if the lock was
// lost at any point, in which case it deleted nothing of a new owner's. A
// Redis failure is returned wrapped and a later Release retries the delete
// (the key expires after its ttl anyway). Once Release has an answer from
// Redis, further calls return the same result.
func (lk *Lock) Release(ctx context.Context) error {
	lk.mu.Lock()
	if lk.releaseOK {
		err := lk.releaseErr
		lk.mu.Unlock()
		return err
	}
	lk.released = true
	cancel, done := lk.kaCancel, lk.kaDone
	lk.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}

	n, err := releaseScript.Run(ctx, lk.locker.rdb, []string{lk.rkey}, lk.token).Int64()
	if err != nil {
		return fmt.Errorf("release lock %q: %w", lk.key, err)
	}
	if n != 1 {
		lk.markLost(fmt.Errorf("release lock %q: %w", lk.key, ErrLockLost))
	}
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.lostErr != nil {
		lk.releaseErr = fmt.Errorf("release lock %q: %w", lk.key, lk.lostErr)
		if n != 1 {
			lk.releaseErr = lk.lostErr
		}
	}
	lk.releaseOK = true
	return lk.releaseErr
}

// KeepAlive starts a goroutine that renews the lease every ttl/3 until
// Release or until ctx is done. A renewal that fails with a Redis error is
// retried sooner; if the lock is lost (ErrLockLost) or renewals keep failing
// until the local deadline passes, the goroutine closes Lost and stops.
// Release waits for the goroutine. When ctx ends first the goroutine stops
// renewing, and the lease simply runs out unless the caller releases it.
// Calling KeepAlive again, or on a lost or released lock, does nothing.
func (lk *Lock) KeepAlive(ctx context.Context) {
	lk.mu.Lock()
	defer lk.mu.Unlock()
	if lk.released || lk.lostErr != nil || lk.kaDone != nil {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	lk.kaCancel, lk.kaDone = cancel, make(chan struct{})
	go lk.keepAlive(ctx, lk.kaDone)
}

const (
	// minRenewTimeout bounds each renew call from below, so a late renewal
	// still has a chance.
	minRenewTimeout = 50 * time.Millisecond
	// minRetryWait bounds the wait between failed renewals from below.
	minRetryWait = 10 * time.Millisecond
)

func (lk *Lock) keepAlive(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	log := lk.locker.log.With().Str("lock_key", lk.key).Logger()
	interval := max(lk.ttl/3, time.Millisecond)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}

		left := lk.Deadline().Sub(lk.locker.clock.Now())
		callCtx, cancel := context.WithTimeout(ctx, min(interval, max(left, minRenewTimeout)))
		err := lk.Renew(callCtx)
		cancel()

		wait := interval
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrLockLost):
			return // Renew closed Lost
		default:
			left = lk.Deadline().Sub(lk.locker.clock.Now())
			if left <= 0 {
				lk.markLost(fmt.Errorf("keep lock %q alive: lease ran out while renewing failed: %w", lk.key, errors.Join(ErrLockLost, err)))
				return
			}
			log.Warn().Err(err).Dur("lease_left", left).Msg("renew lock failed, retrying")
			wait = min(interval, max(left/2, minRetryWait))
		}
		timer.Reset(wait)
	}
}

// Acquirer takes a lock on a key.
type Acquirer interface {
	Acquire(ctx context.Context, key string, ttl time.Duration) (*Lock, error)
}

// Lead elects one leader among processes: it tries to take key every
// retry and, while it holds it, runs lead, which must return once the
// lock is lost (Lost) or ctx ends. It returns when ctx ends. The lock's
// TTL bounds how long a dead leader keeps the others waiting.
func Lead(ctx context.Context, l Acquirer, key string, ttl, retry time.Duration, log zerolog.Logger, lead func(context.Context, *Lock)) {
	for {
		lk, err := l.Acquire(ctx, key, ttl)
		switch {
		case err == nil:
			lead(ctx, lk)
		case errors.Is(err, ErrNotAcquired) || ctx.Err() != nil:
		default:
			log.Warn().Err(err).Str("lock_key", key).Msg("leadership: lock")
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
	}
}
