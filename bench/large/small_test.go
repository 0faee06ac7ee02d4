package largebench

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/batchfleet/batchfleet/bench/benchfmt"
	"github.com/batchfleet/batchfleet/pkg/contract"
)

// targetNotifierJobsPerSec is the small-jobs issue's target per notifier process.
const targetNotifierJobsPerSec = 100

// smallTimeout bounds the wait for every small job's batch.completed.
const smallTimeout = 10 * time.Minute

// chatRequests builds n inline chat sub-requests with custom_ids
// prefix-0..n-1.
func chatRequests(prefix string, n int) []contract.RequestItem {
	out := make([]contract.RequestItem, n)
	for i := range out {
		out[i] = contract.RequestItem{
			CustomID: fmt.Sprintf("%s-%d", prefix, i),
			Body:     json.RawMessage(fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"request %d of %s"}]}`, i, prefix)),
		}
	}
	return out
}

// BenchmarkSmallJobs publishes 500 inline jobs of 10 chat requests as fast
// as one publisher can to 2 submitters, 2 pollers and 1 notifier against
// an emulator with no latency and 10ms phases, and sets jobs/s, the
// publish→batch.completed latency per job and the notifier's completions
// per second. BENCH_NOTIFY_CONCURRENCY sets the notifier's
// NOTIFY_CONCURRENCY.
func BenchmarkSmallJobs(b *testing.B) {
	const per = 10
	jobs := envInt(b, "BENCH_SMALL_JOBS", 500)
	var notifyEnv []string
	concurrency := "default"
	if v := os.Getenv("BENCH_NOTIFY_CONCURRENCY"); v != "" {
		notifyEnv = append(notifyEnv, "NOTIFY_CONCURRENCY="+v)
		concurrency = v
	}

	f := startFleet(b, fleetOpts{emulatorEnv: phases10ms})
	f.start("submitter", 2)
	f.start("poller", 2)
	not := f.start("notifier", 1, notifyEnv...)[0]
	done := f.completions()
	ctx := b.Context()

	keys := make([]string, jobs)
	msgs := make([][]byte, jobs)
	for i := range jobs {
		keys[i] = fmt.Sprintf("small-%03d", i)
		data, err := json.Marshal(contract.Request{IdempotencyKey: keys[i], Requests: chatRequests(keys[i], per)})
		if err != nil {
			b.Fatal(err)
		}
		msgs[i] = data
	}
	published := make(map[string]time.Time, jobs)
	first := time.Now()
	for i, k := range keys {
		published[k] = time.Now()
		f.publish(ctx, msgs[i], k)
	}
	publishing := time.Since(first)

	arrivals := f.awaitCompleted(done, jobs, smallTimeout)
	lat := make([]time.Duration, 0, jobs)
	seen := make(map[string]bool, jobs)
	var firstStored, lastStored, lastAt time.Time
	for _, a := range arrivals {
		ev := a.ev
		at, ok := published[ev.IdempotencyKey]
		if !ok || seen[ev.IdempotencyKey] {
			f.logProblems()
			b.Fatalf("unexpected or second batch.completed for %q", ev.IdempotencyKey)
		}
		seen[ev.IdempotencyKey] = true
		if ev.Outcome != contract.OutcomeSucceeded || ev.RequestCounts != (contract.Counts{Total: per, Completed: per}) {
			f.logProblems()
			b.Fatalf("job %s: want succeeded with %d completed, got %q %+v error %+v", ev.IdempotencyKey, per, ev.Outcome, ev.RequestCounts, ev.Error)
		}
		lat = append(lat, a.at.Sub(at))
		if firstStored.IsZero() || a.stored.Before(firstStored) {
			firstStored = a.stored
		}
		if a.stored.After(lastStored) {
			lastStored = a.stored
		}
		if a.at.After(lastAt) {
			lastAt = a.at
		}
	}
	slices.Sort(lat)
	wall := lastAt.Sub(first)
	jobsPerSec := float64(jobs) / wall.Seconds()
	// The notifier's rate: completions between its first and last
	// batch.completed (as stored by the server), so the vendor timeline
	// and the first job's submission do not count.
	span := lastStored.Sub(firstStored)
	notifierRate := float64(jobs-1) / span.Seconds()
	notRSS := peakMiB(b, "notifier", not.Pid())
	f.logProblems()

	t := benchfmt.Table{Header: []string{"measure", "value", "target"}}
	t.Add("jobs × requests", fmt.Sprintf("%d × %d", jobs, per), "")
	t.Add("submitters / pollers / notifiers", "2 / 2 / 1", "")
	t.Add("NOTIFY_CONCURRENCY", concurrency, "")
	t.Add("publish all s", secs(publishing), "")
	t.Add("first publish → last completed s", secs(wall), "")
	t.Add("jobs/s (fleet)", fmt.Sprintf("%.1f", jobsPerSec), "")
	t.Add("publish→completed p50 ms", msec(percentile(lat, 0.50)), "")
	t.Add("publish→completed p99 ms", msec(percentile(lat, 0.99)), "")
	t.Add("publish→completed max ms", msec(lat[len(lat)-1]), "")
	t.Add("notifier first → last completion s", secs(span), "")
	t.Add("notifier jobs/s", fmt.Sprintf("%.1f", notifierRate),
		fmt.Sprintf("≥ %d: %s", targetNotifierJobsPerSec, verdict(notifierRate >= targetNotifierJobsPerSec)))
	t.Add("notifier peak RSS MiB", fmt.Sprintf("%.1f", notRSS), "")
	b.Logf("small jobs, emulator latency 0 and phases 10ms:\n%s", t.String())

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(jobsPerSec, "jobs/s")
	b.ReportMetric(float64(percentile(lat, 0.50).Milliseconds()), "p50_ms")
	b.ReportMetric(float64(percentile(lat, 0.99).Milliseconds()), "p99_ms")
	b.ReportMetric(notifierRate, "notifier_jobs/s")
}
