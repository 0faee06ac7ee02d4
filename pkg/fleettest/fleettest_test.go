package fleettest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

const fixturePkg = "pkg/fleettest/testdata/procfixture"

// fakeTB records failures instead of failing the real test. Fatalf ends the
// calling goroutine like testing.T does, so run the code under test with run.
type fakeTB struct {
	testing.TB
	mu       sync.Mutex
	fatal    string
	logs     []string
	failed   bool
	cleanups []func()
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.mu.Lock()
	f.fatal, f.failed = fmt.Sprintf(format, args...), true
	f.mu.Unlock()
	runtime.Goexit()
}
func (f *fakeTB) Logf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}
func (f *fakeTB) Failed() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.failed }
func (f *fakeTB) Cleanup(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cleanups = append(f.cleanups, fn)
}
func (f *fakeTB) runCleanups() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// run calls fn with f on a goroutine of its own and returns f.fatal ("" if
// fn returned normally).
func (f *fakeTB) run(fn func(testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fatal
}

func TestRedisRestartLosesData(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	require.Equal(t, "redis://"+r.Addr()+"/0", r.URL())
	opts, err := redis.ParseURL(r.URL())
	require.NoError(t, err)
	require.Equal(t, r.Addr(), opts.Addr)

	ctx := context.Background()
	c := r.Client(t)
	require.NoError(t, c.Set(ctx, "k", "v", 0).Err())

	r.Restart(t)
	_, err = c.Get(ctx, "k").Result()
	require.ErrorIs(t, err, redis.Nil, "restart must lose data; the old client reconnects")
	require.NoError(t, c.Set(ctx, "k", "v2", 0).Err())
}

func TestRedisKillAndFlushAll(t *testing.T) {
	t.Parallel()
	r := fleettest.StartRedis(t)
	ctx := context.Background()
	c := r.Client(t)
	require.NoError(t, c.Set(ctx, "a", "1", 0).Err())
	r.FlushAll(t)
	require.ErrorIs(t, c.Get(ctx, "a").Err(), redis.Nil)

	r.Kill()
	r.Kill() // idempotent
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	require.Error(t, c.Ping(short).Err())

	r.Restart(t)
	require.NoError(t, c.Ping(ctx).Err())
}

func TestTwoRedisServersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := fleettest.StartRedis(t), fleettest.StartRedis(t)
	require.NotEqual(t, a.Addr(), b.Addr())
	ctx := context.Background()
	require.NoError(t, a.Client(t).Set(ctx, "x", "1", 0).Err())
	require.ErrorIs(t, b.Client(t).Get(ctx, "x").Err(), redis.Nil)
}

func TestNATSRestartKeepsStream(t *testing.T) {
	t.Parallel()
	n := fleettest.StartNATS(t)
	url := n.URL()
	require.True(t, strings.HasPrefix(url, "nats://127.0.0.1:"), url)
	nc, js := fleettest.Connect(t, url)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage})
	require.NoError(t, err)
	for i := range 3 {
		_, err := js.Publish(ctx, "keep.x", []byte{byte(i)})
		require.NoError(t, err)
	}

	n.Restart(t)
	require.Equal(t, url, n.URL(), "same port after restart")
	fleettest.WaitFor(t, 10*time.Second, nc.IsConnected, "client reconnects after restart")

	var info *jetstream.StreamInfo
	fleettest.WaitFor(t, 10*time.Second, func() bool {
		callCtx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		s, err := js.Stream(callCtx, "KEEP")
		if err != nil {
			return false
		}
		info, err = s.Info(callCtx)
		return err == nil
	}, "stream KEEP readable after restart")
	require.Equal(t, uint64(3), info.State.Msgs)
}

func TestNATSOptionApplied(t *testing.T) {
	t.Parallel()
	n := fleettest.StartNATS(t, func(o *server.Options) { o.MaxPayload = 1024 })
	nc, _ := fleettest.Connect(t, n.URL())
	require.Equal(t, int64(1024), nc.MaxPayload())
	n.Shutdown()
	n.Shutdown() // idempotent; t.Cleanup calls it again
}

func TestReadN(t *testing.T) {
	t.Parallel()
	ch := make(chan int, 3)
	ch <- 1
	ch <- 2
	ch <- 3
	require.Equal(t, []int{1, 2}, fleettest.ReadN(t, ch, 2, time.Second))
	require.Empty(t, fleettest.ReadN(t, ch, 0, time.Second))

	f := &fakeTB{}
	msg := f.run(func(tb testing.TB) { fleettest.ReadN(tb, ch, 2, 50*time.Millisecond) })
	require.Equal(t, "ReadN: got 1 of 2 values within 50ms", msg)

	closed := make(chan string)
	close(closed)
	f = &fakeTB{}
	msg = f.run(func(tb testing.TB) { fleettest.ReadN(tb, closed, 1, time.Second) })
	require.Equal(t, "ReadN: channel closed after 0 of 1 values", msg)
}

func TestWaitFor(t *testing.T) {
	t.Parallel()
	start := time.Now()
	calls := 0
	fleettest.WaitFor(t, 5*time.Second, func() bool { calls++; return time.Since(start) > 30*time.Millisecond }, "30ms pass")
	require.Greater(t, calls, 1)

	f := &fakeTB{}
	msg := f.run(func(tb testing.TB) {
		fleettest.WaitFor(tb, 30*time.Millisecond, func() bool { return false }, "job j1 done")
	})
	require.Equal(t, "WaitFor: not true within 30ms: job j1 done", msg)
}

func TestBuildBinaryCachesAndRuns(t *testing.T) {
	t.Setenv("FLEETTEST_EXTRA", "must not leak into the child")
	bin := fleettest.BuildBinary(t, fixturePkg)
	require.True(t, strings.HasSuffix(bin, "/procfixture"), bin)
	require.Equal(t, bin, fleettest.BuildBinary(t, "github.com/batchfleet/batchfleet/"+fixturePkg), "built once")

	p := fleettest.StartProcess(t, bin, []string{"ECHO=hello"}, "fixture")
	line := p.WaitForLine(t, `"base_url"`, 10*time.Second)
	var listening struct {
		BaseURL string `json:"base_url"`
	}
	require.NoError(t, json.Unmarshal([]byte(line), &listening))
	require.Equal(t, "http://127.0.0.1:4010/v1", listening.BaseURL)
	require.Equal(t, "env ECHO=hello HOME_SET=true EXTRA_SET=false", p.WaitForLine(t, "env ECHO", time.Second))
	require.Contains(t, p.WaitForLine(t, "stderr", time.Second), "procfixture stderr line")

	require.NoError(t, p.Stop(10*time.Second))
	require.Contains(t, p.Lines(), "got sigterm")
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	require.NoError(t, p.Stop(time.Second), "Stop again reports the same exit")
}

func TestBuildBinaryFailure(t *testing.T) {
	t.Parallel()
	f := &fakeTB{}
	msg := f.run(func(tb testing.TB) { fleettest.BuildBinary(tb, "pkg/fleettest/testdata/nosuchpkg") })
	require.Contains(t, msg, "BuildBinary: go build github.com/batchfleet/batchfleet/pkg/fleettest/testdata/nosuchpkg")
}

func TestProcessStopExitCode(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)
	p := fleettest.StartProcess(t, bin, []string{"FIXTURE_TERM_EXIT=3"}, "exit3")
	p.WaitForLine(t, "listening", 10*time.Second)
	err := p.Stop(10 * time.Second)
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr)
	require.Equal(t, 3, exitErr.ExitCode())
}

func TestProcessStopTimeoutKills(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)
	p := fleettest.StartProcess(t, bin, []string{"FIXTURE_IGNORE_TERM=1"}, "stubborn")
	p.WaitForLine(t, "listening", 10*time.Second)
	err := p.Stop(200 * time.Millisecond)
	require.ErrorIs(t, err, fleettest.ErrStopTimeout)
	<-p.Done()
}

func TestProcessKill(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)
	p := fleettest.StartProcess(t, bin, nil, "killed")
	p.WaitForLine(t, "listening", 10*time.Second)
	p.Kill()
	p.Kill()
	var exitErr *exec.ExitError
	require.ErrorAs(t, p.Stop(time.Second), &exitErr)
	require.NotContains(t, p.Lines(), "got sigterm")
}

func TestWaitForLineFailures(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)

	f := &fakeTB{}
	msg := f.run(func(tb testing.TB) {
		p := fleettest.StartProcess(tb, bin, []string{"FIXTURE_EXIT=4"}, "early")
		p.WaitForLine(tb, "never printed", 10*time.Second)
	})
	f.runCleanups()
	require.Contains(t, msg, `WaitForLine early: output ended`)
	require.Contains(t, msg, `without a line containing "never printed"`)

	f = &fakeTB{}
	msg = f.run(func(tb testing.TB) {
		p := fleettest.StartProcess(tb, bin, nil, "quiet")
		p.WaitForLine(tb, "never printed", 100*time.Millisecond)
	})
	f.runCleanups()
	require.Equal(t, `WaitForLine quiet: no line containing "never printed" within 100ms (running)`, msg)
}

func TestProcessDumpsOutputOnFailure(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)
	f := &fakeTB{}
	f.run(func(tb testing.TB) {
		p := fleettest.StartProcess(tb, bin, []string{"FIXTURE_LINES=500"}, "noisy")
		p.WaitForLine(tb, "listening", 10*time.Second)
	})
	f.failed = true
	f.runCleanups()
	require.Len(t, f.logs, 1)
	dump := f.logs[0]
	require.True(t, strings.HasPrefix(dump, "--- last 200 output lines of noisy (exited: signal: killed) ---\n"), dump[:100])
	require.Contains(t, dump, "line 499")
	require.NotContains(t, dump, "line 290\n")
}

func TestProcessKeepsLastLines(t *testing.T) {
	t.Parallel()
	bin := fleettest.BuildBinary(t, fixturePkg)
	p := fleettest.StartProcess(t, bin, []string{"FIXTURE_LINES=25000"}, "flood")
	p.WaitForLine(t, "listening", 30*time.Second)
	lines := p.Lines()
	require.LessOrEqual(t, len(lines), 20000)
	require.GreaterOrEqual(t, len(lines), 10000)
	require.Equal(t, "line 24999", lines[len(lines)-2])
	require.NotContains(t, lines, "procfixture starting", "oldest lines dropped")
}
