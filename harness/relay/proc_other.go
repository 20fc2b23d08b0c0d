//go:build !linux

package relay

type proc struct {
	pid, ppid, pgid int
	state           byte
}

// listProcs is not implemented outside Linux: only the leader's group is
// signalled and only the leader is reaped.
func listProcs() []proc { return nil }

func setSubreaper() {}
