// Command natsd runs an embedded JetStream server as its own process, so
// the chaos tests can SIGKILL it (an in-process server can only be shut
// down) and start it again on the same port and store directory.
//
//	NATSD_PORT   listen port on 127.0.0.1 (required)
//	NATSD_STORE  JetStream store directory (required)
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	port, err := strconv.Atoi(os.Getenv("NATSD_PORT"))
	if err != nil || os.Getenv("NATSD_STORE") == "" {
		fmt.Fprintln(os.Stderr, "natsd: NATSD_PORT and NATSD_STORE are required")
		os.Exit(2)
	}
	s, err := server.NewServer(&server.Options{
		ServerName: "natsd", Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: os.Getenv("NATSD_STORE"), NoLog: true, NoSigs: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsd:", err)
		os.Exit(1)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsd: not ready")
		os.Exit(1)
	}
	fmt.Println("natsd ready")
	s.WaitForShutdown()
}
