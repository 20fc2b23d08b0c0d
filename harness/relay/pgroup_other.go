//go:build !unix

package relay

import (
	"os"
	"syscall"
)

// Process groups are a unix notion: elsewhere a command runs in the
// harness's group and only its leader can be stopped. Real relays (Postfix,
// Exim) are driven on unix; this keeps the package building everywhere.

func ownGroup() *syscall.SysProcAttr { return nil }

// killGroup kills the leader pg itself; sig cannot be delivered here.
func killGroup(pg int, sig syscall.Signal) {
	if p, err := os.FindProcess(pg); err == nil {
		_ = p.Kill()
	}
}

// reapPid does nothing: there are no zombies to collect.
func reapPid(pid int) {}
