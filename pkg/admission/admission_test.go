package admission_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/admission"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func TestMain(m *testing.M) { fleettest.VerifyTestMain(m) }

func open(t *testing.T, lim admission.Limits) *admission.Controller {
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	c, err := admission.Open(context.Background(), js, lim, 1)
	require.NoError(t, err)
	return c
}

// Many admitters racing never exceed the cap (compare-and-set on one
// entry), and a key already admitted is admitted again (idempotent).
func TestCapUnderContention(t *testing.T) {
	c := open(t, admission.Limits{MaxActive: 3})
	ctx := context.Background()
	var admitted atomic.Int32
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			ok, _, err := c.Admit(ctx, string(rune('a'+i)), "m", 0)
			require.NoError(t, err)
			if ok {
				admitted.Add(1)
			}
		})
	}
	wg.Wait()
	require.Equal(t, int32(3), admitted.Load())
	st, _, err := c.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, st.Active, 3)
	for k := range st.Active {
		ok, _, err := c.Admit(ctx, k, "m", 0)
		require.NoError(t, err)
		require.True(t, ok, "re-admitting %s", k)
		require.NoError(t, c.Release(ctx, k))
	}
	ok, _, err := c.Admit(ctx, "z", "m", 0)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, c.Release(ctx, "missing"), "releasing an unknown key is fine")
}

func TestTokenBudget(t *testing.T) {
	c := open(t, admission.Limits{TokensPerModel: map[string]int64{"small": 100, "*": 1000}})
	ctx := context.Background()
	admit := func(key, model string, tokens int64) bool {
		ok, _, err := c.Admit(ctx, key, model, tokens)
		require.NoError(t, err)
		return ok
	}
	require.True(t, admit("a", "small", 60))
	require.False(t, admit("b", "small", 60), "60+60 > 100")
	require.True(t, admit("c", "other", 900), "other models use the * budget")
	require.NoError(t, c.Release(ctx, "a"))
	require.True(t, admit("b", "small", 60))
	require.NoError(t, c.Release(ctx, "b"))
	require.True(t, admit("huge", "small", 500), "a batch larger than the whole budget runs alone")
	require.False(t, admit("d", "small", 1))
}
