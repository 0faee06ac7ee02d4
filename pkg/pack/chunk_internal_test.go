package pack

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/stream"
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

// The leader's read-ahead hands over what the subject holds, in order, a
// bounded batch at a time, says whether more is waiting, and its reader
// goroutine ends at stop even when nobody takes what it read (the test
// binary's leak check would fail otherwise).
func TestReadAhead(t *testing.T) {
	t.Parallel()
	ns := fleettest.StartNATS(t)
	_, js := fleettest.Connect(t, ns.URL())
	ctx := t.Context()
	require.NoError(t, stream.Ensure(ctx, js, stream.Settings{}, stream.Packs))
	const n = fetchBatch + 10
	for i := range n {
		_, err := js.Publish(ctx, stream.SubjectPackPrefix+"g1", fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}
	_, err := js.Publish(ctx, stream.SubjectPackPrefix+"g2", []byte("other group"))
	require.NoError(t, err)
	open := func(ctx context.Context, start uint64) *reader {
		cons, err := js.OrderedConsumer(ctx, stream.Packs, jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{stream.SubjectPackPrefix + "g1"}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start})
		require.NoError(t, err)
		rd, err := readAhead(ctx, cons)
		require.NoError(t, err)
		return rd
	}
	rd := open(ctx, 1)
	var got []string
	fleettest.WaitFor(t, 10*time.Second, func() bool { return len(rd.msgs) == fetchBatch }, "the reader fills its buffer")
	msgs, more, err := rd.take(ctx, time.Second)
	require.NoError(t, err)
	require.Len(t, msgs, fetchBatch, "a batch is bounded")
	require.True(t, more, "more is waiting")
	for _, m := range msgs {
		got = append(got, string(m.Data()))
	}
	for len(got) < n {
		msgs, _, err = rd.take(ctx, 5*time.Second)
		require.NoError(t, err)
		require.NotEmpty(t, msgs)
		for _, m := range msgs {
			got = append(got, string(m.Data()))
		}
	}
	for i, g := range got {
		require.Equal(t, fmt.Sprint(i), g, "in order, this group only")
	}
	msgs, more, err = rd.take(ctx, 50*time.Millisecond)
	require.NoError(t, err)
	require.Empty(t, msgs, "nothing more: the wait ends empty")
	require.False(t, more)
	rd.stop()

	// A reader stopped with a full buffer and a message in hand ends too,
	// its context still live (a leader that failed and leads again).
	rd = open(context.WithoutCancel(ctx), 1)
	fleettest.WaitFor(t, 10*time.Second, func() bool { return len(rd.msgs) == fetchBatch }, "the reader fills its buffer")
	rd.stop()
}
