package pack

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
)

// A stage message carries a chunk: the items of one group that one stage
// batch checked, in batch.items order. Packing cost per item is then one
// consume and acknowledgement of batch.items and one claim; the stage
// write and the leader's read are shared by the chunk.
//
// Its data is the items' vendor input lines, then their sidecar lines
// ({"custom_id","metadata"}), each ending in '\n'; neither holds a line
// break (the input line's body is compacted, the sidecar is marshalled).
// Headers carry what the leader needs without parsing a line: the
// custom_ids and the token estimates, comma-separated in item order.
//
// An item is addressed by its position: the chunk's stream sequence and
// its index in the chunk.

// Chunk headers (internal).
const (
	headerChunk  = "Batchfleet-Chunk" // the format's version
	headerIDs    = "Batchfleet-Items"
	headerTokens = "Batchfleet-Tokens"

	chunkVersion = "1"
)

// chunkOverhead is what a chunk may hold beyond its lines and ids: the
// headers' names and the protocol's framing.
const chunkOverhead = 512

// staged is one checked item on its way into a chunk.
type staged struct {
	id     string
	tokens int64
	line   []byte // the vendor input line, without '\n'
	side   []byte // the sidecar line, without '\n'
}

// size is what the item adds to a chunk.
func (s staged) size() int {
	return len(s.line) + len(s.side) + 2 + len(s.id) + 1 + 21
}

// sidecarLine is an item's line in a pack's sidecar.
func sidecarLine(id string, meta map[string]string) []byte {
	b := make([]byte, 0, len(id)+32)
	b = append(b, `{"custom_id":`...)
	b = strconv.AppendQuote(b, id) // custom_ids are [A-Za-z0-9_-]: Go and JSON quoting agree
	if len(meta) > 0 {
		m, _ := json.Marshal(meta)
		b = append(b, `,"metadata":`...)
		b = append(b, m...)
	}
	return append(b, '}')
}

// chunkMsg is the stage message of items (all of one group), which fit
// in a message.
func chunkMsg(subject string, items []staged) *nats.Msg {
	n := 0
	for _, it := range items {
		n += len(it.line) + len(it.side) + 2
	}
	data := make([]byte, 0, n)
	for _, it := range items {
		data = append(append(data, it.line...), '\n')
	}
	for _, it := range items {
		data = append(append(data, it.side...), '\n')
	}
	ids := make([]string, len(items))
	toks := make([]byte, 0, 8*len(items))
	for i, it := range items {
		ids[i] = it.id
		if i > 0 {
			toks = append(toks, ',')
		}
		toks = strconv.AppendInt(toks, it.tokens, 10)
	}
	return &nats.Msg{Subject: subject, Data: data, Header: nats.Header{
		headerChunk: {chunkVersion}, headerIDs: {strings.Join(ids, ",")}, headerTokens: {string(toks)},
	}}
}

// splitChunks cuts a group's items into chunks of at most max bytes each
// (an item larger than max alone makes a chunk: the caller checked it
// fits in a message).
func splitChunks(items []staged, max int) [][]staged {
	var out [][]staged
	start, size := 0, chunkOverhead
	for i, it := range items {
		if i > start && size+it.size() > max {
			out = append(out, items[start:i])
			start, size = i, chunkOverhead
		}
		size += it.size()
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// chunk is a stage message read back.
type chunk struct {
	ids    []string
	tokens []int64
	lines  [][]byte // input lines, without '\n'; they alias the message's data
	sides  [][]byte // sidecar lines, without '\n'
}

var errChunk = errors.New("pack: malformed stage message")

// parseChunk reads a stage message.
func parseChunk(h nats.Header, data []byte) (chunk, error) {
	var c chunk
	if v := h.Get(headerChunk); v != chunkVersion {
		return c, fmt.Errorf("%w: format %q, this packer reads %q", errChunk, v, chunkVersion)
	}
	c.ids = strings.Split(h.Get(headerIDs), ",")
	toks := strings.Split(h.Get(headerTokens), ",")
	n := len(c.ids)
	if len(toks) != n {
		return c, fmt.Errorf("%w: %d custom_ids, %d token counts", errChunk, n, len(toks))
	}
	c.tokens = make([]int64, n)
	for i, t := range toks {
		var err error
		if c.tokens[i], err = strconv.ParseInt(t, 10, 64); err != nil {
			return c, fmt.Errorf("%w: token count %q", errChunk, t)
		}
	}
	lines := make([][]byte, 0, 2*n)
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			return c, fmt.Errorf("%w: the last line has no end", errChunk)
		}
		lines = append(lines, data[:i:i])
		data = data[i+1:]
	}
	if len(lines) != 2*n {
		return c, fmt.Errorf("%w: %d lines for %d items", errChunk, len(lines), n)
	}
	c.lines, c.sides = lines[:n], lines[n:]
	return c, nil
}
