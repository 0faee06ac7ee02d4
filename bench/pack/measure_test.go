package packbench

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Item and event shapes.
const (
	// itemBytes is the length of a batch.items message.
	itemBytes = 300
	// eventBytes is the length of a bare-publish message, about a
	// batch.item.completed of a short chat answer.
	eventBytes = 400
)

// models alternate over the items: two pack groups.
var models = []string{"gpt-4o-mini", "gpt-4o"}

// customID is the custom_id of item i (1-based).
func customID(i int) string { return fmt.Sprintf("b-%06d", i) }

const filler = " lorem ipsum dolor sit amet consectetur adipiscing elit"

// pad returns s padded with filler, or cut, to n bytes.
func pad(s string, n int) string {
	for len(s) < n {
		s += filler
	}
	return s[:max(n, 0)]
}

// itemJSON is batch.items message i (1-based), itemBytes long: a chat
// request to model with metadata {"i": "<i>"}.
func itemJSON(i int, model string) []byte {
	head := fmt.Sprintf(`{"custom_id":%q,"body":{"model":%q,"messages":[{"role":"user","content":"`, customID(i), model)
	tail := fmt.Sprintf(`"}]},"metadata":{"i":"%d"}}`, i)
	content := pad(fmt.Sprintf("question %d:", i), itemBytes-len(head)-len(tail))
	return []byte(head + content + tail)
}

// vendorLine is an OpenAI batch output line answering item i.
func vendorLine(i int) []byte {
	return fmt.Appendf(nil, `{"id":"batch_req_%06d","custom_id":%q,"response":{"status_code":200,"request_id":"req_%06d","body":{"id":"chatcmpl-%06d","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}},"error":null}`,
		i, customID(i), i, i)
}

// sidecarLine is item i's line in a pack's items sidecar.
func sidecarLine(i int) []byte {
	return fmt.Appendf(nil, `{"custom_id":%q,"metadata":{"i":"%d"}}`+"\n", customID(i), i)
}

// eventJSON is a bare-publish message for item i, eventBytes long.
func eventJSON(i int) []byte {
	head := fmt.Sprintf(`{"custom_id":%q,"outcome":"succeeded","response":{"status_code":200,"body":{"object":"chat.completion","content":"`, customID(i))
	tail := fmt.Sprintf(`"}},"job_key":"pack-bench","batch_id":"batch_x","metadata":{"i":"%d"}}`, i)
	return []byte(head + pad("answer", eventBytes-len(head)-len(tail)) + tail)
}

// heapSampler records the peak HeapInuse while it runs, and the peak
// live heap allocated outside the embedded NATS server's code.
type heapSampler struct {
	base, peak         uint64 // HeapInuse
	clientBase, client uint64 // live heap outside the server, at the last GC
	stop               chan struct{}
	done               chan struct{}
}

// serverPkg prefixes the functions of the embedded NATS server.
const serverPkg = "github.com/nats-io/nats-server/"

// sampleHeap collects garbage, reads the heap in use as the base, then
// samples it every interval until Stop; the heap profile is read every
// profileEvery.
func sampleHeap(interval, profileEvery time.Duration) *heapSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	pr := newProfileReader()
	h := &heapSampler{base: ms.HeapInuse, peak: ms.HeapInuse, stop: make(chan struct{}), done: make(chan struct{})}
	h.clientBase = pr.liveOutside(serverPkg)
	h.client = h.clientBase
	go func() {
		defer close(h.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		p := time.NewTicker(profileEvery)
		defer p.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				runtime.ReadMemStats(&ms)
				h.peak = max(h.peak, ms.HeapInuse)
			case <-p.C:
				h.client = max(h.client, pr.liveOutside(serverPkg))
			}
		}
	}()
	return h
}

// Stop ends the sampling and returns the peaks above the base, in bytes:
// HeapInuse, and the live heap allocated outside the server.
func (h *heapSampler) Stop() (heap, client uint64) {
	close(h.stop)
	<-h.done
	return h.peak - h.base, h.client - min(h.clientBase, h.client)
}

// profileReader sums the heap profile (runtime.MemProfile: the live heap
// as of the last completed GC, sampled every runtime.MemProfileRate bytes)
// by whether an allocation's stack runs through a package.
type profileReader struct {
	recs []runtime.MemProfileRecord
	in   map[uintptr]string // function of each PC seen
}

func newProfileReader() *profileReader { return &profileReader{in: map[uintptr]string{}} }

// liveOutside estimates the live bytes of allocations whose stack has no
// function of pkg (a prefix), unsampled as pprof does.
func (p *profileReader) liveOutside(pkg string) uint64 {
	n, _ := runtime.MemProfile(nil, false)
	for {
		p.recs = slices.Grow(p.recs[:0], n+50)[:n+50]
		var ok bool
		if n, ok = runtime.MemProfile(p.recs, false); ok {
			break
		}
	}
	rate := float64(runtime.MemProfileRate)
	var sum float64
	for _, r := range p.recs[:n] {
		if r.InUseBytes() == 0 || p.through(r.Stack(), pkg) {
			continue
		}
		sum += float64(r.InUseBytes()) * unsample(r.InUseBytes(), r.InUseObjects(), rate)
	}
	return uint64(sum)
}

// through reports whether a stack runs through a function of pkg.
func (p *profileReader) through(stack []uintptr, pkg string) bool {
	for _, pc := range stack {
		fn, ok := p.in[pc]
		if !ok {
			if f := runtime.FuncForPC(pc - 1); f != nil { // pc is a return address
				fn = f.Name()
			}
			p.in[pc] = fn
		}
		if strings.HasPrefix(fn, pkg) {
			return true
		}
	}
	return false
}

// unsample is the factor by which a heap profile record's sampled bytes
// are scaled to the allocations they stand for (pprof's scaleHeapSample).
func unsample(bytes, objects int64, rate float64) float64 {
	if objects == 0 || bytes == 0 || rate <= 1 {
		return 1
	}
	avg := float64(bytes) / float64(objects)
	return 1 / (1 - math.Exp(-avg/rate))
}

// cpuTime is this process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure is a timed run over n items or messages.
type measure struct {
	n       int
	elapsed time.Duration
	cpu     time.Duration
}

// timer starts a measure of n; its func ends it.
func timer(n int) func() measure {
	t0, c0 := time.Now(), cpuTime()
	return func() measure { return measure{n: n, elapsed: time.Since(t0), cpu: cpuTime() - c0} }
}

func (m measure) rate() float64 {
	if m.elapsed <= 0 {
		return 0
	}
	return float64(m.n) / m.elapsed.Seconds()
}

// cpuPerItem is the CPU per item, "-" when unmeasured.
func (m measure) cpuPerItem() string {
	if m.n == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", float64(m.cpu)/float64(m.n)/float64(time.Microsecond))
}

// verdict says whether a figure meets its target, for the table.
func verdict(ok bool) string {
	if ok {
		return "target met"
	}
	return "NOT met"
}

// thousands formats n with comma separators.
func thousands(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func mib(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v, ok := os.LookupEnv(name)
	if !ok || v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		b.Fatalf("%s must be an integer of at least 2, got %q", name, v)
	}
	return n
}
