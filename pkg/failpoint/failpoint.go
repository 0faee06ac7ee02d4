// Package failpoint lets the fault tests stop a worker at an exact point
// of its work, e.g. right after a vendor batch was created and before it
// was recorded, which no timing-based kill can hit reliably.
//
// Failpoints are armed only by the environment variable BATCHFLEET_FAILPOINTS
// ("name=action[@n],..."; on the n-th hit, default the first, action
// "kill" SIGKILLs the process itself and "sleep<duration>", e.g.
// "sleep5s", stalls the caller for that long, as a GC or VM pause would). In production the variable is unset and
// Hit is a map lookup on an empty map.
package failpoint

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Env is the variable that arms failpoints.
const Env = "BATCHFLEET_FAILPOINTS"

type point struct {
	action string
	at     int
	hits   int
}

var (
	mu     sync.Mutex
	points = parse(os.Getenv(Env))
)

func parse(s string) map[string]*point {
	out := map[string]*point{}
	for _, item := range strings.Split(s, ",") {
		name, spec, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok {
			continue
		}
		action, n, _ := strings.Cut(spec, "@")
		at, err := strconv.Atoi(n)
		if err != nil || at < 1 {
			at = 1
		}
		out[name] = &point{action: action, at: at}
	}
	return out
}

// Hit runs the failpoint name's action if it is armed and due.
func Hit(name string) {
	if len(points) == 0 {
		return
	}
	mu.Lock()
	p, ok := points[name]
	if ok {
		p.hits++
	}
	due := ok && p.hits == p.at
	mu.Unlock()
	if !due {
		return
	}
	if p.action == "kill" {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // never returns
	}
	if d, err := time.ParseDuration(strings.TrimPrefix(p.action, "sleep")); err == nil && strings.HasPrefix(p.action, "sleep") {
		fmt.Fprintf(os.Stderr, "failpoint %s: sleeping %v\n", name, d)
		time.Sleep(d)
		fmt.Fprintf(os.Stderr, "failpoint %s: woke up\n", name)
	}
}
