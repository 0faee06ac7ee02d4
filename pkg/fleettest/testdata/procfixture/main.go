// Command procfixture is a stand-in fleet process for fleettest's own tests.
// It prints a few lines to stdout and stderr, then waits for SIGTERM.
//
//	FIXTURE_LINES=N        print N numbered lines first
//	FIXTURE_EXIT=N         exit with status N right after starting
//	FIXTURE_TERM_EXIT=N    exit with status N on SIGTERM (default 0)
//	FIXTURE_IGNORE_TERM=1  ignore SIGTERM
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

func main() {
	fmt.Println("procfixture starting")
	fmt.Fprintln(os.Stderr, "procfixture stderr line")
	fmt.Printf("env ECHO=%s HOME_SET=%t EXTRA_SET=%t\n", os.Getenv("ECHO"), os.Getenv("HOME") != "", os.Getenv("FLEETTEST_EXTRA") != "")
	n, _ := strconv.Atoi(os.Getenv("FIXTURE_LINES"))
	for i := range n {
		fmt.Printf("line %d\n", i)
	}
	if code := os.Getenv("FIXTURE_EXIT"); code != "" {
		c, _ := strconv.Atoi(code)
		fmt.Println("exiting early")
		os.Exit(c)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	fmt.Println(`{"level":"info","base_url":"http://127.0.0.1:4010/v1","message":"listening"}`)
	<-sig
	for os.Getenv("FIXTURE_IGNORE_TERM") == "1" {
		fmt.Println("ignoring sigterm")
		<-sig
	}
	fmt.Println("got sigterm")
	c, _ := strconv.Atoi(os.Getenv("FIXTURE_TERM_EXIT"))
	os.Exit(c)
}
