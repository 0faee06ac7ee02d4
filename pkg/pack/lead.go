package pack

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/failpoint"
	"github.com/batchfleet/batchfleet/pkg/jobstore"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// A leader reads (and claims the items of) up to fetchBatch stage
// messages (chunks) and fetchBytes at once.
const (
	fetchBatch = 64
	fetchBytes = 8 << 20
)

// errFenced: another leader changed the group's state.
var errFenced = errors.New("pack: the group's state changed under this leader")

// SidecarName is the intake object listing a pack's items (one JSON line
// {"custom_id","metadata"} each, in input order) until their results are
// fanned out.
func SidecarName(key string) string { return key + ".items" }

func leadLoop(ctx context.Context, p *Packer, g Group, log zerolog.Logger) {
	defer p.wg.Done()
	lock.Lead(ctx, p.d.Leader, "pack:"+g.ID(), p.cfg.LockTTL, p.cfg.LockTTL/3, log, func(ctx context.Context, lk *lock.Lock) {
		lk.KeepAlive(ctx)
		defer func() {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			defer cancel()
			_ = lk.Release(rctx)
		}()
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-lk.Lost():
				cancel()
			case <-ctx.Done():
			}
		}()
		log.Info().Msg("leading pack group")
		for ctx.Err() == nil {
			l := &leader{p: p, g: g, lim: p.cfg.limitsFor(g), log: log}
			err := l.run(ctx)
			l.discard()
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, errFenced):
				log.Warn().Err(err).Msg("pack group: another leader took over")
				return
			}
			log.Warn().Err(err).Msg("pack group: leading again in 1s")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
}

// leader packs one group while it holds the group's lock.
type leader struct {
	p   *Packer
	g   Group
	lim limits
	log zerolog.Logger

	st   state
	rev  uint64
	open *openPack
}

// openPack is the pack being filled: its lines and sidecar are in
// temporary files; only counters are in memory.
type openPack struct {
	key      string
	first    pos
	deadline time.Time
	budget   int64 // tokens; 0 = none
	count    int
	bytes    int64
	tokens   int64
	lines    *os.File
	side     *os.File
	lw, sw   *bufio.Writer
}

// newOpenPack makes a pack's temporary input and sidecar files.
func newOpenPack(key string, first pos) (*openPack, error) {
	o := &openPack{key: key, first: first}
	var err error
	if o.lines, err = os.CreateTemp("", "batchfleet-pack-*.jsonl"); err != nil {
		return nil, fmt.Errorf("pack input file: %w", err)
	}
	if o.side, err = os.CreateTemp("", "batchfleet-pack-*.items"); err != nil {
		o.close()
		return nil, fmt.Errorf("pack sidecar file: %w", err)
	}
	o.lw, o.sw = bufio.NewWriterSize(o.lines, 256<<10), bufio.NewWriterSize(o.side, 64<<10)
	return o, nil
}

func (o *openPack) close() {
	for _, f := range []*os.File{o.lines, o.side} {
		if f != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}
}

func (l *leader) discard() {
	if l.open != nil {
		l.open.close()
		l.open = nil
	}
}

func (l *leader) stateKey() string { return "state." + l.g.ID() }

func (l *leader) load(ctx context.Context) error {
	e, err := l.p.packs.Get(ctx, l.stateKey())
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		l.st, l.rev = state{Next: 1}, 0
		return nil
	case err != nil:
		return fmt.Errorf("read pack state: %w", err)
	}
	st, err := decodeState(e.Value())
	if err != nil {
		return err
	}
	l.st, l.rev = st, e.Revision()
	return nil
}

// save writes the state under the revision read (fencing).
func (l *leader) save(ctx context.Context) error {
	data, _ := json.Marshal(l.st)
	rev, err := putRevision(ctx, l.p.packs, l.stateKey(), data, l.rev)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err) {
			return fmt.Errorf("%w: %w", errFenced, err)
		}
		return fmt.Errorf("write pack state: %w", err)
	}
	l.rev = rev
	return nil
}

// putRevision writes key under the revision read (0: it must not exist
// yet) and returns the new revision.
func putRevision(ctx context.Context, kv jetstream.KeyValue, key string, data []byte, rev uint64) (uint64, error) {
	if rev == 0 {
		return kv.Create(ctx, key, data)
	}
	return kv.Update(ctx, key, data, rev)
}

func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		errors.Is(err, jetstream.ErrKeyExists)
}

// run finishes a sealed pack left by a previous leader, then packs.
func (l *leader) run(ctx context.Context) error {
	if err := l.load(ctx); err != nil {
		return err
	}
	if l.st.Sealed != nil {
		l.log.Info().Str("pack", l.st.Sealed.Key).Msg("finishing a pack sealed by a previous leader")
		if err := l.finish(ctx); err != nil {
			return err
		}
	}
	cons, err := l.p.d.JS.OrderedConsumer(ctx, stream.Packs, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{l.g.subject()}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: l.st.Next,
	})
	if err != nil {
		return fmt.Errorf("read pack group: %w", err)
	}
	// The subject is read ahead while the leader claims and writes.
	rd, err := readAhead(ctx, cons)
	if err != nil {
		return err
	}
	defer rd.stop()
	next := l.st.next() // the position after the last item handled
	var last uint64     // the last stage message read
	for {
		wait := time.Second
		if l.open != nil {
			wait = max(min(wait, time.Until(l.open.deadline)), 0)
		}
		msgs, more, err := rd.take(ctx, max(wait, 10*time.Millisecond))
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		items, err := l.read(msgs, next, pos{Seq: ^uint64(0)})
		if err != nil {
			return err
		}
		taken, err := l.claimItems(ctx, items)
		if err != nil {
			return err
		}
		copies := 0
		for i, it := range items {
			if !taken[i] {
				copies++
				continue
			}
			if err := l.add(ctx, it); err != nil {
				return err
			}
		}
		if n := len(msgs); n > 0 {
			md, err := msgs[n-1].Metadata()
			if err != nil {
				return fmt.Errorf("stage message metadata: %w", err)
			}
			last, next = md.Sequence.Stream, pos{Seq: md.Sequence.Stream + 1}
		}
		// An overdue pack takes the group's backlog first (a full read
		// means more is waiting): after a takeover or a stall it closes
		// once caught up, not one read at a time.
		if copies > 0 {
			l.p.count(func(s *Stats) { s.Duplicates += int64(copies) })
			l.log.Info().Int("copies", copies).Msg("skipped items whose custom_id is already claimed (republished or refused before)")
		}
		if l.open != nil && (l.open.count >= l.lim.requests || !time.Now().Before(l.open.deadline) && !more) {
			if err := l.seal(ctx, next, last); err != nil {
				return err
			}
		}
	}
}

// reader reads a group's subject ahead of its leader.
type reader struct {
	msgs chan jetstream.Msg
	errs chan error
	done chan struct{}
	it   jetstream.MessagesContext
}

func readAhead(ctx context.Context, cons jetstream.Consumer) (*reader, error) {
	it, err := cons.Messages(jetstream.PullMaxMessagesWithBytesLimit(fetchBatch, fetchBytes))
	if err != nil {
		return nil, fmt.Errorf("read pack group: %w", err)
	}
	r := &reader{msgs: make(chan jetstream.Msg, fetchBatch), errs: make(chan error, 1), done: make(chan struct{}), it: it}
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					r.errs <- fmt.Errorf("read pack group: %w", err)
				}
				return
			}
			select {
			case r.msgs <- m:
			case <-r.done:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return r, nil
}

func (r *reader) stop() {
	r.it.Stop()
	close(r.done)
}

// take returns up to fetchBatch messages read, waiting at most wait for
// the first; more reports whether others are waiting already.
func (r *reader) take(ctx context.Context, wait time.Duration) (msgs []jetstream.Msg, more bool, err error) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case m := <-r.msgs:
		msgs = append(msgs, m)
	case err := <-r.errs:
		return nil, false, err
	case <-t.C:
		return nil, false, nil
	case <-ctx.Done():
		return nil, false, ctx.Err()
	}
	for len(msgs) < fetchBatch {
		select {
		case m := <-r.msgs:
			msgs = append(msgs, m)
			continue
		default:
		}
		break
	}
	return msgs, len(r.msgs) > 0, nil
}

// item is one item of a chunk read back.
type item struct {
	at     pos
	id     string
	tokens int64
	line   []byte
	side   []byte
	staged time.Time
}

// read returns the items of stage messages at positions in [from, to).
// A malformed message (never written by this version's stage) is logged
// and skipped: nothing could pack it.
func (l *leader) read(msgs []jetstream.Msg, from, to pos) ([]item, error) {
	var items []item
	for _, m := range msgs {
		md, err := m.Metadata()
		if err != nil {
			return nil, fmt.Errorf("stage message metadata: %w", err)
		}
		c, err := parseChunk(m.Headers(), m.Data())
		if err != nil {
			l.log.Error().Err(err).Uint64("seq", md.Sequence.Stream).Msg("stage message skipped")
			continue
		}
		for i, id := range c.ids {
			at := pos{Seq: md.Sequence.Stream, Idx: i}
			if at.less(from) || !at.less(to) {
				continue
			}
			items = append(items, item{at: at, id: id, tokens: c.tokens[i], line: c.lines[i], side: c.sides[i], staged: md.Timestamp})
		}
	}
	return items, nil
}

func (l *leader) claimItems(ctx context.Context, items []item) ([]bool, error) {
	ids := make([]string, len(items))
	at := make([]pos, len(items))
	for i, it := range items {
		ids[i], at[i] = it.id, it.at
	}
	return l.p.claims.claim(ctx, ids, at)
}

// fetch reads up to fetchBatch messages and fetchBytes, waiting at most
// wait for the first. (FetchBytes alone would size its buffers for a
// million messages.)
func fetch(c jetstream.Consumer, wait time.Duration) ([]jetstream.Msg, error) {
	b, err := c.Fetch(fetchBatch, jetstream.FetchMaxWait(wait), jetstream.FetchMaxBytes(fetchBytes))
	if err != nil {
		return nil, fmt.Errorf("read pack group: %w", err)
	}
	var msgs []jetstream.Msg
	for m := range b.Messages() {
		msgs = append(msgs, m)
	}
	if err := b.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
		return msgs, fmt.Errorf("read pack group: %w", err)
	}
	return msgs, nil
}

// add puts one taken item into the open pack, sealing the open pack first
// when the item would take it over a bound.
func (l *leader) add(ctx context.Context, it item) error {
	n := int64(len(it.line)) + 1
	if o := l.open; o != nil && (o.count+1 > l.lim.requests || o.bytes+n > l.lim.bytes ||
		(o.budget > 0 && o.tokens+it.tokens > o.budget)) {
		if err := l.seal(ctx, it.at, it.at.Seq); err != nil {
			return err
		}
	}
	if l.open == nil {
		if err := l.start(ctx, it.at, it.staged); err != nil {
			return err
		}
	}
	o := l.open
	if err := writeItem(o.lw, o.sw, it); err != nil {
		return err
	}
	o.count++
	o.bytes += n
	o.tokens += it.tokens
	return nil
}

// writeItem appends an item's line to a pack input and its sidecar line
// to the sidecar.
func writeItem(lw, sw *bufio.Writer, it item) error {
	if _, err := lw.Write(it.line); err != nil {
		return fmt.Errorf("write pack input: %w", err)
	}
	_ = lw.WriteByte('\n')
	_, _ = sw.Write(it.side)
	if err := sw.WriteByte('\n'); err != nil {
		return fmt.Errorf("write pack sidecar: %w", err)
	}
	return nil
}

// start opens a pack whose first item has stage sequence first.
func (l *leader) start(ctx context.Context, first pos, staged time.Time) error {
	o, err := newOpenPack(l.g.packKey(first), first)
	if err != nil {
		return err
	}
	o.deadline = staged.Add(l.p.cfg.MaxAge)
	if l.lim.tokens > 0 {
		o.budget = l.lim.tokens
		if l.p.d.Reserved != nil {
			used, err := l.p.d.Reserved.ReservedTokens(ctx, l.g.Model)
			if err != nil {
				l.log.Warn().Err(err).Msg("read reserved tokens: packing to the whole budget")
			}
			// A pack never plans for less than a tenth of the budget: it
			// waits for admission rather than splitting into tiny packs.
			o.budget = max(l.lim.tokens-used, l.lim.tokens/10)
		}
	}
	l.open = o
	return nil
}

// seal closes the open pack before position end (every item before it
// has been handled; last is the stage message read last), records the
// range, then finishes it.
func (l *leader) seal(ctx context.Context, end pos, last uint64) error {
	o := l.open
	l.st.Sealed = &sealed{Key: o.key, First: o.first.Seq, FirstIndex: o.first.Idx, End: end.Seq, EndIndex: end.Idx, Last: last,
		Count: o.count, Bytes: o.bytes, Tokens: o.tokens, At: l.p.d.Now().UTC()}
	if err := l.save(ctx); err != nil {
		return err
	}
	failpoint.Hit("pack/after-seal")
	return l.finish(ctx)
}

// finish stores the sealed pack's input and sidecar, publishes its job,
// advances the state past it and drops its stage messages.
func (l *leader) finish(ctx context.Context) error {
	s := l.st.Sealed
	if l.open == nil || l.open.key != s.Key {
		l.discard()
		if err := l.rebuild(ctx, s); err != nil {
			return err
		}
	}
	o := l.open
	for _, w := range []*bufio.Writer{o.lw, o.sw} {
		if err := w.Flush(); err != nil {
			return fmt.Errorf("write pack files: %w", err)
		}
	}
	st := l.p.d.Store
	if err := putFile(ctx, st, SidecarName(s.Key), o.side); err != nil {
		return err
	}
	if err := putFile(ctx, st, s.Key, o.lines); err != nil {
		return err
	}
	req := contract.Request{IdempotencyKey: s.Key, Endpoint: l.g.Endpoint, InputObject: s.Key,
		CompletionWindow: l.p.cfg.CompletionWindow,
		Metadata:         map[string]string{"pack_items": strconv.Itoa(s.Count), "pack_group": l.g.ID()}}
	if l.g.Provider != contract.ProviderOpenAI {
		req.Provider = l.g.Provider
	}
	if _, err := stream.Publish(ctx, l.p.d.JS, contract.SubjectRequests, req, stream.WithMsgID(s.Key)); err != nil {
		return fmt.Errorf("publish pack %s: %w", s.Key, err)
	}
	failpoint.Hit("pack/after-publish")
	l.st.Next, l.st.NextIndex, l.st.Sealed = s.End, s.EndIndex, nil
	l.st.Packs++
	if err := l.save(ctx); err != nil {
		return err
	}
	l.discard()
	l.p.count(func(st *Stats) { st.Packs++; st.Packed += int64(s.Count) })
	l.log.Info().Str("pack", s.Key).Int("items", s.Count).Int64("bytes", s.Bytes).Int64("tokens", s.Tokens).
		Stringer("first", s.first()).Stringer("end", s.end()).Msg("pack closed and published")
	if err := l.purge(ctx, s.End); err != nil {
		l.log.Warn().Err(err).Msg("drop packed stage messages (they expire with the stream's max age)")
	}
	return nil
}

func putFile(ctx context.Context, st *jobstore.Store, name string, f *os.File) error {
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("rewind %s: %w", f.Name(), err)
	}
	if _, err := st.PutObject(ctx, jobstore.BucketIntake, name, bufio.NewReaderSize(f, 256<<10)); err != nil {
		return err
	}
	return nil
}

// purge drops the group's stage messages below next.
func (l *leader) purge(ctx context.Context, next uint64) error {
	s, err := l.p.d.JS.Stream(ctx, stream.Packs)
	if err != nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject(l.g.subject()), jetstream.WithPurgeSequence(next))
}

// rebuild makes the sealed pack's files again from its stage range: the
// items whose claim holds their own position, in stage order (the same
// lines, in the same order, as the leader that sealed it wrote).
func (l *leader) rebuild(ctx context.Context, s *sealed) error {
	cons, err := l.p.d.JS.OrderedConsumer(ctx, stream.Packs, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{l.g.subject()}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: s.First,
	})
	if err != nil {
		return fmt.Errorf("read sealed pack %s: %w", s.Key, err)
	}
	o, err := newOpenPack(s.Key, s.first())
	if err != nil {
		return err
	}
	l.open = o
	for done := false; !done; {
		msgs, err := fetch(cons, 2*time.Second)
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return fmt.Errorf("sealed pack %s: stage messages up to %d are missing", s.Key, s.Last)
		}
		md, err := msgs[len(msgs)-1].Metadata()
		if err != nil {
			return fmt.Errorf("stage message metadata: %w", err)
		}
		done = md.Sequence.Stream >= s.Last
		items, err := l.read(msgs, s.first(), s.end())
		if err != nil {
			return err
		}
		taken, err := l.claimItems(ctx, items)
		if err != nil {
			return err
		}
		for i, it := range items {
			if taken[i] {
				if err := writeItem(o.lw, o.sw, it); err != nil {
					return err
				}
				o.count++
			}
		}
	}
	if o.count != s.Count {
		l.log.Warn().Str("pack", s.Key).Int("sealed", s.Count).Int("rebuilt", o.count).Msg("a rebuilt pack differs in size from its seal")
	}
	return nil
}
