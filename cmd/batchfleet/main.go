// Command batchfleet is the fleet's operator tool:
//
//	batchfleet dev                     run the whole fleet in one process on embedded defaults
//	batchfleet publish [flags] FILE    publish a job (OpenAI batch JSONL, or a batch.requests JSON)
//	batchfleet results KEY             print a job's merged results
//	batchfleet job KEY                 print a job's durable record
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "batchfleet:", err)
		os.Exit(1)
	}
}
