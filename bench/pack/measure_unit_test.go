package packbench

import (
	"encoding/json"
	"runtime"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/results"
)

func TestThousands(t *testing.T) {
	t.Parallel()
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 100000: "100,000", 1234567: "1,234,567", -2500: "-2,500"} {
		require.Equal(t, want, thousands(n), n)
	}
}

func TestItemJSON(t *testing.T) {
	t.Parallel()
	for _, i := range []int{1, 42, 99_999, 100_000} {
		data := itemJSON(i, models[i%2])
		require.Len(t, data, itemBytes)
		it, id, err := contract.DecodeItem(data)
		require.NoError(t, err)
		require.Equal(t, customID(i), id)
		require.Equal(t, models[i%2], it.Model())
		require.Equal(t, map[string]string{"i": strconv.Itoa(i)}, it.Metadata)
	}
}

func TestResultShapes(t *testing.T) {
	t.Parallel()
	l, err := results.ParseLine(vendorLine(7))
	require.NoError(t, err)
	require.Equal(t, customID(7), l.CustomID)
	require.Equal(t, results.Succeeded, l.Outcome())
	require.Equal(t, int64(12), l.Usage().TotalTokens)

	var side struct {
		CustomID string            `json:"custom_id"`
		Metadata map[string]string `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal(sidecarLine(7), &side))
	require.Equal(t, customID(7), side.CustomID)
	require.Equal(t, map[string]string{"i": "7"}, side.Metadata)

	ev := eventJSON(100_000)
	require.Len(t, ev, eventBytes)
	var it contract.ItemCompleted
	require.NoError(t, json.Unmarshal(ev, &it))
	require.Equal(t, customID(100_000), it.CustomID)
}

func TestUnsample(t *testing.T) {
	t.Parallel()
	require.InDelta(t, 1, unsample(100, 1, 1), 1e-9)
	require.InDelta(t, 1, unsample(0, 0, 512<<10), 1e-9)
	require.InDelta(t, 1, unsample(64<<20, 1, 512<<10), 1e-6) // a large object is always sampled
	require.Greater(t, unsample(64, 1, 512<<10), 8000.0)      // a small one stands for ~rate/size
}

// TestLiveOutside checks that the heap profile reader sees live
// allocations, and leaves out those of the named package.
func TestLiveOutside(t *testing.T) {
	runtime.GC()
	runtime.GC()
	p := newProfileReader()
	before := p.liveOutside(serverPkg)
	keep := make([][]byte, 32)
	for i := range keep {
		keep[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	runtime.GC()
	after := p.liveOutside(serverPkg)
	mine := p.liveOutside("github.com/batchfleet/batchfleet/bench/pack.")
	runtime.KeepAlive(keep)
	require.Greater(t, after, before+24<<20, "32 MiB kept: before %d, after %d", before, after)
	require.Less(t, mine, after-24<<20, "this package's allocations are left out")
}
