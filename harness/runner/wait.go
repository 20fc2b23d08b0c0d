package runner

import (
	"context"
	"time"

	"github.com/greyharness/greyharness/scenarios"
)

// deadline derives a wait's timeout from the profile's timing (see
// WaitDeadline, which the suite's spec timeouts use too).
func (r *Run) deadline(w *scenarios.Wait) time.Duration {
	left, _ := r.track.pending(w.Group, func(*msgState) bool { return false })
	return WaitDeadline(r.timing, w, r.h.GreylistDelay.D(), left)
}

func waitCond(w *scenarios.Wait) cond {
	switch w.For {
	case "deferred":
		return anyRcpt(func(rs *rcptState) bool { return rs.deferred })
	case "delivered":
		return everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 })
	case "attempts":
		return everyRcpt(func(rs *rcptState) bool { return rs.attempts >= w.Attempts })
	case "dsn":
		return func(m *msgState) bool { return m.dsn[w.Action] }
	default: // drained
		return everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 || rs.bounced })
	}
}

// wait blocks until the condition holds or its deadline passes.
func (r *Run) wait(ctx context.Context, w *scenarios.Wait) bool {
	d := r.deadline(w)
	c := waitCond(w)
	until := time.Now().Add(d)
	r.progress("waiting for %s until %s (%s)", w.Describe()[len("wait for "):], until.Format("15:04:05"), d.Round(100*time.Millisecond))
	ok := r.until(ctx, until, func() bool { return r.track.all(w.Group, c) })
	if ok && w.For == "drained" {
		ok = r.dequeued(ctx, w.Group, until)
	}
	if !ok {
		left, total := r.track.pending(w.Group, c)
		r.progress("wait timed out: %d of %d message(s) not there yet (the ledger will say why)", left, total)
	}
	return ok
}

// until waits on tracker changes until f holds, the deadline, or ctx ends.
func (r *Run) until(ctx context.Context, deadline time.Time, f func() bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		changed := r.track.wait()
		if f() {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return f()
		case <-ctx.Done():
			return false
		}
	}
}

// awaitTracker waits until f holds over the tracker's counters (under
// its lock), the deadline, or ctx ends.
func (r *Run) awaitTracker(ctx context.Context, until time.Time, f func(t *tracker) bool) bool {
	return r.until(ctx, until, func() bool {
		r.track.mu.Lock()
		defer r.track.mu.Unlock()
		return f(r.track)
	})
}
