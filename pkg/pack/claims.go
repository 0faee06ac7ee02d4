package pack

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// ClaimPrefix begins the Redis key that remembers an item's custom_id:
// batchfleet:item:<custom_id>. Its value is the position of the stage
// message that carries the item into a pack ("<sequence>.<index>"), or
// "0" for an item refused at intake; it lives JOB_RETENTION.
const ClaimPrefix = "batchfleet:item:"

// refusedClaim is the claim of an item refused at intake.
const refusedClaim = "0"

// pos is an item's position in the stage stream: its chunk's sequence
// and its index in the chunk.
type pos struct {
	Seq uint64
	Idx int
}

func (p pos) String() string { return strconv.FormatUint(p.Seq, 10) + "." + strconv.Itoa(p.Idx) }

// less orders positions.
func (p pos) less(q pos) bool { return p.Seq < q.Seq || p.Seq == q.Seq && p.Idx < q.Idx }

// claims remembers custom_ids in Redis, one key each, set only if absent.
type claims struct {
	rdb redis.Cmdable
	ttl time.Duration
}

// claim decides, for each item, whether it is the one its custom_id is
// remembered for: the key is created with the item's position (SET NX
// GET, pipelined), or already holds it (the range read again after a
// crash). A key holding another value is a copy (republished,
// redelivered) or an item refused before.
func (c claims) claim(ctx context.Context, ids []string, at []pos) ([]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make([]*redis.StatusCmd, len(ids))
	vals := make([]string, len(ids))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			vals[i] = at[i].String()
			cmds[i] = p.SetArgs(ctx, ClaimPrefix+id, vals[i], redis.SetArgs{Mode: "NX", Get: true, TTL: c.ttl})
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("claim items: %w", err)
	}
	taken := make([]bool, len(ids))
	for i, cmd := range cmds {
		held, err := cmd.Result()
		switch {
		case errors.Is(err, redis.Nil):
			taken[i] = true // created
		case err != nil:
			return nil, fmt.Errorf("claim item %s: %w", ids[i], err)
		default:
			taken[i] = held == vals[i]
		}
	}
	return taken, nil
}

// refuse remembers id as refused at intake; it reports whether the
// refusal is the item's answer (true also when an earlier try of this
// refusal recorded it, so a crash between the claim and the event is
// answered), false when a valid item holds the custom_id.
func (c claims) refuse(ctx context.Context, id string) (bool, error) {
	held, err := c.rdb.SetArgs(ctx, ClaimPrefix+id, refusedClaim, redis.SetArgs{Mode: "NX", Get: true, TTL: c.ttl}).Result()
	switch {
	case errors.Is(err, redis.Nil):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("remember refused item %s: %w", id, err)
	}
	return held == refusedClaim, nil
}
