// Command batchfleet is the fleet's operator tool (see package cli):
//
//	batchfleet jobs ls|show|watch|cancel|results   list, inspect, follow and cancel jobs
//	batchfleet report [--since 24h]                the report: outcomes, durations, requests, tokens, cost
//	batchfleet dlq ls|replay                       dead letters
//	batchfleet publish --key KEY [--wait] FILE     publish a job
//	batchfleet items publish [--wait] FILE         publish single requests, one per line
//	batchfleet ui [--addr 127.0.0.1:8088]          the web dashboard
//	batchfleet dev [--demo]                        the whole fleet in one process on embedded defaults
//
// Every command takes --help, --nats (default $NATS_URL) and -o table|json.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/batchfleet/batchfleet/pkg/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Execute(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
