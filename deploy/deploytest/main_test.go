package deploytest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/config"
	"github.com/batchfleet/batchfleet/pkg/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The worker binaries and where the image puts every binary (Dockerfile).
var workers = []string{"submitter", "poller", "notifier"}

const binDir = "/usr/local/bin/"

// problems collects what is wrong with a file, so one run reports it all and
// the negative tests can look for a specific complaint.
type problems []string

func (p *problems) add(format string, args ...any) { *p = append(*p, fmt.Sprintf(format, args...)) }

// report fails t with every problem.
func (p problems) report(t *testing.T) {
	t.Helper()
	for _, s := range p {
		t.Error(s)
	}
}

// requireProblem asserts that p contains a problem mentioning every part.
func requireProblem(t *testing.T, p problems, parts ...string) {
	t.Helper()
	for _, s := range p {
		ok := true
		for _, part := range parts {
			ok = ok && strings.Contains(s, part)
		}
		if ok {
			return
		}
	}
	require.Failf(t, "expected problem not reported", "want a problem mentioning %q; got:\n%s", parts, strings.Join(p, "\n"))
}

// repoRoot is the module root (two levels up from this package).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	require.Contains(t, string(mod), "module github.com/batchfleet/batchfleet\n")
	return root
}

// commands lists the directories under cmd/: the binaries the Dockerfile builds
// (go build ./cmd/... -o /out/ names each after its directory).
func commands(t *testing.T, root string) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "cmd"))
	require.NoError(t, err)
	out := map[string]bool{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, "cmd", e.Name(), "main.go")); err == nil {
			out[e.Name()] = true
		}
	}
	for _, w := range append([]string{"openai-emulator", "batchfleet"}, workers...) {
		require.True(t, out[w], "cmd/%s/main.go is missing", w)
	}
	return out
}

// checkWorkerEnv runs env through the workers' own start-up validation: what a
// deployment file gives a worker must not make it exit with a configuration
// error.
func checkWorkerEnv(p *problems, where, worker string, env map[string]string) {
	for _, k := range []string{"NATS_URL", "REDIS_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "METRICS_ADDR", "STREAM_REPLICAS"} {
		if env[k] == "" {
			p.add("%s: %s env %s is not set", where, worker, k)
		}
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		p.add("%s: %s env fails the workers' configuration validation: %v", where, worker, err)
		return
	}
	if _, err := telemetry.NewLogger(nopWriter{}, cfg.LogLevel, worker); err != nil {
		p.add("%s: %s: %v", where, worker, err)
	}
	if cfg.StopTimeout+2*time.Second > 10*time.Second {
		p.add("%s: %s STOP_TIMEOUT %s: a worker must exit within 10s of SIGTERM (the stop is hard-bounded at STOP_TIMEOUT+2s)", where, worker, cfg.StopTimeout)
	}
	if worker == "poller" && cfg.Poll.WebhookAddr != "" {
		if err := batchapi.ValidateWebhookSecret(cfg.Poll.WebhookSecret); err != nil {
			p.add("%s: poller OPENAI_WEBHOOK_SECRET: %v", where, err)
		}
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }

// addrPort is the port of a listen address such as ":9090" or "0.0.0.0:8080".
func addrPort(addr string) (int, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(port)
}

// imageVersion returns the major and minor version of an image tag such as
// "nats:2.11-alpine" (ok false without a numeric tag).
func imageVersion(image string) (major, minor int, ok bool) {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return 0, 0, false
	}
	tag, _, _ := strings.Cut(image[i+1:], "-")
	parts := strings.Split(tag, ".")
	var err error
	if major, err = strconv.Atoi(parts[0]); err != nil {
		return 0, 0, false
	}
	if len(parts) > 1 {
		if minor, err = strconv.Atoi(parts[1]); err != nil {
			return 0, 0, false
		}
	}
	return major, minor, true
}

func TestImageVersion(t *testing.T) {
	for _, tc := range []struct {
		image        string
		major, minor int
		ok           bool
	}{
		{"nats:2.11-alpine", 2, 11, true},
		{"nats:2.10.24", 2, 10, true},
		{"redis:7-alpine", 7, 0, true},
		{"nats", 0, 0, false},
		{"nats:latest", 0, 0, false},
		{"localhost:5000/nats", 0, 0, false},
	} {
		major, minor, ok := imageVersion(tc.image)
		require.Equal(t, []any{tc.major, tc.minor, tc.ok}, []any{major, minor, ok}, tc.image)
	}
}
