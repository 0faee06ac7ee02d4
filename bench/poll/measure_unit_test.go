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
	// Sweeps: at 0s all 250 are active (3 pages); at 2s
	// 150 (2 pages); at 4s none active (1 page).
	calls, sweeps := listSweep(term, t0, t0.Add(4*time.Second), 2*time.Second)
	require.Equal(t, 3, sweeps)
	require.Equal(t, 3+2+1, calls)
}

func TestScales(t *testing.T) {
	t.Parallel()
	got, err := scales("4000, 100000@90s")
	require.NoError(t, err)
	require.Equal(t, []scenario{{Jobs: 4000}, {Jobs: 100000, Observe: 90 * time.Second}}, got)
	_, err = scales("x")
	require.Error(t, err)
}
