package largebench

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseVmHWM(t *testing.T) {
	t.Parallel()
	n, err := parseVmHWM([]byte("Name:\tnotifier\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\n"))
	require.NoError(t, err)
	require.Equal(t, int64(64<<20), n)
	_, err = parseVmHWM([]byte("VmRSS:\t1 kB\n"))
	require.Error(t, err)
	_, err = parseVmHWM([]byte("VmHWM:\t1 MB\n"))
	require.Error(t, err)

	own, err := peakRSS(os.Getpid())
	require.NoError(t, err)
	require.Positive(t, own)
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	s := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	require.Equal(t, time.Duration(5), percentile(s, 0.5))
	require.Equal(t, time.Duration(10), percentile(s, 0.99))
	require.Equal(t, time.Duration(1), percentile(s, 0.01))
	require.Zero(t, percentile(nil, 0.5))
}
