//go:build race

package fleettest

// raceEnabled: the test binary runs with the race detector, so the
// binaries it builds do too, and a data race in a worker process fails
// the test that started it (the process exits with status 66).
const raceEnabled = true
