package fleettest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
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
	set  redisSettings

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited and been reaped
	out  *syncBuffer
}

// RedisOption changes how StartRedis runs redis-server.
type RedisOption func(*redisSettings)

type redisSettings struct {
	tls            *PKI   // TLS only, with the PKI's server certificate
	user, password string // an ACL user; the default user is off
}

// RedisTLS makes redis-server serve TLS only (no plain port) with the PKI's
// server certificate; client certificates signed by its CA are accepted
// but not required. URL then returns a rediss:// URL.
func RedisTLS(p PKI) RedisOption { return func(s *redisSettings) { s.tls = &p } }

// RedisUser adds an ACL user with every permission and turns the default
// user off, so clients must authenticate as user with password. The
// password is written to an ACL file, not to redis-server's command line.
func RedisUser(user, password string) RedisOption {
	return func(s *redisSettings) { s.user, s.password = user, password }
}

// StartRedis starts redis-server on a free port and waits until it answers
// PING. It kills the process in t.Cleanup. A missing redis-server fails the
// test with an install hint.
func StartRedis(t testing.TB, opts ...RedisOption) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("StartRedis: %s: %v", redisInstallHint, err)
	}
	r := &Redis{bin: bin, dir: t.TempDir()}
	for _, o := range opts {
		o(&r.set)
	}
	if r.set.user != "" {
		acl := fmt.Sprintf("user %s on >%s ~* &* +@all\nuser default off\n", r.set.user, r.set.password)
		if err := os.WriteFile(filepath.Join(r.dir, "users.acl"), []byte(acl), 0o600); err != nil {
			t.Fatalf("StartRedis: %v", err)
		}
	}
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
	cmd := exec.Command(r.bin, r.args()...)
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
		if err := r.ping(); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			r.Kill()
			return fmt.Errorf("redis-server on port %d not answering PING within 10s: %w; output: %s", r.port, err, strings.TrimSpace(out.String()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// args is redis-server's command line.
func (r *Redis) args() []string {
	args := []string{
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", r.dir,
		"--daemonize", "no",
		"--loglevel", "warning",
	}
	if p := r.set.tls; p != nil {
		args[1] = "0"
		args = append(args, "--tls-port", strconv.Itoa(r.port),
			"--tls-cert-file", p.ServerCertFile, "--tls-key-file", p.ServerKeyFile,
			"--tls-ca-cert-file", p.CAFile, "--tls-auth-clients", "optional")
	}
	if r.set.user != "" {
		args = append(args, "--aclfile", filepath.Join(r.dir, "users.acl"))
	}
	return args
}

// tlsConfig is the client side of RedisTLS (nil without it).
func (r *Redis) tlsConfig() *tls.Config {
	if r.set.tls == nil {
		return nil
	}
	pool := x509.NewCertPool()
	if ca, err := os.ReadFile(r.set.tls.CAFile); err == nil {
		pool.AppendCertsFromPEM(ca)
	}
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// ping sends an inline PING and expects +PONG, or -NOAUTH when the default
// user is off: either way the server is serving.
func (r *Redis) ping() error {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if cfg := r.tlsConfig(); cfg != nil {
		c = tls.Client(c, cfg)
	}
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if l := strings.TrimSpace(line); l != "+PONG" && !strings.HasPrefix(l, "-NOAUTH") {
		return fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	return nil
}

// Addr is host:port, 127.0.0.1:N. It stays the same across Restart.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is redis://127.0.0.1:N/0 (rediss:// with RedisTLS), without the
// RedisUser credentials.
func (r *Redis) URL() string {
	if r.set.tls != nil {
		return "rediss://" + r.Addr() + "/0"
	}
	return "redis://" + r.Addr() + "/0"
}

// options are a client's: TLS and the ACL user as the server wants them.
func (r *Redis) options() *redis.Options {
	return &redis.Options{Addr: r.Addr(), TLSConfig: r.tlsConfig(), Username: r.set.user, Password: r.set.password}
}

// Client returns a go-redis client for this server, closed in t.Cleanup.
// It survives Kill and Restart: commands fail while the server is down and
// work again once it is back.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(r.options())
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
	c := redis.NewClient(r.options())
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
