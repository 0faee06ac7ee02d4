//go:build unix && !linux

package fleettest

import "syscall"

// childSysProcAttr puts a child in its own process group so Kill can reach
// its children too.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
