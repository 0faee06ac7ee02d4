package pollbench

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// procMem is a process's memory from /proc/<pid>/status, in bytes.
type procMem struct {
	RSS, HWM int64 // VmRSS (now), VmHWM (peak RSS since start)
}

func readProcMem(pid int) (procMem, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procMem{}, err
	}
	return parseProcStatus(data)
}

func parseProcStatus(data []byte) (procMem, error) {
	var m procMem
	found := 0
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("parse %s: %q", k, v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("parse %s: %w", k, err)
		}
		if k == "VmRSS" {
			m.RSS = n << 10
		} else {
			m.HWM = n << 10
		}
		found++
	}
	if found != 2 {
		return m, errors.New("VmRSS or VmHWM missing")
	}
	return m, nil
}

// readProcCPU returns the user+system CPU time a process used so far.
// /proc reports clock ticks of USER_HZ, which Linux fixes at 100.
func readProcCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseProcStat(data)
}

func parseProcStat(data []byte) (time.Duration, error) {
	// The command name (field 2) may hold spaces; fields after its ')' are fixed.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	// f[0] is field 3 (state), so utime (14) and stime (15) are f[11], f[12].
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * (time.Second / 100), nil
}

// findPID finds the process whose environment holds marker (KEY=value).
// fleettest.Process does not expose its pid; every poller process gets a
// unique POLLBENCH_PROC marker instead.
func findPID(marker string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	want := []byte(marker + "\x00")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no process with %s", marker)
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method; zero for an empty sample.
func percentile[T any](sorted []T, q float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func sortedCopy[T int | time.Duration](s []T) []T {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func mean[T int | time.Duration](s []T) float64 {
	if len(s) == 0 {
		return 0
	}
	var sum float64
	for _, v := range s {
		sum += float64(v)
	}
	return sum / float64(len(s))
}

// sweep is the outcome of a simulated List-based tracker.
type sweep struct {
	calls, sweeps, maxPages int
	detect                  []time.Duration // terminal -> seen, per batch seen terminal
}

// listSweep simulates a List-based tracker for the same batches: a sweep
// lists batches newest first, 100 a page, each page answered pageLatency
// after the previous one (cursor pagination is sequential), down to the
// oldest batch it has not yet seen terminal; a batch is seen terminal by
// the first page showing it after its terminal time. A sweep starts every
// interval, or as soon as the previous one ends if it takes longer.
// terminal holds each batch's terminal time (zero: never) in creation
// order; every batch exists from start; nothing is listed after end. The
// emulator holds this run's batches only: a real account's other batches
// would add pages.
func listSweep(terminal []time.Time, start, end time.Time, interval, pageLatency time.Duration) sweep {
	var res sweep
	n := len(terminal)
	seen := make([]bool, n)
	oldest := 0 // lowest index not seen terminal
	for at := start; !at.After(end); {
		for oldest < n && seen[oldest] {
			oldest++
		}
		pages := 0
		for hi := n - 1; hi >= oldest || pages == 0; {
			visit := at.Add(time.Duration(pages+1) * pageLatency)
			if visit.After(end) {
				break
			}
			pages++
			lo := max(hi-99, 0)
			for i := hi; i >= lo; i-- {
				if !seen[i] && !terminal[i].IsZero() && !terminal[i].After(visit) {
					seen[i] = true
					res.detect = append(res.detect, visit.Sub(terminal[i]))
				}
			}
			hi = lo - 1
			if hi < 0 {
				break
			}
		}
		if pages == 0 {
			break
		}
		res.calls += pages
		res.sweeps++
		res.maxPages = max(res.maxPages, pages)
		at = at.Add(max(interval, time.Duration(pages)*pageLatency))
	}
	return res
}

func kib(b float64) string { return fmt.Sprintf("%.2f KiB", b/1024) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func ms(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// censored formats the q-quantile of a sample of total values of which
// only the smallest, sorted, were observed (the rest are larger: batches
// terminal but not yet detected); "undetected" when it falls among those.
func censored(sorted []time.Duration, total int, q float64) string {
	if total == 0 {
		return "-"
	}
	rank := int(math.Ceil(q * float64(total)))
	if rank > len(sorted) {
		return "undetected"
	}
	return ms(sorted[max(rank, 1)-1])
}

// quantile formats the q-quantile of sorted, "-" for no sample.
func quantile(sorted []time.Duration, q float64) string {
	if len(sorted) == 0 {
		return "-"
	}
	return ms(percentile(sorted, q))
}
