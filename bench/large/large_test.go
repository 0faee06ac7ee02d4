package largebench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/batchfleet/batchfleet/bench/benchfmt"
	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

// Targets of the large-job issue.
const (
	targetRSSMiB = 128 // peak RSS of the submitter and of the notifier, each
	targetRatio  = 3   // publish→completed over the raw transfer time
)

// largeTimeout bounds the wait for the large job's batch.completed.
const largeTimeout = 20 * time.Minute

// writeInput writes an OpenAI batch input file of n chat requests, each
// line lineBytes long (newline included) by padding its message content,
// and returns the file's size.
func writeInput(b *testing.B, path, prefix string, n, lineBytes int) int64 {
	b.Helper()
	file, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer file.Close()
	bw := bufio.NewWriterSize(file, 1<<20)
	const filler = " lorem ipsum dolor sit amet consectetur adipiscing elit"
	pad := strings.Repeat(filler, lineBytes/len(filler)+1)
	for i := range n {
		head := fmt.Sprintf(`{"custom_id":"%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"request %d of a large job:`, prefix, i, i)
		const tail = `"}]}}` + "\n"
		bw.WriteString(head)
		bw.WriteString(pad[:max(lineBytes-len(head)-len(tail), 0)])
		bw.WriteString(tail)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	st, err := file.Stat()
	if err != nil {
		b.Fatal(err)
	}
	return st.Size()
}

// BenchmarkLargeJob sends one job of 50,000 chat requests (~100 MB in,
// ~100 MB out) by reference through one submitter, poller and notifier
// process, and sets its publish→batch.completed time beside the raw
// transfer of the same bytes (upload the input, download an output of the
// same size through pkg/batchapi) and the processes' peak RSS.
func BenchmarkLargeJob(b *testing.B) {
	n := envInt(b, "BENCH_LARGE_REQUESTS", contract.MaxRequests)
	lineBytes := envInt(b, "BENCH_LARGE_LINE_BYTES", 2000)
	replyBytes := envInt(b, "BENCH_REPLY_BYTES", 1250)
	path := filepath.Join(b.TempDir(), "input.jsonl")
	inSize := writeInput(b, path, "large", n, lineBytes)

	f := startFleet(b, fleetOpts{emulatorEnv: append([]string{fmt.Sprintf("EMULATOR_REPLY_BYTES=%d", replyBytes)}, phases10ms...)})
	sub := f.start("submitter", 1)[0]
	pol := f.start("poller", 1)[0]
	not := f.start("notifier", 1)[0]
	done := f.completions()
	ctx := b.Context()

	// The fleet run, timed from the start of the object put.
	in, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if err := ops.PutIntake(ctx, f.js, "large-input", in); err != nil {
		b.Fatalf("put intake: %v", err)
	}
	put := time.Since(start)
	in.Close()
	data, err := json.Marshal(contract.Request{IdempotencyKey: "large", InputObject: "large-input"})
	if err != nil {
		b.Fatal(err)
	}
	f.publish(ctx, data, "large")
	a := f.awaitCompleted(done, 1, largeTimeout)[0]
	total := a.at.Sub(start)
	ev := a.ev
	if ev.IdempotencyKey != "large" || ev.Outcome != contract.OutcomeSucceeded ||
		ev.RequestCounts != (contract.Counts{Total: n, Completed: n}) {
		f.logProblems()
		b.Fatalf("large job: want succeeded with %d completed, got key %q outcome %q counts %+v error %+v",
			n, ev.IdempotencyKey, ev.Outcome, ev.RequestCounts, ev.Error)
	}
	if ev.Results == nil || ev.Results.Lines != n {
		b.Fatalf("large job: want %d result lines, got %+v", n, ev.Results)
	}
	rss := map[string]float64{
		"submitter": peakMiB(b, "submitter", sub.Pid()),
		"poller":    peakMiB(b, "poller", pol.Pid()),
		"notifier":  peakMiB(b, "notifier", not.Pid()),
		"emulator":  peakMiB(b, "emulator", f.emu.Pid()),
	}

	stages := fleetStages(start, sub, pol, not, a.at)

	// The raw transfer baseline, after the fleet run so the emulator's
	// peak above is the fleet's alone.
	raw := rawTransfer(b, f.emuURL, path, inSize)
	emuAfter := peakMiB(b, "emulator", f.emu.Pid())
	f.logProblems()

	transfer := raw.upload + raw.download
	ratio := total.Seconds() / transfer.Seconds()
	t := benchfmt.Table{Header: []string{"measure", "value", "target"}}
	t.Add("requests", fmt.Sprint(n), "")
	t.Add("input MB", fmt.Sprintf("%.1f", float64(inSize)/1e6), "")
	t.Add("output MB", fmt.Sprintf("%.1f", float64(raw.outBytes)/1e6), "")
	t.Add("object put s", secs(put), "")
	t.Add("publish→completed s (from put start)", secs(total), fmt.Sprintf("< %.2f (%d× raw)", targetRatio*transfer.Seconds(), targetRatio))
	for _, st := range stages {
		t.Add(st[0], st[1], "")
	}
	t.Add("raw upload s", secs(raw.upload), "")
	t.Add("raw download s", secs(raw.download), "")
	t.Add("raw transfer s (upload + download)", secs(transfer), "")
	t.Add("raw batch create→completed s (vendor work, not in raw transfer)", secs(raw.vendor), "")
	t.Add("ratio (publish→completed / raw transfer)", fmt.Sprintf("%.2f", ratio), fmt.Sprintf("< %d: %s", targetRatio, verdict(ratio < targetRatio)))
	t.Add("submitter peak RSS MiB", fmt.Sprintf("%.1f", rss["submitter"]), fmt.Sprintf("< %d: %s", targetRSSMiB, verdict(rss["submitter"] < targetRSSMiB)))
	t.Add("notifier peak RSS MiB", fmt.Sprintf("%.1f", rss["notifier"]), fmt.Sprintf("< %d: %s", targetRSSMiB, verdict(rss["notifier"] < targetRSSMiB)))
	t.Add("poller peak RSS MiB", fmt.Sprintf("%.1f", rss["poller"]), "")
	t.Add("emulator peak RSS MiB (fleet run)", fmt.Sprintf("%.1f", rss["emulator"]), "")
	t.Add("emulator peak RSS MiB (after raw transfer)", fmt.Sprintf("%.1f", emuAfter), "")
	b.Logf("large job, %d requests, 1 submitter / 1 poller / 1 notifier, emulator phases 10ms, EMULATOR_REPLY_BYTES=%d:\n%s", n, replyBytes, t.String())

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(total.Seconds(), "completed_s")
	b.ReportMetric(put.Seconds(), "put_s")
	b.ReportMetric(transfer.Seconds(), "raw_transfer_s")
	b.ReportMetric(ratio, "x_raw")
	b.ReportMetric(rss["submitter"], "submitter_MiB")
	b.ReportMetric(rss["notifier"], "notifier_MiB")
	b.ReportMetric(rss["poller"], "poller_MiB")
	b.ReportMetric(rss["emulator"], "emulator_MiB")
}

// fleetStages reads from the workers' logs when the job passed each
// stage, as seconds since start: where the time between the put and
// batch.completed goes. A stage whose log line is missing shows "-".
func fleetStages(start time.Time, sub, pol, not *fleettest.Process, completed time.Time) [][2]string {
	stages := []struct {
		name   string
		p      *fleettest.Process
		msg    string
		fields map[string]string
	}{
		{"· vendor batch created (submitter: intake read, upload, create) at s", sub, "vendor batch created", nil},
		{"· completed seen (poller) at s", pol, "state change", map[string]string{"to": contract.StatusCompleted}},
		{"· results merged (notifier: download, merge, store) at s", not, "batch results merged", nil},
	}
	var out [][2]string
	for _, st := range stages {
		v := "-"
		if at, ok := logTime(st.p, st.msg, st.fields); ok {
			v = secs(at.Sub(start))
		}
		out = append(out, [2]string{st.name, v})
	}
	return append(out, [2]string{"· batch.completed received at s", secs(completed.Sub(start))})
}

// transfer is the raw transfer baseline's figures.
type transfer struct {
	upload, download time.Duration
	vendor           time.Duration // create until Get saw the batch completed
	outBytes         int64
}

// rawTransfer uploads the input file to the emulator through pkg/batchapi,
// runs it as a batch (untimed) and downloads the batch's output file, read
// to the end: the bytes the fleet moves, without the fleet.
func rawTransfer(b *testing.B, baseURL, path string, size int64) transfer {
	b.Helper()
	ctx := b.Context()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	defer tr.CloseIdleConnections()
	cli := batchapi.New(batchapi.Config{APIKey: apiKey, BaseURL: baseURL, HTTPClient: &http.Client{Transport: tr}})
	var res transfer

	in, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	start := time.Now()
	fileID, err := cli.UploadFrom(ctx, "raw-transfer.jsonl", in, size)
	if err != nil {
		b.Fatalf("raw upload: %v", err)
	}
	res.upload = time.Since(start)

	bt, err := cli.Create(ctx, batchapi.CreateParams{InputFileID: fileID, Endpoint: contract.DefaultEndpoint, CompletionWindow: contract.DefaultCompletionWindow})
	if err != nil {
		b.Fatalf("raw create: %v", err)
	}
	created := time.Now()
	deadline := created.Add(10 * time.Minute)
	for !contract.TerminalStatus(bt.Status) {
		if time.Now().After(deadline) {
			b.Fatalf("raw batch %s still %s after 10m", bt.ID, bt.Status)
		}
		time.Sleep(50 * time.Millisecond)
		if bt, err = cli.Get(ctx, bt.ID); err != nil {
			b.Fatalf("raw get: %v", err)
		}
	}
	res.vendor = time.Since(created)
	if bt.Status != contract.StatusCompleted || bt.OutputFileID == "" {
		b.Fatalf("raw batch %s ended %s (counts %+v), no output file to download", bt.ID, bt.Status, bt.Counts)
	}

	start = time.Now()
	rc, err := cli.Download(ctx, bt.OutputFileID)
	if err != nil {
		b.Fatalf("raw download: %v", err)
	}
	res.outBytes, err = io.Copy(io.Discard, rc)
	rc.Close()
	if err != nil {
		b.Fatalf("raw download: %v", err)
	}
	res.download = time.Since(start)
	return res
}
