package fleettest

import "syscall"

// childSysProcAttr puts a child in its own process group (so Kill can reach
// its children too) and has the kernel kill it if the test binary dies
// without running its cleanups, e.g. on a test timeout panic.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
