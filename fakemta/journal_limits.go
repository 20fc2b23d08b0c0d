package fakemta

import "sync/atomic"

// Per-connection bounds on what one client can make the journal store
// without delivering a message: a client that never reads its replies and
// pipelines errors or endless commands is cut with 421 4.7.0 (RFC 5321
// 3.8) instead of filling the disk. The counts start again after every
// message received in full, so a long session that delivers is never cut.
const (
	maxConnErrors       = 50      // 5xx replies
	maxConnCommands     = 5000    // commands (1000 recipients, with room)
	maxConnCommandBytes = 1 << 20 // bytes of command lines
)

// connBudget counts a connection's commands and errors since its last
// message. Atomic: with BDAT the session's Data runs on its own goroutine.
type connBudget struct {
	errors, commands, bytes atomic.Int64
}

// command counts one command line of n bytes and reports whether the
// connection is now over a bound.
func (b *connBudget) command(n int) bool {
	c := b.commands.Add(1)
	by := b.bytes.Add(int64(n))
	return c > maxConnCommands || by > maxConnCommandBytes || b.errors.Load() >= maxConnErrors
}

// reply counts an error reply.
func (b *connBudget) reply(r *Reply) {
	if r.Code >= 500 {
		b.errors.Add(1)
	}
}

// reset starts the counts again (a message was received).
func (b *connBudget) reset() {
	b.errors.Store(0)
	b.commands.Store(0)
	b.bytes.Store(0)
}

// overBudgetReply is what a connection over a bound gets before it is cut.
var overBudgetReply = Reply{Code: 421, Enhanced: "4.7.0", Text: "Too many errors or commands without a message, closing connection"}
