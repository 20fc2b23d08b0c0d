package runner

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/greyharness/greyharness/harness/history"
)

// turns orders the relay restarts of the Disruptive scenarios running at
// once, so that they share one run instead of one retry interval each.
//
// A Disruptive scenario is exposed from its last restart step on, once it
// has submitted messages, until it drains: a neighbour's restart then
// could release what the relay holds silently — the seed's failure is a
// message held until the next restart — and hide the very failure the
// scenario is there to find, or, just after a delivery, lose the relay's
// record of it (RFC 1047's gap) and send it again. So:
//   - one restart step at a time, and none while a neighbour is exposed
//     (it waits for the neighbour's drain);
//   - an exposing step — a last restart once the scenario has submitted,
//     or its first send after its last restart — first lets every
//     neighbour that still has restarts carry them out, the earlier
//     scenario first when two wait at exposing restarts: the restarts of
//     all come first, together, and one retry interval then serves every
//     scenario;
//   - a timed restart (`when: during-data`, `after-deferral`) waits for an
//     exposed neighbour and a restart under way only: its moment would
//     pass.
//
// A restart before a scenario's own last one adds to its restarts (a
// double restart may become a triple one); it can hide nothing, as the
// scenario's own restart comes after it.
type turns struct {
	mu  sync.Mutex
	ch  chan struct{} // closed and replaced on every change
	seq int
	of  map[*Run]*turn
	// restarting is the scenario whose restart step is under way (nil:
	// none): from its turn until the step ends.
	restarting *Run
}

type turn struct {
	seq int // admission order
	// left: restart steps not yet begun (a step's turn counts it done).
	left int
	// atRestart: blocked at an exposing restart, for the order of ties.
	atRestart bool
}

func newTurns() *turns { return &turns{ch: make(chan struct{}), of: map[*Run]*turn{}} }

func (t *turns) signal() {
	close(t.ch)
	t.ch = make(chan struct{})
}

// next hands out the next admission number (Schedule, in the order given).
func (t *turns) next() int {
	if t == nil {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.seq++
	return t.seq
}

// join admits a Disruptive scenario with restart steps to carry out;
// seq 0 takes the next admission number.
func (t *turns) join(r *Run, seq, restarts int) {
	if t == nil {
		return
	}
	if seq == 0 {
		seq = t.next()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.of[r] = &turn{seq: seq, left: restarts}
	t.signal()
}

// leave ends a scenario's turn (drained, or ended): it is exposed no more.
func (t *turns) leave(r *Run) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.of[r]; ok {
		delete(t.of, r)
		t.signal()
	}
}

// restarted records that r's restart step ended (carried out or not).
func (t *turns) restarted(r *Run) {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.restarting == r {
		t.restarting = nil
		t.signal()
	}
}

// exposed reports whether x (r's turn) is exposed. Called with mu held.
func exposed(r *Run, x *turn) bool { return x.left == 0 && r.track.submittedAny() }

// pending names the Disruptive scenarios other than r that have begun
// and still have restart steps to carry out.
func (t *turns) pending(r *Run) []string {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var names []string
	for o, x := range t.of {
		if o != r && x.left > 0 {
			names = append(names, o.sc.Name)
		}
	}
	sort.Strings(names)
	return names
}

// blockers says why r may not carry out its step now ("" when it may):
// restart says the step restarts the relay (else it sends), timed that it
// must come at a moment of its own; exposing, that r is exposed after
// it. Called with mu held; chans are what to wait on for a change.
func (t *turns) blockers(r *Run, restart, timed bool) (why string, exposing bool, chans []<-chan struct{}) {
	me := t.of[r]
	if me == nil {
		return "", false, nil
	}
	if restart {
		// Its last restart step, once it has submitted.
		exposing = me.left == 1 && r.track.submittedAny()
	} else {
		// Its first send after its last restart.
		exposing = me.left == 0 && !r.track.submittedAny()
	}
	if o := t.restarting; o != nil && o != r && (restart || exposing) {
		return fmt.Sprintf("%s is restarting the relay", o.sc.Name), false, []<-chan struct{}{t.ch}
	}
	var exp, first []string
	for o, x := range t.of {
		if o == r {
			continue
		}
		chans = append(chans, o.track.wait())
		switch {
		case restart && exposed(o, x):
			exp = append(exp, o.sc.Name)
		case !exposing || timed || x.left == 0:
		case restart && x.atRestart && x.seq > me.seq:
			// It waits at an exposing restart too, admitted after r: r first.
		default:
			first = append(first, o.sc.Name)
		}
	}
	sort.Strings(exp)
	sort.Strings(first)
	var parts []string
	if len(exp) > 0 {
		parts = append(parts, fmt.Sprintf("%s carried out %s last restart and %s not drained (a restart now could release a message the relay holds silently and hide it, or lose its record of a delivery)", strings.Join(exp, ", "), plural(exp, "its", "their"), plural(exp, "has", "have")))
	}
	if len(first) > 0 {
		parts = append(parts, fmt.Sprintf("%s %s restarts to carry out first (after this step a restart would come after this scenario's own)", strings.Join(first, ", "), plural(first, "has", "have")))
	}
	return strings.Join(parts, "; "), exposing, chans
}

// await waits until r may carry out a restart or a send step (blockers),
// saying why it waits. A scenario that has not joined never waits.
func (t *turns) await(ctx context.Context, r *Run, restart, timed bool) error {
	if t == nil {
		return nil
	}
	said := ""
	defer func() {
		t.mu.Lock()
		if x := t.of[r]; x != nil && x.atRestart {
			x.atRestart = false
			t.signal()
		}
		t.mu.Unlock()
	}()
	for {
		t.mu.Lock()
		why, exposing, chans := t.blockers(r, restart, timed)
		if x := t.of[r]; x != nil && restart && exposing && !timed && !x.atRestart && why != "" {
			x.atRestart = true
			t.signal()
		}
		ch := t.ch
		if why == "" {
			if x := t.of[r]; x != nil && restart {
				// Its turn: the step is under way until restarted.
				x.left--
				t.restarting = r
				t.signal()
			}
			t.mu.Unlock()
			return nil
		}
		t.mu.Unlock()
		if why != said {
			r.progress("waiting: %s", why)
			said = why
		}
		if err := waitAny(ctx, append(chans, ch)); err != nil {
			return err
		}
	}
}

// waitAny waits until one of chans is closed or ctx ends.
func waitAny(ctx context.Context, chans []<-chan struct{}) error {
	done := make(chan struct{})
	defer close(done)
	woke := make(chan struct{}, 1)
	for _, c := range chans {
		go func() {
			select {
			case <-c:
				select {
				case woke <- struct{}{}:
				default:
				}
			case <-done:
			}
		}()
	}
	select {
	case <-woke:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// awaitRestarts waits until no Disruptive scenario other than r that has
// begun has restart steps left, saying which it waits for.
func (t *turns) awaitRestarts(ctx context.Context, r *Run) error {
	if t == nil {
		return nil
	}
	said := false
	for {
		t.mu.Lock()
		ch := t.ch
		t.mu.Unlock()
		names := t.pending(r)
		if len(names) == 0 {
			return nil
		}
		if !said {
			r.progress("drained: waiting for the restarts %s still %s to carry out (one could lose the relay's record of a delivery)", strings.Join(names, ", "), plural(names, "has", "have"))
			said = true
		}
		if err := waitAny(ctx, []<-chan struct{}{ch}); err != nil {
			return err
		}
	}
}

// plural picks one or many by the number of names.
func plural(names []string, one, many string) string {
	if len(names) == 1 {
		return one
	}
	return many
}

// stepRestart matches the detail of a relay restart a restart step
// carried out: "N of M", a neighbour's prefixed "by neighbour NAME "
// (not a drain's last-resort restart nor the harness's recovery, which
// do not take turns).
var stepRestart = regexp.MustCompile(`^(by neighbour (\S+) )?\d+ of \d+$`)

// turnViolation checks, over a Disruptive scenario's recorded history,
// the rule turns keeps: no neighbour's restart step began while the
// scenario was exposed — from its own last restart, or its first
// submission when that came later, until drainedAt. It returns what broke
// the rule ("" when nothing did): a harness fault, never the relay's.
func turnViolation(h *history.History, drainedAt time.Time) string {
	var lastOwn time.Time
	for _, f := range h.Faults {
		if f.Kind == history.FaultRelayRestart {
			if m := stepRestart.FindStringSubmatch(f.Detail); m != nil && m[1] == "" && f.End.After(lastOwn) {
				lastOwn = f.End
			}
		}
	}
	if lastOwn.IsZero() || len(h.Submissions) == 0 {
		return ""
	}
	from := lastOwn
	if first := h.Submissions[0].SubmittedAt; first.After(from) {
		from = first
	}
	for _, f := range h.Faults {
		if f.Kind != history.FaultRelayRestart {
			continue
		}
		m := stepRestart.FindStringSubmatch(f.Detail)
		if m == nil || m[1] == "" {
			continue
		}
		if f.Start.After(from) && f.Start.Before(drainedAt) {
			return fmt.Sprintf("harness: neighbour %s restarted the relay at %s, after this scenario's own last restart (or its first submission after it) at %s and before its drain at %s: a restart then could release a message the relay holds silently and hide it (turns); the verdicts below may be wrong — a harness fault, please report it",
				m[2], f.Start.Format("15:04:05.000"), from.Format("15:04:05.000"), drainedAt.Format("15:04:05.000"))
		}
	}
	return ""
}
