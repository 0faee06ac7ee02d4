package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/batchapi"
	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/fleettest"
	"github.com/batchfleet/batchfleet/pkg/lock"
	"github.com/batchfleet/batchfleet/pkg/stream"
)

// ceilingConsumer is the durable pull consumer of the bare pipeline,
// configured as the submitters' own.
const ceilingConsumer = "ceiling"

// pipeline is the bare submit pipeline, what every submission needs at the
// least and nothing more: fetch a request from a pull consumer, lock its
// key in Redis, publish the poll claim, unlock, ack. No vendor call, no job
// record. It has its own NATS connection and Redis client, like a
// submitter process.
type pipeline struct {
	js     jetstream.JetStream
	cons   jetstream.Consumer
	locker *lock.Locker
}

func (r *rig) pipeline(b *testing.B) *pipeline {
	b.Helper()
	_, js := fleettest.Connect(b, r.nats.URL())
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	cons, err := stream.EnsureConsumer(ctx, js, stream.Requests, jetstream.ConsumerConfig{
		Durable: ceilingConsumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: 20 * time.Second,
		MaxDeliver: -1, MaxAckPending: 10000, FilterSubject: contract.SubjectRequests,
	})
	if err != nil {
		b.Fatalf("ceiling consumer: %v", err)
	}
	return &pipeline{js: js, cons: cons, locker: lock.New(r.redis.Client(b), lock.Options{})}
}

// handle moves one request through the pipeline. It acks as the submitter
// does (DoubleAck: wait for the server's confirmation).
func (p *pipeline) handle(ctx context.Context, m jetstream.Msg) error {
	var req struct {
		Key string `json:"idempotency_key"`
	}
	if err := json.Unmarshal(m.Data(), &req); err != nil {
		_ = m.Term()
		return fmt.Errorf("decode request: %w", err)
	}
	lk, err := p.locker.Acquire(ctx, req.Key, 30*time.Second)
	if err != nil {
		_ = m.Nak()
		return err
	}
	_, err = stream.Publish(ctx, p.js, stream.SubjectPoll,
		stream.PollTask{BatchID: "ceiling_" + req.Key, JobKey: req.Key, Key: req.Key},
		stream.WithMsgID(req.Key+":poll"))
	if rerr := lk.Release(ctx); err == nil {
		err = rerr
	}
	if err != nil {
		_ = m.Nak()
		return err
	}
	return m.DoubleAck(ctx)
}

// runCeiling runs the pipelines, each with concurrency workers over one
// iterator fetching concurrency messages ahead (as stream.Consume does),
// until want poll claims are stored, then stops them; it measures from
// start to the last claim.
func (r *rig) runCeiling(b *testing.B, pipes []*pipeline, concurrency, want int, timeout time.Duration) measure {
	b.Helper()
	ctx := context.Background()
	stopped := make(chan error, len(pipes)*concurrency)
	ids, unwatch := r.watchHandOffs(b, want)
	defer unwatch()
	var wg sync.WaitGroup
	var its []jetstream.MessagesContext
	cpu0, start := processCPU(), time.Now()
	for _, p := range pipes {
		it, err := p.cons.Messages(jetstream.PullMaxMessages(concurrency))
		if err != nil {
			b.Fatalf("ceiling: messages: %v", err)
		}
		its = append(its, it)
		for range concurrency {
			wg.Go(func() {
				for {
					m, err := it.Next()
					if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
						return
					}
					if err != nil {
						continue // a missed heartbeat; the iterator recovers
					}
					hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
					err = p.handle(hctx, m)
					cancel()
					if err != nil {
						select {
						case stopped <- err:
						default:
						}
					}
				}
			})
		}
	}
	end, err := r.awaitHandedOff(ids, want, timeout, stopped)
	m := measure{elapsed: end.Sub(start), cpu: processCPU() - cpu0}
	for _, it := range its {
		it.Stop()
	}
	wg.Wait()
	if err != nil {
		b.Fatalf("ceiling: %v", err)
	}
	return m
}

// runVendorCalls makes the two vendor calls of a submission, upload and
// create, for want inputs with concurrency workers and nothing else (no
// NATS, no Redis): what the vendor boundary alone costs on this machine,
// openai-go and the in-process emulator together.
func (r *rig) runVendorCalls(b *testing.B, concurrency, want int) measure {
	b.Helper()
	inputs := make([][]byte, want)
	for i := range inputs {
		k := key("vendor", i)
		data, err := requestMsg(k, i)
		if err != nil {
			b.Fatalf("encode request: %v", err)
		}
		req, _, err := contract.Decode(data)
		if err != nil {
			b.Fatalf("decode request: %v", err)
		}
		if inputs[i], err = req.JSONL(); err != nil {
			b.Fatalf("render input: %v", err)
		}
	}
	v := r.vendor()
	ctx := context.Background()
	work := make(chan int)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	cpu0, start := processCPU(), time.Now()
	for range concurrency {
		wg.Go(func() {
			for i := range work {
				k := key("vendor", i)
				id, err := v.Upload(ctx, k+".jsonl", inputs[i])
				if err == nil {
					_, err = v.Create(ctx, batchapi.CreateParams{InputFileID: id, Endpoint: contract.DefaultEndpoint,
						CompletionWindow: contract.DefaultCompletionWindow, Metadata: map[string]string{contract.MetaIdempotencyKey: k}})
				}
				if err != nil {
					errs <- fmt.Errorf("vendor calls for %s: %w", k, err)
					return
				}
			}
		})
	}
	timeout := time.After(runTimeout)
	var err error
feed:
	for i := range want {
		select {
		case work <- i:
		case err = <-errs:
			break feed
		case <-timeout:
			err = fmt.Errorf("vendor calls: not done within %s", runTimeout)
			break feed
		}
	}
	close(work)
	wg.Wait()
	m := measure{elapsed: time.Since(start), cpu: processCPU() - cpu0}
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	if err != nil {
		b.Fatal(err)
	}
	return m
}
