package pollbench

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseProcStatus(t *testing.T) {
	t.Parallel()
	m, err := parseProcStatus([]byte("Name:\tpoller\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\nThreads:\t9\n"))
	require.NoError(t, err)
	require.Equal(t, procMem{RSS: 40 << 20, HWM: 64 << 20}, m)
	_, err = parseProcStatus([]byte("VmRSS:\t1 kB\n"))
	require.Error(t, err)

	own, err := readProcMem(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, own.RSS)
	require.GreaterOrEqual(t, own.HWM, own.RSS)
}

func TestParseProcStat(t *testing.T) {
	t.Parallel()
	// utime 250 and stime 50 ticks; the command name holds a space and a ')'.
	line := "4242 (po ll)er) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 9 0 100 1000 200 18446744073709551615"
	cpu, err := parseProcStat([]byte(line))
	require.NoError(t, err)
	require.Equal(t, 3*time.Second, cpu)
	_, err = readProcCPU(os.Getpid())
	require.NoError(t, err)
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	s := []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, 5, percentile(s, 0.5))
	require.Equal(t, 10, percentile(s, 0.99))
	require.Equal(t, 1, percentile(s, 0.01))
	require.Zero(t, percentile([]int(nil), 0.5))

	d := []time.Duration{time.Millisecond, 2 * time.Millisecond}
	require.Equal(t, "1 ms", censored(d, 4, 0.25))
	require.Equal(t, "2 ms", censored(d, 4, 0.5))
	require.Equal(t, "undetected", censored(d, 4, 0.51))
	require.Equal(t, "-", censored(nil, 0, 0.5))
}

func TestListSweep(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	// 250 batches: the first 100 end at t0+1s, the rest at t0+3s.
	term := make([]time.Time, 250)
	for i := range term {
		term[i] = t0.Add(3 * time.Second)
		if i < 100 {
			term[i] = t0.Add(time.Second)
		}
	}
	// Pages take 100ms; newest first, page 1 holds 249..150, page 2
	// 149..50, page 3 49..0. Sweep 1 at 0s: 3 pages, nothing terminal.
	// Sweep 2 at 2s: 3 pages, sees the first 100 at 2.2s and 2.3s.
	// Sweep 3 at 4s: 2 pages down to index 100, sees the rest (at 4.1s and
	// 4.2s). Sweep 4 at 6s: one page shows nothing is left.
	res := listSweep(term, t0, t0.Add(6500*time.Millisecond), 2*time.Second, 100*time.Millisecond)
	require.Equal(t, 4, res.sweeps)
	require.Equal(t, 3+3+2+1, res.calls)
	require.Equal(t, 3, res.maxPages)
	require.Len(t, res.detect, 250)
	lat := sortedCopy(res.detect)
	require.Equal(t, 1100*time.Millisecond, lat[0])
	require.Equal(t, 1300*time.Millisecond, lat[249])

	// A sweep longer than the interval starts the next one at once.
	res = listSweep(term, t0, t0.Add(950*time.Millisecond), 200*time.Millisecond, 100*time.Millisecond)
	require.Equal(t, 3, res.sweeps, "0-0.3s, 0.3-0.6s, 0.6-0.9s")
}

func TestScales(t *testing.T) {
	t.Parallel()
	got, err := scales("4000, 100000@90s")
	require.NoError(t, err)
	require.Equal(t, []scenario{{Jobs: 4000}, {Jobs: 100000, Observe: 90 * time.Second}}, got)
	_, err = scales("x")
	require.Error(t, err)
}
