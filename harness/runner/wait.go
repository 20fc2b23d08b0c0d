package runner

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
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
		// A reply of the fake MTA's, or the relay's own listing (a
		// deferral the fake MTA cannot see: it is stopped).
		return anyRcpt(func(rs *rcptState) bool { return rs.deferred || rs.listedDeferred })
	case "delivered":
		return everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 })
	case "attempts":
		return everyRcpt(func(rs *rcptState) bool { return rs.attempts >= w.Attempts })
	case "dsn":
		return func(m *msgState) bool { return m.dsn[w.Action] }
	default: // drained (Run.wait uses drainedCond, which knows the queue lifetime)
		return drainedCond(0)
	}
}

// drainedCond: every recipient delivered, bounced, or given up with an
// expiry notice that says delayed -- the ledger's bad-dsn: a DSN Action:
// delayed at or after the queue lifetime (less its slack, as
// ledger.expiryNotice) with no attempt after it (OpenSMTPD 6.8 at `queue
// ttl`, nullmailer 2.2). Flushing or restarting such a relay changes
// nothing, so the drain does not wait its deadline out three times; the
// drained wait still wants the message out of the relay's listing.
func drainedCond(lifetime time.Duration) cond {
	return func(m *msgState) bool {
		due := m.sub.SubmittedAt.Add(lifetime - ledger.LifetimeSlack(lifetime))
		expired := lifetime > 0 && !m.delayedAt.IsZero() && !m.delayedAt.Before(due)
		return everyRcpt(func(rs *rcptState) bool {
			return rs.delivered > 0 || rs.bounced || (expired && rs.lastAttempt.Before(m.delayedAt))
		})(m)
	}
}

// wait blocks until the condition holds or its deadline passes.
func (r *Run) wait(ctx context.Context, w *scenarios.Wait) bool {
	d := r.deadline(w)
	c := waitCond(w)
	if w.For == "drained" {
		c = drainedCond(r.timing.QueueLifetime.D())
	}
	until := time.Now().Add(d)
	r.progress("waiting for %s until %s (%s)", w.Describe()[len("wait for "):], until.Format("15:04:05"), d.Round(100*time.Millisecond))
	ok := r.until(ctx, until, func() bool { return r.track.all(w.Group, c) })
	if ok && w.For == "drained" {
		ok = r.dequeued(ctx, w.Group, until)
	}
	if !ok {
		left, total := r.track.pending(w.Group, c)
		if ctx.Err() != nil {
			r.progress("wait interrupted (%v): %d of %d message(s) not there yet", context.Cause(ctx), left, total)
			return false
		}
		r.progress("wait timed out: %d of %d message(s) not there yet (the ledger will say why)", left, total)
	}
	return ok
}

// until waits on tracker changes until f holds, the deadline, or ctx
// ends. A neighbour's outage is not this scenario's time: the deadline
// stretches by it (and never passes during one).
func (r *Run) until(ctx context.Context, deadline time.Time, f func() bool) bool {
	start := time.Now()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		changed := r.track.wait()
		if f() {
			return true
		}
		select {
		case <-changed:
		case <-r.hub.lostDone():
			// The relay is down for good: nothing will change any more.
			return f()
		case <-timer.C:
			if f() {
				return true
			}
			if up := r.hub.downByOther(r); up != nil {
				select {
				case <-up:
				case <-ctx.Done():
					return false
				}
			}
			if d := deadline.Add(r.neighbourOutage(start, time.Now())); time.Now().Before(d) {
				timer.Reset(time.Until(d))
				continue
			}
			return f()
		case <-ctx.Done():
			return false
		}
	}
}

// neighbourOutage is how much of [from, to) neighbours kept the relay or
// the fake MTA down (restarts, stops until the start), overlaps once.
func (r *Run) neighbourOutage(from, to time.Time) time.Duration {
	r.mu.Lock()
	faults := append([]history.Fault(nil), r.h.Faults...)
	r.mu.Unlock()
	type span struct{ s, e time.Time }
	var spans []span
	open := map[history.FaultKind]time.Time{}
	for _, f := range faults {
		if !strings.HasPrefix(f.Detail, "by neighbour ") {
			continue
		}
		switch f.Kind {
		case history.FaultRelayRestart, history.FaultFakeMTARestart:
			spans = append(spans, span{f.Start, f.End})
		case history.FaultRelayStop, history.FaultFakeMTAStop:
			open[f.Kind] = f.Start
		case history.FaultRelayStart, history.FaultFakeMTAStart:
			stop := history.FaultRelayStop
			if f.Kind == history.FaultFakeMTAStart {
				stop = history.FaultFakeMTAStop
			}
			if st, ok := open[stop]; ok {
				spans = append(spans, span{st, f.End})
				delete(open, stop)
			}
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].s.Before(spans[j].s) })
	var total time.Duration
	cur := from
	for _, sp := range spans {
		s, e := sp.s, sp.e
		if s.Before(cur) {
			s = cur
		}
		if e.After(to) {
			e = to
		}
		if e.After(s) {
			total += e.Sub(s)
			cur = e
		}
	}
	return total
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
