package batchapi

import (
	"bufio"
	"io"
)

// RequestsBodyForTest exposes the create body's JSONL-to-JSON reader.
func RequestsBodyForTest(r io.Reader) io.Reader {
	return &requestsBody{src: bufio.NewReaderSize(r, 64<<10), state: bodyStart}
}
