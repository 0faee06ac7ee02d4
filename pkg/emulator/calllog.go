package emulator

import (
	"maps"
	"sync"
	"time"
)

// Call is one logged /v1 call. Times are wall-clock (not Clock) so tests can
// check real overlap of concurrent calls; they marshal as RFC3339Nano.
type Call struct {
	Method  string `json:"method"`
	Path    string `json:"path"`
	Op      string `json:"op"`
	BatchID string `json:"batch_id,omitempty"`
	// Status is the HTTP status answered: 0 for a create dropped after the
	// fact (DropAfterCreateRate), 499 for a client that gave up during Latency.
	Status    int       `json:"status"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
}

// callLog is a bounded ring of calls plus per-operation counters.
type callLog struct {
	mu     sync.Mutex
	ring   []Call
	next   int
	full   bool
	counts map[string]int64
}

func newCallLog(size int) *callLog {
	return &callLog{ring: make([]Call, size), counts: map[string]int64{}}
}

func (l *callLog) add(c *call, ended time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.counts[c.op]++
	if len(l.ring) == 0 {
		return
	}
	l.ring[l.next] = Call{
		Method: c.r.Method, Path: c.r.URL.Path, Op: c.op, BatchID: c.batchID,
		Status: c.status, StartedAt: c.started, EndedAt: ended,
	}
	l.next = (l.next + 1) % len(l.ring)
	if l.next == 0 {
		l.full = true
	}
}

func (l *callLog) list(batchID string) []Call {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ordered []Call
	if l.full {
		ordered = append(ordered, l.ring[l.next:]...)
	}
	ordered = append(ordered, l.ring[:l.next]...)
	out := make([]Call, 0, len(ordered))
	for _, c := range ordered {
		if batchID == "" || c.BatchID == batchID {
			out = append(out, c)
		}
	}
	return out
}

func (l *callLog) byOp() map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.counts)
}

func (l *callLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.ring)
	l.next, l.full = 0, false
	clear(l.counts)
}
