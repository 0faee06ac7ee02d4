//go:build !race

package emulator

// raceEnabled scales down load tests, which the race detector slows ~10x.
const raceEnabled = false
