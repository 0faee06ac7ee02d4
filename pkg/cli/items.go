package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"
	"github.com/tidwall/gjson"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/ops"
	"github.com/batchfleet/batchfleet/pkg/results"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

const (
	// itemsWindow bounds the batch.items publishes awaiting their ack.
	itemsWindow = 512
	// itemAckTimeout fails a publish whose ack does not come.
	itemAckTimeout = 30 * time.Second
	// itemHeaderMargin leaves room in a NATS message for the headers.
	itemHeaderMargin = 1 << 10
	// itemsClockMargin is how far before now the events are read at least,
	// so that a client clock ahead of the server's misses no event of the
	// run (JetStream stamps messages with the server's clock).
	itemsClockMargin = time.Minute
	// itemsMissingShown is how many missing custom_ids an error names.
	itemsMissingShown = 5
)

// itemFields are the fields of a line of an items file (contract.Item).
var itemFields = []string{"custom_id", "provider", "endpoint", "body", "metadata"}

func (e *env) itemsCmd() *cobra.Command {
	c := &cobra.Command{Use: "items", Short: "Single requests (batch.items): publish a file of items and await their batch.item.completed"}
	c.AddCommand(e.itemsPublishCmd())
	return c
}

func (e *env) itemsPublishCmd() *cobra.Command {
	var o output
	var wait bool
	var timeout time.Duration
	since := "24h"
	c := &cobra.Command{
		Use:   "publish [--wait] FILE.jsonl",
		Short: "Publish a JSONL file of single requests to batch.items, one message per line; --wait prints their batch.item.completed",
		Long: `Publish a JSONL file of single requests ("-" reads stdin): one item per line,
{"custom_id", "body"} plus optional "provider", "endpoint" and "metadata", as on batch.items.
Every line is checked first by the contract's rules (custom_id of [A-Za-z0-9_-]{1,64}, unique in
the file; body an object with "model"; provider, endpoint, metadata) and the whole file is refused,
before anything is sent, when a line breaks one. Each item then goes to batch.items as its own
message (with its defaults applied) under Nats-Msg-Id = its custom_id, up to 512 awaiting their
ack at once. It prints "published N items" on stderr, or {"published": N, "duplicates": D} on
stdout with -o json (duplicates: items the stream already had within its duplicate window).

With --wait, stdout gets the batch.item.completed of each of the file's custom_ids, one JSON line
each, as it arrives, and the command ends when all are in (a summary of the outcomes on stderr).
The fleet answers a custom_id only once: an item published again after it completed gets no new
event. So --wait also reads the events of the last --since (24h by default, at most the fleet's
EVENTS_MAX_AGE) and counts an item completed earlier as in; an item that completed before --since
is awaited until --timeout. --timeout 0 waits until all are in or Ctrl-C. With --wait, stdout
carries only the events (whatever -o says) and the exit status is 1 unless all came in.`,
		Example: `  batchfleet items publish items.jsonl
  batchfleet items publish --wait --timeout 2h items.jsonl > completed.jsonl
  producer | batchfleet items publish --wait -`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("items publish takes one FILE.jsonl (- for stdin)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if !wait {
				for _, f := range []string{"since", "timeout"} {
					if cmd.Flags().Changed(f) {
						return fmt.Errorf("--%s applies only with --wait", f)
					}
				}
			}
			from, err := ops.ParseSince(since, e.now())
			if err != nil {
				return err
			}
			p := &itemsRun{env: e, wait: wait, json: o.json(), timeout: timeout, since: from}
			return p.run(cmd.Context(), args[0], cmd.InOrStdin())
		},
	}
	o.add(c)
	c.Flags().BoolVar(&wait, "wait", false, "print the batch.item.completed of every item (JSON lines) and end when all are in")
	c.Flags().DurationVar(&timeout, "timeout", 0, "how long --wait waits after publishing (0: no limit)")
	c.Flags().StringVar(&since, "since", since, "--wait counts the events since then (24h, 7d or RFC 3339): items completed before this run")
	return c
}

// itemsRun is one run of items publish.
type itemsRun struct {
	*env
	wait    bool
	json    bool
	timeout time.Duration
	since   time.Time // look-back of --wait (zero: the whole events stream)
}

// itemsFile is what checking a file keeps: its custom_ids, not its bodies.
type itemsFile struct {
	name  string         // for messages: the path, or "stdin"
	path  string         // the file read twice (stdin is copied to a temporary file)
	lines map[string]int // custom_id → line
	count int            // items
	// largest is the size of the largest item as published, on line largestLine.
	largest, largestLine int
}

func (p *itemsRun) run(ctx context.Context, path string, stdin io.Reader) error {
	f, cleanup, err := readItemsFile(path, stdin)
	defer cleanup()
	if err != nil {
		return err
	}
	nc, js, err := p.connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	if limit := int(nc.MaxPayload()) - itemHeaderMargin; f.largest > limit {
		return fmt.Errorf("%s: line %d: the item is %d bytes as published; this server's messages take at most %d (max_payload %d less %d for headers)",
			f.name, f.largestLine, f.largest, limit, nc.MaxPayload(), itemHeaderMargin)
	}
	streams := []string{stream.Items}
	if p.wait {
		streams = append(streams, stream.Events)
	}
	if err := stream.EnsureMissing(ctx, js, stream.Settings{}, streams...); err != nil {
		return err
	}
	var w *itemsWaiter
	if p.wait {
		// Before publishing, so that no event of this run is missed.
		if w, err = p.watch(ctx, js, f); err != nil {
			return err
		}
		defer w.stop()
	}
	pjs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*itemsWindow), jetstream.WithPublishAsyncTimeout(itemAckTimeout))
	if err != nil {
		return err
	}
	dups, err := publishItems(ctx, pjs, f)
	if err != nil {
		return err
	}
	n := f.count
	if p.json && !p.wait {
		return writeJSON(p.out, struct {
			Published  int `json:"published"`
			Duplicates int `json:"duplicates"`
		}{n, dups})
	}
	fmt.Fprintf(p.errOut, "published %d items to %s%s\n", n, contract.SubjectItems, dupNote(dups))
	if !p.wait {
		return nil
	}
	return p.await(ctx, w, f)
}

func dupNote(dups int) string {
	if dups == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d already on the stream within its duplicate window, not queued again)", dups)
}

// readItemsFile checks the items file at path ("-": stdin, copied to a
// temporary file that cleanup removes) and returns its custom_ids.
func readItemsFile(path string, stdin io.Reader) (f *itemsFile, cleanup func(), err error) {
	cleanup = func() {}
	f = &itemsFile{name: path, path: path, lines: map[string]int{}}
	if path == "-" {
		f.name = "stdin"
		tmp, err := os.CreateTemp("", "batchfleet-items-*.jsonl")
		if err != nil {
			return nil, cleanup, err
		}
		f.path = tmp.Name()
		cleanup = func() { os.Remove(tmp.Name()) }
		_, err = io.Copy(tmp, stdin)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, cleanup, fmt.Errorf("read stdin: %w", err)
		}
	}
	in, err := os.Open(f.path)
	if err != nil {
		return nil, cleanup, err
	}
	defer in.Close()
	err = scanItems(in, func(line int, it contract.Item, data []byte) error {
		if first, dup := f.lines[it.CustomID]; dup {
			return fmt.Errorf("custom_id %q is not unique (line %d has it too)", it.CustomID, first)
		}
		f.lines[it.CustomID] = line
		f.count++
		if len(data) > f.largest {
			f.largest, f.largestLine = len(data), line
		}
		return nil
	})
	if err == nil && f.count == 0 {
		err = errors.New("the file has no items")
	}
	if err != nil {
		return nil, cleanup, fmt.Errorf("%s: %w", f.name, err)
	}
	return f, cleanup, nil
}

// scanItems reads an items file line by line (blank lines skipped), checks
// each line and calls fn with the item and its JSON as published (the
// contract's defaults applied). An error names the line and the rule.
func scanItems(r io.Reader, fn func(line int, it contract.Item, data []byte) error) error {
	return results.ScanLines(r, func(line int, b []byte) error {
		it, err := decodeItemLine(bytes.TrimSpace(b))
		if err != nil {
			return err
		}
		data, err := marshalItem(it)
		if err != nil {
			return err
		}
		return fn(line, it, data)
	})
}

// decodeItemLine decodes and validates one line as a batch.items message
// (contract.DecodeItem), refusing fields that are not the contract's too
// (the fleet would ignore them: most likely a misspelt field).
func decodeItemLine(line []byte) (contract.Item, error) {
	var fields map[string]json.RawMessage
	if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &fields) != nil {
		return contract.Item{}, fmt.Errorf(`not a JSON object {"custom_id", "body", ...}: %s`, clip(string(line), 40))
	}
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if slices.Contains(itemFields, k) {
			continue
		}
		hint := ""
		if k == "method" || k == "url" {
			hint = " (an OpenAI batch line? an item's url is its endpoint; publish a batch file with 'batchfleet publish')"
		}
		return contract.Item{}, fmt.Errorf(`unknown field %q: an item is {"custom_id", "body"} with optional "provider", "endpoint", "metadata"%s`, k, hint)
	}
	if id, ok := fields["custom_id"]; ok && len(id) > 0 && id[0] != '"' && string(id) != "null" {
		return contract.Item{}, fmt.Errorf("custom_id must be a string, got %s", clip(string(id), 40))
	}
	it, _, err := contract.DecodeItem(line)
	if err != nil {
		var ce *contract.Error
		if errors.As(err, &ce) {
			return it, errors.New(ce.Message)
		}
		return it, err
	}
	return it, nil
}

// marshalItem is an item's batch.items message: compact JSON, its body's
// strings as written (no HTML escaping).
func marshalItem(it contract.Item) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(it); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// publishItems reads the checked file again and publishes every item to
// batch.items (Nats-Msg-Id its custom_id), with up to itemsWindow awaiting
// their ack; it returns how many the stream took as duplicates. Any failed
// publish is an error.
func publishItems(ctx context.Context, js jetstream.JetStream, f *itemsFile) (dups int, err error) {
	in, err := os.Open(f.path)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	type inflight struct {
		ack  jetstream.PubAckFuture
		line int
		id   string
	}
	var queue []inflight
	acked := 0
	var first error // the first failed publish
	await := func() {
		p := queue[0]
		queue = queue[1:]
		select {
		case ack := <-p.ack.Ok():
			acked++
			if ack.Duplicate {
				dups++
			}
		case err := <-p.ack.Err():
			if first == nil {
				first = fmt.Errorf("%s: line %d: publish custom_id %q to %s: %w", f.name, p.line, p.id, contract.SubjectItems, err)
			}
		case <-ctx.Done():
		}
	}
	n := 0
	scanErr := scanItems(in, func(line int, it contract.Item, data []byte) error {
		if f.lines[it.CustomID] != line || n == f.count {
			return errors.New("the file changed since it was checked")
		}
		for len(queue) >= itemsWindow || (first != nil && len(queue) > 0) {
			await()
		}
		if first != nil {
			return first
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		ack, err := js.PublishAsync(contract.SubjectItems, data, jetstream.WithMsgID(it.CustomID), jetstream.WithExpectStream(stream.Items))
		if err != nil {
			return fmt.Errorf("publish custom_id %q to %s: %w", it.CustomID, contract.SubjectItems, err)
		}
		queue = append(queue, inflight{ack: ack, line: line, id: it.CustomID})
		n++
		return nil
	})
	for len(queue) > 0 && ctx.Err() == nil {
		await()
	}
	switch {
	case first != nil:
		err = first
	case errors.Is(ctx.Err(), context.Canceled):
		err = errors.New("interrupted")
	case ctx.Err() != nil:
		err = ctx.Err()
	case scanErr != nil:
		err = fmt.Errorf("%s: %w", f.name, scanErr)
	case n != f.count:
		err = fmt.Errorf("%s: the file changed since it was checked", f.name)
	default:
		return dups, nil
	}
	return dups, fmt.Errorf("%w: %d of %d items published (publishing the file again is safe: each custom_id is taken once)", err, acked, f.count)
}

// itemsWaiter follows batch.item.completed for the file's custom_ids.
type itemsWaiter struct {
	out   io.Writer
	start time.Time // of the run: events before it were there already
	total int
	iter  jetstream.MessagesContext
	done  chan struct{} // closed when the reader ends
	all   chan struct{} // closed when every item is in

	mu       sync.Mutex
	pending  map[string]int // custom_id → line, of the items not in yet
	outcomes map[string]int
	earlier  int   // items whose event came before the run
	err      error // why the reader ended, when not stopped
}

// watch starts reading batch.item.completed from --since (and at least
// itemsClockMargin back) for the custom_ids of f.
func (p *itemsRun) watch(ctx context.Context, js jetstream.JetStream, f *itemsFile) (*itemsWaiter, error) {
	now := p.now()
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{contract.SubjectItemCompleted}}
	if !p.since.IsZero() {
		from := now.Add(-itemsClockMargin)
		if p.since.Before(from) {
			from = p.since
		}
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &from
	}
	c, err := js.OrderedConsumer(ctx, stream.Events, cfg)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", contract.SubjectItemCompleted, err)
	}
	it, err := c.Messages()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", contract.SubjectItemCompleted, err)
	}
	w := &itemsWaiter{
		out: p.out, start: now, total: f.count, iter: it,
		done: make(chan struct{}), all: make(chan struct{}),
		pending: maps.Clone(f.lines), outcomes: map[string]int{},
	}
	go w.read()
	return w, nil
}

func (w *itemsWaiter) read() {
	defer close(w.done)
	for {
		m, err := w.iter.Next()
		if err != nil {
			if !errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				w.mu.Lock()
				w.err = fmt.Errorf("read %s: %w", contract.SubjectItemCompleted, err)
				w.mu.Unlock()
			}
			return
		}
		if err := w.take(m); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
			return
		}
	}
}

// take prints m when it is the first event of one of the file's items.
func (w *itemsWaiter) take(m jetstream.Msg) error {
	data := m.Data()
	id := gjson.GetBytes(data, "custom_id")
	if id.Type != gjson.String {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.pending[id.Str]; !ok {
		return nil // another producer's item, or a second event
	}
	delete(w.pending, id.Str)
	w.outcomes[gjson.GetBytes(data, "outcome").Str]++
	if md, err := m.Metadata(); err == nil && md.Timestamp.Before(w.start) {
		w.earlier++
	}
	line := data
	if bytes.ContainsAny(data, "\r\n") {
		var buf bytes.Buffer
		if json.Compact(&buf, data) == nil {
			line = buf.Bytes()
		}
	}
	if _, err := w.out.Write(append(slices.Clip(line), '\n')); err != nil {
		return err
	}
	if len(w.pending) == 0 {
		close(w.all)
	}
	return nil
}

// stop ends the reader and waits for it.
func (w *itemsWaiter) stop() {
	w.iter.Stop()
	<-w.done
}

// await waits until every item of f is in, --timeout passes or ctx ends,
// and prints the outcomes on stderr.
func (p *itemsRun) await(ctx context.Context, w *itemsWaiter, f *itemsFile) error {
	wctx, cancel := contextWithTimeout(ctx, p.timeout)
	defer cancel()
	var why error
	select {
	case <-w.all:
	case <-w.done:
	case <-wctx.Done():
		switch {
		case ctx.Err() != nil:
			why = errors.New("interrupted")
		default:
			why = fmt.Errorf("timed out after %s", p.timeout)
		}
	}
	w.stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	if why == nil && len(w.pending) > 0 {
		why = cmpErr(w.err, errors.New("the events ended"))
	}
	fmt.Fprintln(p.errOut, w.summary())
	if why == nil {
		return nil
	}
	missing := slices.SortedFunc(maps.Keys(w.pending), func(a, b string) int { return w.pending[a] - w.pending[b] })
	shown := strings.Join(missing[:min(len(missing), itemsMissingShown)], ", ")
	if len(missing) > itemsMissingShown {
		shown += ", …"
	}
	return fmt.Errorf("%v: %d of %d items still missing their %s (%s)", why, len(missing), w.total, contract.SubjectItemCompleted, shown)
}

// summary is "N items: X succeeded, Y failed, ..." (caller holds mu).
func (w *itemsWaiter) summary() string {
	parts := []string{
		fmt.Sprintf("%d succeeded", w.outcomes[contract.OutcomeSucceeded]),
		fmt.Sprintf("%d failed", w.outcomes[contract.OutcomeFailed]),
	}
	for _, o := range slices.Sorted(maps.Keys(w.outcomes)) {
		if o != contract.OutcomeSucceeded && o != contract.OutcomeFailed {
			parts = append(parts, fmt.Sprintf("%d %s", w.outcomes[o], cmpOr(o, "without outcome")))
		}
	}
	if len(w.pending) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing", len(w.pending)))
	}
	s := fmt.Sprintf("%d items: %s", w.total, strings.Join(parts, ", "))
	if w.earlier > 0 {
		s += fmt.Sprintf(" (%d completed before this run)", w.earlier)
	}
	return s
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}
