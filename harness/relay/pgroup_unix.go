//go:build unix

package relay

import "syscall"

// ownGroup starts a command as the leader of its own process group, so the
// relay's daemons it forks can be signalled together.
func ownGroup() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// killGroup sends sig to every process of the group pg.
func killGroup(pg int, sig syscall.Signal) { _ = syscall.Kill(-pg, sig) }

// reapPid collects the zombie pid without blocking.
func reapPid(pid int) {
	var ws syscall.WaitStatus
	_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
}
