// Command submitter runs one batchfleet submitter. Configuration comes only from the
// environment (see the README's Configuration section).
package main

import (
	"github.com/batchfleet/batchfleet/pkg/fleet"
	"github.com/batchfleet/batchfleet/pkg/lifecycle"
)

func main() { lifecycle.Main("submitter", fleet.Submitter) }
