package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/batchfleet/batchfleet/pkg/contract"
	"github.com/batchfleet/batchfleet/pkg/devfleet"
	"github.com/batchfleet/batchfleet/pkg/ops"
)

const usage = `usage:
  batchfleet dev [-data DIR] [-nats ADDR] [-emulator ADDR] [-demo]
  batchfleet publish [-nats URL] [-key KEY] [-wait] FILE   (OpenAI batch JSONL or a batch.requests JSON)
  batchfleet results [-nats URL] KEY
  batchfleet job [-nats URL] KEY
  batchfleet dlq list [-nats URL] [-subject batch.dlq.>]
  batchfleet dlq replay-webhooks [-nats URL] [-url URL]   (signs with WEBHOOK_SECRET)`

func run(args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch args[0] {
	case "dev":
		return dev(ctx, args[1:])
	case "publish":
		return publish(ctx, args[1:])
	case "results", "job":
		return show(ctx, args[0], args[1:])
	case "dlq":
		return dlq(ctx, args[1:])
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func defaultNATS() string {
	if u := os.Getenv("NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:14222" // the dev fleet's
}

func dev(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	data := fs.String("data", ".batchfleet-dev", "directory for JetStream data")
	natsAddr := fs.String("nats", "127.0.0.1:14222", "embedded NATS listen address")
	emuAddr := fs.String("emulator", "127.0.0.1:18080", "vendor emulator listen address")
	demo := fs.Bool("demo", false, "publish examples/sample.jsonl once the fleet runs and print its batch.completed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ready := make(chan devfleet.Addrs, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- devfleet.Run(ctx, devfleet.Options{
			DataDir: *data, NATSAddr: *natsAddr, EmulatorAddr: *emuAddr, RedisURL: os.Getenv("REDIS_URL"),
			Env: os.LookupEnv, Ready: func(a devfleet.Addrs) { ready <- a },
		})
	}()
	select {
	case err := <-errc:
		return err
	case a := <-ready:
		fmt.Fprintf(os.Stderr, `
batchfleet dev fleet is running (Ctrl-C to stop)
  NATS JetStream  %s
  Redis           %s (%s)
  vendor emulator %s
Publish the sample job and wait for its batch.completed:
  go run ./cmd/batchfleet publish -nats %s -key demo-$(date +%%s) -wait examples/sample.jsonl

`, a.NATSURL, a.RedisURL, a.RedisKind, a.OpenAIBaseURL, a.NATSURL)
		if *demo {
			go func() {
				key := fmt.Sprintf("demo-%d", time.Now().Unix())
				if err := publish(ctx, []string{"-nats", a.NATSURL, "-key", key, "-wait", "examples/sample.jsonl"}); err != nil {
					fmt.Fprintln(os.Stderr, "demo:", err)
				}
			}()
		}
	}
	return <-errc
}

func connect(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, nil, fmt.Errorf("connect %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

func publish(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("publish", flag.ContinueOnError)
	url := fs.String("nats", defaultNATS(), "NATS URL")
	key := fs.String("key", "", "idempotency key (required for a JSONL file)")
	wait := fs.Bool("wait", false, "wait for the job's batch.completed and print it")
	timeout := fs.Duration("timeout", 10*time.Minute, "how long -wait waits")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("publish takes one FILE")
	}
	nc, js, err := connect(*url)
	if err != nil {
		return err
	}
	defer nc.Close()
	var req contract.Request
	n := 0
	if strings.HasSuffix(fs.Arg(0), ".jsonl") {
		if *key == "" {
			return errors.New("-key is required for a JSONL file")
		}
		// A file larger than one NATS message goes through the object
		// store (input_object); PublishFile decides from the server's limit.
		if req, n, err = ops.PublishFile(ctx, js, ops.FileJob{Key: *key, Path: fs.Arg(0), MaxPayload: nc.MaxPayload()}); err != nil {
			return err
		}
	} else {
		data, err := os.ReadFile(fs.Arg(0))
		if err != nil {
			return err
		}
		if req, _, err = contract.Decode(data); err != nil {
			return err
		}
		if *key != "" {
			req.IdempotencyKey = *key
		}
		if err := ops.Publish(ctx, js, req); err != nil {
			return err
		}
		n = len(req.Requests)
	}
	how := "inline"
	if req.InputObject != "" {
		how = "input_object " + contract.BucketIntake + "/" + req.InputObject
	}
	fmt.Fprintf(os.Stderr, "published %s (%d requests, %s) to %s\n", req.IdempotencyKey, n, how, contract.SubjectRequests)
	if !*wait {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	ev, err := ops.WaitCompleted(wctx, js, req.IdempotencyKey)
	if err != nil {
		return fmt.Errorf("wait for batch.completed: %w", err)
	}
	return printJSON(ev)
}

func show(ctx context.Context, what string, args []string) error {
	fs := flag.NewFlagSet(what, flag.ContinueOnError)
	url := fs.String("nats", defaultNATS(), "NATS URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%s takes one KEY", what)
	}
	nc, js, err := connect(*url)
	if err != nil {
		return err
	}
	defer nc.Close()
	if what == "job" {
		j, err := ops.Job(ctx, js, fs.Arg(0))
		if err != nil {
			return err
		}
		return printJSON(j)
	}
	_, err = ops.CopyResults(ctx, js, fs.Arg(0), os.Stdout)
	return err
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func dlq(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("dlq", flag.ContinueOnError)
	url := fs.String("nats", defaultNATS(), "NATS URL")
	subject := fs.String("subject", "batch.dlq.>", "dead-letter subject (list)")
	target := fs.String("url", "", "only letters for this webhook URL (replay-webhooks)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	nc, js, err := connect(*url)
	if err != nil {
		return err
	}
	defer nc.Close()
	switch args[0] {
	case "list":
		letters, err := ops.ListDLQ(ctx, js, *subject)
		if err != nil {
			return err
		}
		return printJSON(letters)
	case "replay-webhooks":
		res, err := ops.ReplayWebhooks(ctx, js, os.Getenv("WEBHOOK_SECRET"), *target)
		if err != nil {
			return err
		}
		return printJSON(res)
	}
	return fmt.Errorf("unknown dlq command %q\n%s", args[0], usage)
}
