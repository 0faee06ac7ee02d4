package fleettest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// keepLines is how many output lines a Process retains.
	keepLines = 10000
	// dumpLines is how many of them are logged when the test fails.
	dumpLines = 200
)

// Process is a child process started by StartProcess. Its stdout and stderr
// are captured together, line by line.
type Process struct {
	name string
	cmd  *exec.Cmd

	exited  chan struct{} // closed once the process has exited and been reaped
	waitErr error         // cmd.Wait's result, set before exited closes
	readEOF chan struct{} // closed once the output pipe is drained

	mu      sync.Mutex
	lines   []string      // the last lines, oldest first
	dropped int           // lines dropped from the front of lines
	changed chan struct{} // closed and replaced whenever lines grows or output ends
}

// StartProcess starts bin with exactly env (KEY=value) plus PATH and HOME
// from the test's environment unless env sets them, and captures stdout and
// stderr. name labels the process in messages. The process is SIGKILLed (with
// its process group) in t.Cleanup, and if the test failed the last 200
// output lines are written to the test log.
func StartProcess(t testing.TB, bin string, env []string, name string) *Process {
	t.Helper()
	env = append([]string(nil), env...)
	for _, k := range []string{"PATH", "HOME"} {
		if v, ok := os.LookupEnv(k); ok && !hasEnv(env, k) {
			env = append(env, k+"="+v)
		}
	}

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatalf("StartProcess %s: %v", name, err)
	}
	cmd := exec.Command(bin)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = pw, pw
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("StartProcess %s: start %s: %v", name, bin, err)
	}
	pw.Close() // the child holds the only write end now

	p := &Process{
		name:    name,
		cmd:     cmd,
		exited:  make(chan struct{}),
		readEOF: make(chan struct{}),
		changed: make(chan struct{}),
	}
	go p.read(pr)
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()

	t.Cleanup(func() {
		p.Kill()
		// A data race in the child (built with -race when the tests are)
		// fails the test that started it.
		for i, l := range p.Lines() {
			if strings.Contains(l, "WARNING: DATA RACE") {
				lines := p.Lines()
				t.Errorf("data race in %s:\n%s", name, strings.Join(lines[i:min(i+60, len(lines))], "\n"))
				break
			}
		}
		if t.Failed() {
			lines := p.Lines()
			from := max(len(lines)-dumpLines, 0)
			t.Logf("--- last %d output lines of %s (%s) ---\n%s", len(lines)-from, name, p.state(), strings.Join(lines[from:], "\n"))
		}
	})
	return p
}

func hasEnv(env []string, key string) bool {
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

// read collects output lines until the pipe closes.
func (p *Process) read(r io.ReadCloser) {
	defer close(p.readEOF)
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			p.append(strings.TrimRight(line, "\r\n"))
		}
		if err != nil {
			p.mu.Lock()
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
			return
		}
	}
}

func (p *Process) append(line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lines = append(p.lines, line)
	if len(p.lines) >= 2*keepLines {
		n := len(p.lines) - keepLines
		p.lines = append([]string(nil), p.lines[n:]...)
		p.dropped += n
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Pid is the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Process) Done() <-chan struct{} { return p.exited }

// Lines returns the captured output lines, oldest first (at most the last
// 10,000).
func (p *Process) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// WaitForLine waits until the process has printed a line containing substr
// (earlier lines count) and returns that line. It fails the test if timeout
// passes or the process's output ends first.
func (p *Process) WaitForLine(t testing.TB, substr string, timeout time.Duration) string {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0 // absolute index of the first line not yet searched
	for {
		p.mu.Lock()
		for i := max(next, p.dropped); i < p.dropped+len(p.lines); i++ {
			if line := p.lines[i-p.dropped]; strings.Contains(line, substr) {
				p.mu.Unlock()
				return line
			}
		}
		next = p.dropped + len(p.lines)
		changed := p.changed
		p.mu.Unlock()

		select {
		case <-p.readEOF:
			// Search what arrived before EOF, then give up.
			p.mu.Lock()
			done := next == p.dropped+len(p.lines)
			p.mu.Unlock()
			if done {
				t.Fatalf("WaitForLine %s: output ended (%s) without a line containing %q", p.name, p.state(), substr)
			}
		case <-changed:
		case <-timer.C:
			t.Fatalf("WaitForLine %s: no line containing %q within %s (%s)", p.name, substr, timeout, p.state())
		}
	}
}

// state describes whether the process is running or how it exited.
func (p *Process) state() string {
	select {
	case <-p.exited:
		if p.waitErr != nil {
			return "exited: " + p.waitErr.Error()
		}
		return "exited: status 0"
	default:
		return "running"
	}
}

// Kill sends SIGKILL to the process and its process group, then waits for it
// to exit and for its output to be drained. It is idempotent.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
	p.drain()
}

// drain waits for the output reader; if something else in the process group
// still holds the pipe, it is killed too.
func (p *Process) drain() {
	select {
	case <-p.readEOF:
		return
	case <-time.After(time.Second):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.readEOF
}

// Stop sends SIGTERM and waits up to timeout for the process to exit. It
// returns nil for exit status 0, the *exec.ExitError otherwise, or an error
// saying the process did not stop in time, in which case it was SIGKILLed.
// Calling it on an exited process returns how it exited.
func (p *Process) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		select {
		case <-p.exited:
		case <-timer.C:
			p.Kill()
			return fmt.Errorf("stop %s: %w", p.name, ErrStopTimeout)
		}
	}
	p.drain()
	return p.waitErr
}

// ErrStopTimeout is returned by Process.Stop when the process ignored SIGTERM
// for the whole timeout and had to be killed.
var ErrStopTimeout = errors.New("fleettest: process did not exit after SIGTERM")
