package pack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"golang.org/x/sync/errgroup"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// rejected is the claim value of an item refused at intake.
const rejected = "0"

func (p *Packer) routeConsumer() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: stream.ConsumerPackers, Description: "packers: check and stage single requests",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second,
		MaxAckPending: 4 * p.cfg.Concurrency, MaxDeliver: -1,
	}
}

// route checks and stages items until ctx is done, a fetched batch at a
// time: the batch's stage messages are published asynchronously and each
// item is acknowledged once its stage message is stored.
func (p *Packer) route(ctx context.Context) error {
	cfg := p.routeConsumer()
	c, err := stream.EnsureConsumer(ctx, p.d.JS, stream.Items, cfg)
	if err != nil {
		return err
	}
	// Four batch loops overlap one batch's checks with another's fetch
	// and acknowledgements.
	const loops = 4
	g, gctx := errgroup.WithContext(ctx)
	for range loops {
		g.Go(func() error {
			return stream.ConsumeBatches(gctx, c, stream.ConsumeOptions{
				Concurrency: max(p.cfg.Concurrency/loops, 1), StopTimeout: p.cfg.StopTimeout, Logger: p.log,
				Recreate: stream.Recreate(p.d.JS, p.cfg.Streams, stream.Items, cfg),
			}, p.stageBatch)
		})
	}
	return g.Wait()
}

// stageBatch stages a batch of batch.items messages, refusing the invalid.
func (p *Packer) stageBatch(ctx context.Context, msgs []jetstream.Msg) {
	type pending struct {
		m   jetstream.Msg
		fut jetstream.PubAckFuture
	}
	var out []pending
	for _, m := range msgs {
		sm, err := p.stageMsg(ctx, m)
		if err != nil {
			p.retryLater(m, err)
			continue
		}
		if sm == nil {
			continue // refused
		}
		fut, err := p.d.JS.PublishMsgAsync(sm, jetstream.WithMsgID(sm.Header.Get(headerItem)), jetstream.WithStallWait(stream.PublishTimeout))
		if err != nil {
			p.retryLater(m, err)
			continue
		}
		out = append(out, pending{m, fut})
	}
	timeout := time.NewTimer(stream.PublishTimeout)
	defer timeout.Stop()
	staged := 0
	for _, s := range out {
		select {
		case <-s.fut.Ok():
			if err := s.m.Ack(); err != nil {
				p.log.Debug().Err(err).Msg("ack item (a redelivery is staged once: Msg-Id and claim)")
			}
			staged++
		case err := <-s.fut.Err():
			p.retryLater(s.m, fmt.Errorf("stage item: %w", err))
		case <-timeout.C:
			p.retryLater(s.m, errors.New("stage item: no acknowledgement in time"))
		case <-ctx.Done():
			p.retryLater(s.m, ctx.Err())
		}
	}
	p.count(func(s *Stats) { s.Staged += int64(staged) })
}

// stageMsg checks one batch.items message and returns its stage message;
// nil when the item was refused (answered and dead-lettered), an error
// when it must be tried again.
func (p *Packer) stageMsg(ctx context.Context, m jetstream.Msg) (*nats.Msg, error) {
	it, id, err := contract.DecodeItem(m.Data())
	if err != nil {
		var ce *contract.Error
		if !errors.As(err, &ce) {
			ce = contract.Errorf(contract.CodeInvalidInput, "%v", err)
		}
		p.reject(ctx, m, id, it.Metadata, ce)
		return nil, nil
	}
	g := Group{Provider: it.Provider, Endpoint: it.Endpoint, Model: it.Model()}
	line, err := inputLine(&it)
	if err != nil {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput, "body: %v", err))
		return nil, nil
	}
	lim := p.cfg.limitsFor(g)
	if n := int64(len(line)) + 1; n > lim.bytes {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput,
			"the item is %d bytes as a batch input line, more than a pack's %d (PACK_MAX_BYTES)", n, lim.bytes))
		return nil, nil
	}
	// Tokenizing costs ~100 µs a KB: only a group with a token budget
	// needs it; the others carry the byte rule's figure.
	tokens := ByteEstimate(g.Model, it.Body)
	if lim.tokens > 0 {
		tokens = p.d.Estimate(g.Model, it.Body)
	}
	if lim.tokens > 0 && tokens > lim.tokens {
		p.reject(ctx, m, id, it.Metadata, contract.Errorf(contract.CodeInvalidInput,
			"the item's estimated %d input tokens exceed model %s's enqueued token budget %d (ENQUEUED_TOKEN_LIMITS)", tokens, g.Model, lim.tokens))
		return nil, nil
	}
	if err := p.ensureGroup(ctx, g); err != nil {
		return nil, err
	}
	h := nats.Header{headerItem: {id}, headerTokens: {strconv.FormatInt(tokens, 10)}}
	if len(it.Metadata) > 0 {
		meta, _ := json.Marshal(it.Metadata)
		h.Set(headerMetadata, string(meta))
	}
	return &nats.Msg{Subject: g.subject(), Data: line, Header: h}, nil
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
	id, _ := json.Marshal(it.CustomID)
	url, _ := json.Marshal(it.Endpoint)
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
	id := g.ID()
	p.mu.Lock()
	known := p.known[id]
	p.mu.Unlock()
	if known {
		return nil
	}
	data, _ := json.Marshal(g)
	if _, err := p.packs.Create(ctx, "group."+id, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("record pack group %s: %w", id, err)
	}
	p.mu.Lock()
	p.known[id] = true
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
		answer, err := p.claimRefused(ctx, id)
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

// claimRefused remembers id as refused; it reports whether the refusal is
// the item's answer (true also when an earlier try of this same refusal
// recorded it, so a crash between the claim and the event is answered),
// false when a valid item holds the custom_id.
func (p *Packer) claimRefused(ctx context.Context, id string) (bool, error) {
	_, err := p.items.Create(ctx, id, []byte(rejected))
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return false, fmt.Errorf("remember refused item %s: %w", id, err)
	}
	e, err := p.items.Get(ctx, id)
	if err != nil {
		return false, fmt.Errorf("read item %s: %w", id, err)
	}
	return string(e.Value()) == rejected, nil
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
