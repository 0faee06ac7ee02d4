package emulator

import (
	"bytes"
	"io"
	"slices"
)

// content is a file's bytes, held once, in blocks that are filled and
// never reallocated. An upload of known length is one block; an output
// file grows line by line into new blocks, so building a 100 MB output file
// never copies what it already holds, nor does storing it.
type content struct {
	blocks [][]byte
	size   int64
}

// New blocks double with the content, from minBlock up to maxBlock: a
// one-line file stays small and a large one reserves at most one partly
// filled block beyond its size.
const (
	minBlock = 1 << 10
	maxBlock = 4 << 20
)

func contentOf(b []byte) content {
	if len(b) == 0 {
		return content{}
	}
	return content{blocks: [][]byte{b}, size: int64(len(b))}
}

// Write appends p; it never fails.
func (c *content) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		free := c.free()
		if len(free) == 0 {
			c.grow(min(maxBlock, max(minBlock, c.size)))
			continue
		}
		m := copy(free, p)
		c.filled(m)
		p = p[m:]
	}
	return n, nil
}

// free is the unused capacity of the last block.
func (c *content) free() []byte {
	if len(c.blocks) == 0 {
		return nil
	}
	last := c.blocks[len(c.blocks)-1]
	return last[len(last):cap(last)]
}

// filled accounts for n bytes written into free().
func (c *content) filled(n int) {
	last := &c.blocks[len(c.blocks)-1]
	*last = (*last)[:len(*last)+n]
	c.size += int64(n)
}

func (c *content) grow(size int64) {
	c.blocks = append(c.blocks, make([]byte, 0, size))
}

// trim drops the unused tail of the last block when it is more than an
// eighth of the block, copying at most one block.
func (c *content) trim() {
	if len(c.blocks) == 0 {
		return
	}
	last := &c.blocks[len(c.blocks)-1]
	if cap(*last)-len(*last) > len(*last)/8 {
		*last = slices.Clip(append(make([]byte, 0, len(*last)), *last...))
	}
}

// bytes returns the content as one slice, joining its blocks.
func (c *content) bytes() []byte {
	if len(c.blocks) == 1 {
		return c.blocks[0]
	}
	return slices.Concat(c.blocks...)
}

// writeTo writes the content to w block by block.
func (c *content) writeTo(w io.Writer) error {
	for _, b := range c.blocks {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// readContent reads r to its end, stopping with tooLarge once r holds more
// than limit bytes. sizeHint, the most r can hold when known (the request's
// Content-Length) or -1, sizes one block up front, so a known length is read
// without growing or copying anything. An unknown length is read into
// doubling blocks, kept as they are: each new block takes over the
// unfinished last line of the one before, so every line lies in one block
// and the input parser walks them in place.
func readContent(r io.Reader, sizeHint, limit int64) (c content, tooLarge bool, err error) {
	if sizeHint >= 0 {
		c.grow(min(sizeHint, limit) + 1) // +1: room to see the end, or one byte too many
	}
	for {
		if len(c.free()) == 0 {
			c.growAtLine()
		}
		n, err := r.Read(c.free())
		c.filled(n)
		if c.size > limit {
			return content{}, true, nil
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return content{}, false, err
		}
	}
	c.trim()
	if c.size == 0 {
		return content{}, false, nil
	}
	return c, false, nil
}

// growAtLine starts a new block and moves the unfinished last line of the
// full last block into it; a block that holds no line end is replaced by
// one twice its size.
func (c *content) growAtLine() {
	size := min(maxBlock, max(minBlock, c.size))
	if len(c.blocks) == 0 {
		c.grow(size)
		return
	}
	last := &c.blocks[len(c.blocks)-1]
	cut := bytes.LastIndexByte(*last, '\n') + 1
	tail := (*last)[cut:]
	next := append(make([]byte, 0, max(size, 2*int64(len(tail)))), tail...)
	if cut == 0 {
		*last = next
		return
	}
	*last = (*last)[:cut:cut]
	c.blocks = append(c.blocks, next)
}

// eachLine calls fn with every line of c and its offset, until fn returns
// false. Lines are split at '\n' as bytes.Split splits them: a trailing
// '\n' is followed by an empty line. Lines must not cross blocks, which
// readContent ensures.
func (c *content) eachLine(fn func(line []byte, off int64) bool) {
	var off int64
	for k, b := range c.blocks {
		for {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				break
			}
			if !fn(b[:i], off) {
				return
			}
			b, off = b[i+1:], off+int64(i+1)
		}
		if k == len(c.blocks)-1 {
			fn(b, off)
			return
		}
		off += int64(len(b)) // empty: blocks end at a line end
	}
	fn(nil, 0) // no blocks: one empty line
}

// slice returns c's bytes [v.start, v.end), which lie in one block.
func (c *content) slice(v span) []byte {
	var base int
	for _, b := range c.blocks {
		if v.start < base+len(b) {
			return b[v.start-base : v.end-base]
		}
		base += len(b)
	}
	return nil
}
