package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

func (p *Packer) routeConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: stream.ConsumerPackers, Description: "packers: check and stage single requests",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: 4 * routeLoops * p.cfg.Concurrency, MaxDeliver: -1,
	}
}

// route checks and stages items until ctx is done, a fetched batch at a
// time: the batch's chunks are published asynchronously and the loop goes
// on to its next batch while its settler acknowledges each item once its
// chunk is stored (the consumer's max ack pending bounds what is in flight).
func (p *Packer) route(ctx context.Context) error {
	cfg := p.routeConsumer()
	c, err := stream.EnsureConsumer(ctx, p.d.JS, stream.Items, cfg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	for range routeLoops {
		g.Go(func() error {
			staged := make(chan stagedChunk, 4)
			settled := make(chan struct{})
			go func() {
				defer close(settled)
				for sc := range staged {
					p.settle(sc)
				}
			}()
			err := stream.ConsumeBatches(gctx, c, stream.ConsumeOptions{
				Concurrency: p.cfg.Concurrency, StopTimeout: p.cfg.StopTimeout, Logger: p.log,
				Recreate: stream.Recreate(p.d.JS, p.cfg.Streams, stream.Items, cfg),
			}, func(ctx context.Context, msgs []jetstream.Msg) { p.stageBatch(ctx, msgs, staged) })
			close(staged)
			<-settled
			return err
		})
	}
	return g.Wait()
}

// stagedChunk is a chunk published and the items it carries, to be
// acknowledged once it is stored.
type stagedChunk struct {
	ctx  context.Context // the batch's: done at the hard stop
	msgs []jetstream.Msg
	fut  jetstream.PubAckFuture
	at   time.Time
}

// settle acknowledges a chunk's items once it is stored, or hands them
// back.
func (p *Packer) settle(sc stagedChunk) {
	timeout := time.NewTimer(max(stream.PublishTimeout-time.Since(sc.at), 0))
	defer timeout.Stop()
	select {
	case <-sc.fut.Ok():
		for _, m := range sc.msgs {
			if err := m.Ack(); err != nil {
				p.log.Debug().Err(err).Msg("ack item (a redelivery is packed once: the claim)")
			}
		}
		p.count(func(s *Stats) { s.Staged += int64(len(sc.msgs)) })
	case err := <-sc.fut.Err():
		p.retryLaterAll(sc.msgs, fmt.Errorf("stage items: %w", err))
	case <-timeout.C:
		p.retryLaterAll(sc.msgs, errors.New("stage items: no acknowledgement in time"))
	case <-sc.ctx.Done():
		p.retryLaterAll(sc.msgs, sc.ctx.Err())
	}
}

// stageBatch stages a batch of batch.items messages, refusing the invalid:
// the valid items of each group go into chunks (one stage message each,
// published asynchronously) handed to out, whose settler acknowledges
// them.
func (p *Packer) stageBatch(ctx context.Context, msgs []jetstream.Msg, out chan<- stagedChunk) {
	type groupItems struct {
		g     Group
		items []staged
		msgs  []jetstream.Msg
	}
	var groups []*groupItems
	byGroup := map[Group]*groupItems{}
	for _, m := range msgs {
		g, it, err := p.stageMsg(ctx, m)
		if err != nil {
			p.retryLater(m, err)
			continue
		}
		if it == nil {
			continue // refused
		}
		gi := byGroup[g]
		if gi == nil {
			gi = &groupItems{g: g}
			byGroup[g] = gi
			groups = append(groups, gi)
		}
		gi.items = append(gi.items, *it)
		gi.msgs = append(gi.msgs, m)
	}
	maxChunk := p.maxChunk()
	for _, gi := range groups {
		at := 0
		for _, items := range splitChunks(gi.items, maxChunk) {
			ms := gi.msgs[at : at+len(items)]
			at += len(items)
			fut, err := p.d.JS.PublishMsgAsync(chunkMsg(gi.g.subject(), items), jetstream.WithStallWait(stream.PublishTimeout))
			if err != nil {
				p.retryLaterAll(ms, err)
				continue
			}
			out <- stagedChunk{ctx: ctx, msgs: ms, fut: fut, at: time.Now()}
		}
	}
}

// maxChunk is the most bytes of a chunk: the connection's largest message
// (the server's max_payload).
func (p *Packer) maxChunk() int {
	if nc := p.d.JS.Conn(); nc != nil {
		if n := nc.MaxPayload(); n > 0 {
			return int(n)
		}
	}
	return 1 << 20
}

// stageMsg checks one batch.items message and returns its group and staged
// item; a nil item when it was refused (answered and dead-lettered), an
// error when it must be tried again.
func (p *Packer) stageMsg(ctx context.Context, m jetstream.Msg) (Group, *staged, error) {
	it, id, err := contract.DecodeItem(m.Data())
	if err != nil {
		var ce *contract.Error
		if !errors.As(err, &ce) {
			ce = contract.Errorf(contract.CodeInvalidInput, "%v", err)
		}
		p.reject(ctx, m, id, it.Metadata, ce)
		return Group{}, nil, nil
	}
	g := Group{Provider: it.Provider, Endpoint: it.Endpoint, Model: it.Model()}
	line, err := inputLine(&it)
	if err != nil {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput, "body: %v", err))
		return g, nil, nil
	}
	lim := p.cfg.limitsFor(g)
	if n := int64(len(line)) + 1; n > lim.bytes {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput,
			"the item is %d bytes as a batch input line, more than a pack's %d (PACK_MAX_BYTES)", n, lim.bytes))
		return g, nil, nil
	}
	// The item's own custom_id (DecodeItem's id is the first "custom_id"
	// key's, which a duplicate key can make differ).
	s := &staged{id: it.CustomID, line: line, side: sidecarLine(it.CustomID, it.Metadata)}
	if max := p.maxChunk(); s.size()+chunkOverhead > max {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput,
			"the item is %d bytes as a batch input line, more than a NATS message can carry (%d, the server's max_payload)", len(line)+1, max))
		return g, nil, nil
	}
	// Tokenizing costs ~100 µs a KB: only a group with a token budget
	// needs it; the others carry the byte rule's figure.
	s.tokens = ByteEstimate(g.Model, it.Body)
	if lim.tokens > 0 {
		s.tokens = p.d.Estimate(g.Model, it.Body)
	}
	if lim.tokens > 0 && s.tokens > lim.tokens {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput,
			"the item's estimated %d input tokens exceed model %s's enqueued token budget %d (ENQUEUED_TOKEN_LIMITS)", s.tokens, g.Model, lim.tokens))
		return g, nil, nil
	}
	if err := p.ensureGroup(ctx, g); err != nil {
		return g, nil, err
	}
	return g, s, nil
}

func (p *Packer) retryLaterAll(msgs []jetstream.Msg, err error) {
	p.log.Warn().Err(err).Int("items", len(msgs)).Msg("stage items: handed back")
	for _, m := range msgs {
		_ = m.NakWithDelay(time.Second)
	}
}

func (p *Packer) retryLater(m jetstream.Msg, err error) {
	p.log.Warn().Err(err).Msg("stage item: handed back")
	_ = m.NakWithDelay(time.Second)
}

// inputLine is the item as a line of a vendor batch input file:
// {"custom_id","method":"POST","url","body"} with the body compacted (a
// JSONL line holds no newline).
func inputLine(it *contract.Item) ([]byte, error) {
	// A body without line breaks is used as it is (DecodeItem checked it
	// is JSON); one with them is compacted, since a JSONL line holds none.
	body := bytes.NewBuffer(bytes.TrimSpace(it.Body))
	if bytes.ContainsAny(it.Body, "\r\n") {
		body = new(bytes.Buffer)
		if err := json.Compact(body, it.Body); err != nil {
			return nil, err
		}
	}
	// custom_ids are [A-Za-z0-9_-] and endpoints a fixed set of paths:
	// Go's quoting is JSON's for them.
	id := strconv.AppendQuote(nil, it.CustomID)
	url := strconv.AppendQuote(nil, it.Endpoint)
	line := make([]byte, 0, body.Len()+len(id)+len(url)+48)
	line = append(line, `{"custom_id":`...)
	line = append(line, id...)
	line = append(line, `,"method":"POST","url":`...)
	line = append(line, url...)
	line = append(line, `,"body":`...)
	line = append(line, body.Bytes()...)
	return append(line, '}'), nil
}

// ensureGroup writes g's descriptor once, so every packer leads it.
func (p *Packer) ensureGroup(ctx context.Context, g Group) error {
	p.mu.Lock()
	ensured := p.ensured[g]
	p.mu.Unlock()
	if ensured {
		return nil
	}
	id := g.ID()
	data, _ := json.Marshal(g)
	if _, err := p.packs.Create(ctx, "group."+id, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("record pack group %s: %w", id, err)
	}
	p.mu.Lock()
	p.known[id], p.ensured[g] = true, true
	p.mu.Unlock()
	return nil
}

// reject answers an invalid item: when it has a valid custom_id that no
// earlier item holds, the custom_id is remembered as refused and gets a
// failed batch.item.completed; the message goes to batch.dlq.items with the
// error headers either way.
func (p *Packer) reject(ctx context.Context, m jetstream.Msg, id string, meta map[string]string, e *contract.Error) {
	log := p.log.With().Str("custom_id", id).Str("code", e.Code).Logger()
	if id != "" {
		answer, err := p.claims.refuse(ctx, id)
		if err != nil {
			p.retryLater(m, err)
			return
		}
		if answer {
			ev := contract.ItemCompleted{CustomID: id, Outcome: contract.OutcomeFailed, Error: e, Metadata: meta}
			if ev.Metadata == nil {
				ev.Metadata = map[string]string{}
			}
			if _, err := stream.Publish(ctx, p.d.JS, contract.SubjectItemCompleted, ev,
				stream.WithMsgID(contract.ItemCompletedMsgID(id))); err != nil {
				p.retryLater(m, err)
				return
			}
		}
	}
	if err := stream.DeadLetter(ctx, p.d.JS, contract.SubjectDLQItems, m, e); err != nil {
		p.retryLater(m, err)
		return
	}
	_ = m.Ack()
	p.count(func(s *Stats) { s.Rejected++ })
	log.Warn().Str("error", e.Message).Msg("item refused: dead-lettered")
}

// watchGroups starts a leadership loop for every pack group, known at
// start or created later.
func (p *Packer) watchGroups(ctx context.Context) error {
	w, err := p.packs.Watch(ctx, "group.*")
	if err != nil {
		return fmt.Errorf("watch pack groups: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("pack group watch ended")
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var g Group
			if err := json.Unmarshal(e.Value(), &g); err != nil {
				p.log.Error().Err(err).Str("key", e.Key()).Msg("pack group descriptor: ignored")
				continue
			}
			p.startLead(ctx, g)
		}
	}
}

func (p *Packer) startLead(ctx context.Context, g Group) {
	id := g.ID()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.leads[id] {
		return
	}
	p.leads[id] = true
	p.known[id] = true
	p.wg.Add(1)
	log := p.log.With().Str("group", id).Str("model", g.Model).Logger()
	go leadLoop(ctx, p, g, log)
}

// routeLoops is how many fetch loops stage items in each process: each
// overlaps its batch's checks and stage publish with the others' fetches
// and acknowledgements.
const routeLoops = 4
