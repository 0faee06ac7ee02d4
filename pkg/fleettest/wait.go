package fleettest

import (
	"testing"
	"time"
)

// ReadN receives exactly n values from ch within timeout and returns them in
// arrival order. It fails the test, saying how many arrived, if the timeout
// passes or ch is closed first.
func ReadN[T any](t testing.TB, ch <-chan T, n int, timeout time.Duration) []T {
	t.Helper()
	out := make([]T, 0, n)
	if n <= 0 {
		return out
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("ReadN: channel closed after %d of %d values", len(out), n)
			}
			out = append(out, v)
		case <-timer.C:
			t.Fatalf("ReadN: got %d of %d values within %s", len(out), n, timeout)
		}
	}
	return out
}

// WaitFor polls cond every 10ms until it returns true, and fails the test
// with msg if that has not happened within timeout. Use it only for
// conditions that have no event to await; prefer ReadN on a channel.
func WaitFor(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	if !poll(timeout, 10*time.Millisecond, cond) {
		t.Fatalf("WaitFor: not true within %s: %s", timeout, msg)
	}
}

// poll reports whether cond became true within timeout, checking every
// interval, first right away.
func poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		if cond() {
			return true
		}
		if !time.Now().Before(deadline) {
			return false
		}
		<-ticker.C
	}
}
