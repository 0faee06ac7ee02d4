package largebench

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// peakRSS returns a process's peak resident set size since it started
// (VmHWM of /proc/<pid>/status), in bytes.
func peakRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseVmHWM(data)
}

func parseVmHWM(data []byte) (int64, error) {
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		k, v, ok := strings.Cut(s.Text(), ":")
		if !ok || k != "VmHWM" {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("parse VmHWM: %q", v)
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmHWM: %w", err)
		}
		return n << 10, nil
	}
	return 0, fmt.Errorf("VmHWM missing")
}

// peakMiB reads peakRSS in MiB, failing the benchmark if /proc cannot say.
func peakMiB(b *testing.B, name string, pid int) float64 {
	b.Helper()
	n, err := peakRSS(pid)
	if err != nil {
		b.Fatalf("peak RSS of %s (pid %d): %v", name, pid, err)
	}
	return float64(n) / (1 << 20)
}

// percentile returns the q-quantile (0 < q <= 1) of sorted by the
// nearest-rank method; zero for an empty sample.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func msec(d time.Duration) string {
	return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond))
}

// verdict says whether a figure meets its target, for the table.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s must be a positive integer, got %q", name, v)
	}
	return n
}
