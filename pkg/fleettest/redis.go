package fleettest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisInstallHint is how a missing redis-server is reported.
const redisInstallHint = "redis-server not found on PATH; install it (Debian/Ubuntu: apt-get install -y redis-server)"

// Redis is a child redis-server process on 127.0.0.1 with persistence off and
// its working directory in a t.TempDir().
type Redis struct {
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited and been reaped
	out  *syncBuffer
}

// StartRedis starts redis-server on a free port and waits until it answers
// PING. It kills the process in t.Cleanup. A missing redis-server fails the
// test with an install hint.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("StartRedis: %s: %v", redisInstallHint, err)
	}
	r := &Redis{bin: bin, dir: t.TempDir()}
	t.Cleanup(r.Kill) // registered after TempDir, so it runs before the dir is removed

	// A free port can be taken between probing and binding; try a few.
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			t.Fatalf("StartRedis: %v", err)
		}
		r.port = port
		if lastErr = r.start(); lastErr == nil {
			return r
		}
	}
	t.Fatalf("StartRedis: %v", lastErr)
	return nil
}

// freePort asks the kernel for a free TCP port on 127.0.0.1.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs redis-server on r.port and waits until it answers PING.
func (r *Redis) start() error {
	cmd := exec.Command(r.bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	r.mu.Lock()
	r.cmd, r.done, r.out = cmd, done, out
	r.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited early (%v): %s", r.port, cmd.ProcessState, strings.TrimSpace(out.String()))
		default:
		}
		if err := pingRedis(r.Addr()); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			r.Kill()
			return fmt.Errorf("redis-server on port %d not answering PING within 10s: %w; output: %s", r.port, err, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// pingRedis sends an inline PING and expects +PONG.
func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "+PONG" {
		return fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	return nil
}

// Addr is host:port, 127.0.0.1:N. It stays the same across Restart.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is redis://127.0.0.1:N/0.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Client returns a go-redis client for this server, closed in t.Cleanup.
// It survives Kill and Restart: commands fail while the server is down and
// work again once it is back.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill sends SIGKILL and waits for the process to exit. It is idempotent.
func (r *Redis) Kill() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// Restart kills the server and starts an empty one on the same port: it
// models Redis losing everything (a crash without persistence, or a failover
// to a replica that had not caught up).
func (r *Redis) Restart(t testing.TB) {
	t.Helper()
	r.Kill()
	var err error
	for range 5 { // the port can linger briefly after a kill
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("Restart redis: %v", err)
}

// FlushAll deletes every key on the server, as FLUSHALL does.
func (r *Redis) FlushAll(t testing.TB) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FlushAll redis: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
