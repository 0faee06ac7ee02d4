package pack

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
)

func stagedItems(n, bodyBytes int) []staged {
	items := make([]staged, n)
	for i := range items {
		id := fmt.Sprintf("it-%d", i)
		items[i] = staged{id: id, tokens: int64(i * 7),
			line: fmt.Appendf(nil, `{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":"m","x":%q}}`, id, strings.Repeat("a", bodyBytes)),
			side: sidecarLine(id, map[string]string{"n": fmt.Sprint(i)})}
	}
	items[0].side = sidecarLine(items[0].id, nil)
	return items
}

// A chunk reads back as the items staged into it, in order.
func TestChunkRoundTrip(t *testing.T) {
	items := stagedItems(5, 20)
	m := chunkMsg("batchfleet.pack.g", items)
	c, err := parseChunk(m.Header, m.Data)
	require.NoError(t, err)
	require.Len(t, c.ids, 5)
	for i, it := range items {
		require.Equal(t, it.id, c.ids[i])
		require.Equal(t, it.tokens, c.tokens[i])
		require.Equal(t, string(it.line), string(c.lines[i]))
		require.Equal(t, string(it.side), string(c.sides[i]))
	}
	require.Equal(t, `{"custom_id":"it-0"}`, string(c.sides[0]))
	require.Equal(t, `{"custom_id":"it-1","metadata":{"n":"1"}}`, string(c.sides[1]))

	for name, mangle := range map[string]func(h nats.Header, d []byte) (nats.Header, []byte){
		"other version":  func(h nats.Header, d []byte) (nats.Header, []byte) { h.Set(headerChunk, "2"); return h, d },
		"a line missing": func(h nats.Header, d []byte) (nats.Header, []byte) { return h, d[:len(d)-len(c.sides[4])-1] },
		"no last end":    func(h nats.Header, d []byte) (nats.Header, []byte) { return h, d[:len(d)-1] },
		"tokens short":   func(h nats.Header, d []byte) (nats.Header, []byte) { h.Set(headerTokens, "1,2"); return h, d },
		"bad token":      func(h nats.Header, d []byte) (nats.Header, []byte) { h.Set(headerTokens, "1,2,x,4,5"); return h, d },
	} {
		h := nats.Header{}
		for k, v := range m.Header {
			h[k] = append([]string(nil), v...)
		}
		h, d := mangle(h, append([]byte(nil), m.Data...))
		_, err := parseChunk(h, d)
		require.ErrorIs(t, err, errChunk, name)
	}
}

// Chunks stay within the bound; an item larger than the bound is a chunk
// of its own; nothing is lost or reordered.
func TestSplitChunks(t *testing.T) {
	items := stagedItems(100, 200)
	for _, max := range []int{1, 1000, 5000, 1 << 20} {
		chunks := splitChunks(items, max)
		var got []string
		for _, c := range chunks {
			require.NotEmpty(t, c)
			size := chunkOverhead
			for _, it := range c {
				size += it.size()
				got = append(got, it.id)
			}
			if len(c) > 1 {
				require.LessOrEqual(t, size, max, "max %d", max)
				require.LessOrEqual(t, len(chunkMsg("s", c).Data)+len(chunkMsg("s", c).Header.Get(headerIDs))+len(chunkMsg("s", c).Header.Get(headerTokens)), max)
			}
		}
		require.Len(t, got, 100)
		for i, id := range got {
			require.Equal(t, items[i].id, id)
		}
		switch max {
		case 1:
			require.Len(t, chunks, 100, "one item each")
		case 1 << 20:
			require.Len(t, chunks, 1)
		}
	}
	require.Empty(t, splitChunks(nil, 100))
}

// A claim is taken by the first position that asks, again by the same
// position (a re-read after a crash), never by another; a refused item's
// custom_id is answered once and holds off any later item.
func TestClaims(t *testing.T) {
	t.Parallel()
	rd := fleettest.StartRedis(t)
	c := claims{rdb: rd.Client(t), ttl: time.Hour}
	ctx := t.Context()

	taken, err := c.claim(ctx, []string{"a", "b", "a"}, []pos{{5, 0}, {5, 1}, {9, 3}})
	require.NoError(t, err)
	require.Equal(t, []bool{true, true, false}, taken, "the second a is a copy")
	taken, err = c.claim(ctx, []string{"a", "b", "c"}, []pos{{5, 0}, {7, 0}, {7, 1}})
	require.NoError(t, err)
	require.Equal(t, []bool{true, false, true}, taken, "a re-read keeps its own; b is held by 5.1")
	ttl, err := rd.Client(t).TTL(ctx, ClaimPrefix+"a").Result()
	require.NoError(t, err)
	require.InDelta(t, time.Hour.Seconds(), ttl.Seconds(), 5, "claims live JOB_RETENTION")

	answer, err := c.refuse(ctx, "r")
	require.NoError(t, err)
	require.True(t, answer)
	answer, err = c.refuse(ctx, "r")
	require.NoError(t, err)
	require.True(t, answer, "a retried refusal is answered again (the event's Msg-Id absorbs it)")
	answer, err = c.refuse(ctx, "a")
	require.NoError(t, err)
	require.False(t, answer, "a packed item's custom_id is not refused")
	taken, err = c.claim(ctx, []string{"r"}, []pos{{11, 0}})
	require.NoError(t, err)
	require.Equal(t, []bool{false}, taken, "a refused custom_id is not packed later")

	rd.Kill()
	_, err = c.claim(ctx, []string{"z"}, []pos{{12, 0}})
	require.Error(t, err, "no Redis, no claim: the leader stops and tries again")
}

func TestPackKeyOfAPosition(t *testing.T) {
	g := Group{Provider: contract.ProviderOpenAI, Endpoint: contract.DefaultEndpoint, Model: "gpt-4o-mini"}
	require.Equal(t, g.PackKey(12), g.packKey(pos{Seq: 12}))
	k := g.packKey(pos{Seq: 12, Idx: 7})
	require.Equal(t, g.PackKey(12)+"-7", k)
	require.True(t, contract.ValidKey(k), k)
	require.True(t, pos{1, 5}.less(pos{2, 0}))
	require.True(t, pos{2, 0}.less(pos{2, 1}))
	require.False(t, pos{2, 1}.less(pos{2, 1}))
	require.Equal(t, "12.7", pos{12, 7}.String())
}
