package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

// tmux runs a tmux command on the test's own server (socket).
func tmux(t *testing.T, socket string, args ...string) string {
	t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", socket}, args...)...).CombinedOutput()
	require.NoError(t, err, "tmux %s: %s", strings.Join(args, " "), out)
	return string(out)
}

var barDone = regexp.MustCompile(`\] (\d+)/(\d+)`)

// `batchfleet jobs watch` in a terminal (tmux: keys typed with send-keys,
// the screen read with capture-pane): the bar moves while the batch runs,
// and the job's batch.completed is printed at the end.
func TestJobsWatchInATerminal(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tmux is not installed (.ci/run installs it)")
		}
		t.Skip("tmux is not installed")
	}
	f := startFleet(t, fleetOpts{
		EmulatorEnv: []string{"EMULATOR_IN_PROGRESS_FOR=6s"},
		WorkerEnv:   []string{"PROGRESS_INTERVAL=200ms"},
	})
	f.startAll()
	completed := subscribe[contract.Completed](f, contract.SubjectCompleted)
	bin := fleettest.BuildBinary(t, "cmd/batchfleet")

	socket := fmt.Sprintf("bf-watch-%d", os.Getpid())
	tmux(t, socket, "new-session", "-d", "-s", "w", "-x", "150", "-y", "50", "bash --norc --noprofile")
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", socket, "kill-server").Run() })
	tmux(t, socket, "send-keys", "-t", "w", fmt.Sprintf("export PS1='$ ' NATS_URL=%s; clear", f.NATS.URL()), "Enter")
	// Watch before the job exists: it waits for it.
	tmux(t, socket, "send-keys", "-t", "w", bin+" jobs watch slow-1", "Enter")
	f.publish(contract.Request{IdempotencyKey: "slow-1", Requests: chatRequests("slow-1", 60)}, true)

	seen := map[int]bool{}
	var screen string
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(screen, `"outcome": "succeeded"`) {
		require.True(t, time.Now().Before(deadline), "no batch.completed on the screen:\n%s", screen)
		screen = tmux(t, socket, "capture-pane", "-p", "-t", "w", "-S", "-200")
		for _, m := range barDone.FindAllStringSubmatch(screen, -1) {
			n, _ := strconv.Atoi(m[1])
			require.Equal(t, "60", m[2], "the bar's total")
			seen[n] = true
		}
		time.Sleep(100 * time.Millisecond) // the screen is polled: it has no event to await
	}
	ev := fleettest.ReadN(t, completed, 1, 10*time.Second)[0]
	require.Equal(t, "slow-1", ev.IdempotencyKey)
	var moving []int
	for n := range seen {
		if n > 0 && n < 60 {
			moving = append(moving, n)
		}
	}
	t.Logf("bar positions seen: %v; final screen:\n%s", seen, screen)
	require.GreaterOrEqual(t, len(moving), 2, "the bar moved through at least two positions between 0 and 60: %v", seen)
	require.Contains(t, screen, "60/60 100%")
	require.Contains(t, screen, "batch.completed:")
	require.Contains(t, screen, `"idempotency_key": "slow-1"`)
	for _, kind := range []string{"created", "submitted", "in_progress", "final", "completed"} {
		require.Contains(t, screen, kind)
	}
}
