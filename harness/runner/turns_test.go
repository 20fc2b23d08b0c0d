package runner

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/scenarios"
)

// turnRun is a Disruptive scenario as turns sees it: a name, and a tracker
// that owes a message once owe is called.
func turnRun(name string) *Run {
	return &Run{opt: &Options{}, sc: &scenarios.Scenario{Name: name}, track: newTracker()}
}

func owe(r *Run, id string) {
	s := history.Submission{HarnessID: id, MessageID: id + "@h", MailFrom: "s+" + id + "@s.test", RcptTo: []string{"r@d.test"},
		SubmittedAt: time.Now(), Accepted: true, Reply: fakemta.Reply{Code: 250}}
	r.track.expect(s)
	r.track.submitted(s)
}

func blockedBy(tu *turns, r *Run, restart, timed bool) string {
	tu.mu.Lock()
	defer tu.mu.Unlock()
	why, _, _ := tu.blockers(r, restart, timed)
	return why
}

// restartStep carries out r's restart step as the runner does: its turn,
// then its end.
func restartStep(t *testing.T, tu *turns, r *Run) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tu.await(ctx, r, true, false); err != nil {
		t.Fatalf("%s's restart: %v", r.sc.Name, err)
	}
	tu.restarted(r)
}

// TestTurnsRestartsComeFirst: the restarts of every Disruptive scenario
// running come before any of them is exposed (its last restart done once
// it has submitted, until it drains), one at a time, and none comes while
// one is exposed — as the pack's restart-between-deferral-and-retry (send,
// deferral, restart) and double-restart-then-greylist (two restarts, then
// send) run together.
func TestTurnsRestartsComeFirst(t *testing.T) {
	tu := newTurns()
	between, double, later := turnRun("between"), turnRun("double"), turnRun("later")
	tu.join(between, tu.next(), 1)
	tu.join(double, tu.next(), 2)
	owe(between, "b1") // sent and deferred: its restart would expose it

	if why := blockedBy(tu, between, true, false); !strings.Contains(why, "double has restarts to carry out first") {
		t.Fatalf("between's exposing restart before double's: %q", why)
	}
	if why := blockedBy(tu, double, true, false); why != "" {
		t.Fatalf("double's restarts (it has sent nothing) wait for %q", why)
	}
	ctx := context.Background()
	if err := tu.await(ctx, double, true, false); err != nil {
		t.Fatal(err)
	}
	if why := blockedBy(tu, between, true, true); !strings.Contains(why, "double is restarting the relay") {
		t.Fatalf("a restart during double's: %q", why)
	}
	tu.restarted(double)
	restartStep(t, tu, double)
	if why := blockedBy(tu, double, false, false); !strings.Contains(why, "between has restarts to carry out first") {
		t.Fatalf("double's send (exposing) before between's restart: %q", why)
	}
	if why := blockedBy(tu, between, true, false); why != "" {
		t.Fatalf("between's restart once double's are done: %q", why)
	}
	if err := tu.await(ctx, between, true, false); err != nil {
		t.Fatal(err)
	}
	if why := blockedBy(tu, double, false, false); !strings.Contains(why, "between is restarting the relay") {
		t.Fatalf("double's send during between's restart: %q", why)
	}
	tu.restarted(between) // between is exposed now
	if why := blockedBy(tu, double, false, false); why != "" {
		t.Fatalf("double's send once every restart is done: %q", why)
	}
	tu.join(later, tu.next(), 1)
	if why := blockedBy(tu, later, true, false); !strings.Contains(why, "between carried out its last restart") {
		t.Fatalf("a restart while between is exposed: %q", why)
	}
	if why := blockedBy(tu, later, true, true); !strings.Contains(why, "between carried out its last restart") {
		t.Fatalf("a timed restart while between is exposed: %q", why)
	}
	owe(double, "d1")
	tu.leave(between)
	if why := blockedBy(tu, later, true, false); !strings.Contains(why, "double carried out") {
		t.Fatalf("a restart while double is exposed: %q", why)
	}
	tu.leave(double)
	if why := blockedBy(tu, later, true, false); why != "" {
		t.Fatalf("a restart with nobody exposed: %q", why)
	}
}

// TestTurnsTieGoesToTheEarlier: two scenarios waiting at exposing restarts
// cannot both have theirs last; the earlier one goes, the later one waits
// for its drain. A timed restart does not wait for restarts to come, only
// for an exposed neighbour.
func TestTurnsTieGoesToTheEarlier(t *testing.T) {
	tu := newTurns()
	a, b := turnRun("a"), turnRun("b")
	tu.join(a, tu.next(), 1)
	tu.join(b, tu.next(), 1)
	owe(a, "a1")
	owe(b, "b1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bDone := make(chan error, 1)
	go func() { bDone <- tu.await(ctx, b, true, false) }()
	// b waits at its exposing restart for a; a, once b waits, goes first.
	if err := tu.await(ctx, a, true, false); err != nil {
		t.Fatal(err)
	}
	tu.restarted(a)
	select {
	case err := <-bDone:
		t.Fatalf("b restarted after a's last restart while the relay owes a (err %v)", err)
	default:
	}
	tu.leave(a)
	if err := <-bDone; err != nil {
		t.Fatal(err)
	}

	tu2 := newTurns()
	timed, slow := turnRun("timed"), turnRun("slow")
	tu2.join(timed, tu2.next(), 1)
	tu2.join(slow, tu2.next(), 1)
	owe(timed, "t1")
	if why := blockedBy(tu2, timed, true, true); why != "" {
		t.Fatalf("a timed restart waits for a neighbour's restart to come: %q", why)
	}
	if why := blockedBy(tu2, timed, true, false); why == "" {
		t.Fatal("an untimed exposing restart does not wait for a neighbour's restart to come")
	}
}

// TestLateCopyFrom: the late-duplicate watch runs from the drain for a copy
// whose final reply the relay may not have had, from the end of the last
// relay restart at or after a copy it had, and not at all for copies no
// restart came after.
func TestLateCopyFrom(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	drain := at(300)
	restartEnds := []time.Time{at(5)}
	faultEnd := func(copyAt time.Time) (end time.Time, ok bool) {
		for _, e := range restartEnds {
			if !e.Before(copyAt) && e.After(end) {
				end, ok = e, true
			}
		}
		return end, ok
	}
	track := func(heard bool, bodyAt float64) *tracker {
		tr := newTracker()
		s := history.Submission{HarnessID: "A", MessageID: "A@h", MailFrom: "a+gh-A@s.test", RcptTo: []string{"r@d.test"},
			SubmittedAt: t0, Accepted: true, Reply: fakemta.Reply{Code: 250}}
		tr.expect(s)
		tr.submitted(s)
		rs := tr.msgs[tr.order[0]].rcpts["r@d.test"]
		rs.bodies, rs.delivered, rs.lastBody, rs.bodyHeard = 1, 1, at(bodyAt), heard
		return tr
	}
	if got := track(true, 1).lateCopyFrom(drain, faultEnd); !got.Equal(at(5)) {
		t.Errorf("a copy the relay had, a restart after it: from %v, want the restart's end %v", got, at(5))
	}
	if got := track(true, 6).lateCopyFrom(drain, faultEnd); !got.IsZero() {
		t.Errorf("a copy the relay had, no restart after it: from %v, want none", got)
	}
	if got := track(false, 6).lateCopyFrom(drain, faultEnd); !got.Equal(drain) {
		t.Errorf("a copy the relay may not have had: from %v, want the drain %v", got, drain)
	}
	restartEnds = append(restartEnds, at(400))
	if got := track(true, 1).lateCopyFrom(drain, faultEnd); !got.Equal(at(400)) {
		t.Errorf("a later restart: from %v, want its end %v", got, at(400))
	}
}

// firstDelivery is when the first of h's own transactions got a 2xx to
// its final dot (zero: none).
func firstDelivery(h *history.History) time.Time {
	for _, ev := range h.Journal {
		if ev.Kind == fakemta.EventTransaction && ev.Tenant != "" && ev.Transaction != nil && ev.Transaction.Data != nil && ev.Transaction.Data.Code/100 == 2 {
			return ev.Time
		}
	}
	return time.Time{}
}

// TestDisruptiveScenariosShareTheRetry: two scenarios that restart the
// relay run together on one sample relay — one restarts after its
// deferral, the other twice before it sends — and both pass. Their
// restarts all come before either's delivery (they share the retry
// interval instead of taking one each), and none comes after a
// scenario's own last restart while the relay owes it its message (it
// could release a message held silently and hide the failure), nor after
// the double restart's send.
func TestDisruptiveScenariosShareTheRetry(t *testing.T) {
	t.Parallel()
	between := load(t, `name: between
policy: {greylist: {delay: 1s, auto_whitelist_after: 0}}
steps:
  - send: {to: [carol@rcpt.greyharness.test]}
  - wait: deferred
  - restart: {}
  - wait: delivered
`)
	double := load(t, `name: double
policy: {greylist: {delay: 1s, auto_whitelist_after: 0}}
steps:
  - restart: {times: 2}
  - send: {to: [dave@rcpt.greyharness.test]}
  - wait: deferred
  - wait: delivered
`)
	for _, sc := range []*scenarios.Scenario{between, double} {
		if iso, _ := Isolate(sc); iso != Disruptive {
			t.Fatalf("%s is %v, want disruptive", sc.Name, iso)
		}
	}
	// Both admission orders: given first, double may carry out its two
	// restarts before between has even begun.
	for _, doubleFirst := range []bool{false, true} {
		t.Run(map[bool]string{false: "between-first", true: "double-first"}[doubleFirst], func(t *testing.T) {
			var hs []*history.History
			var res []ledger.Result
			var progress string
			if doubleFirst {
				hs, res, progress = sampleRun(t, 2, double, between)
				hs[0], hs[1], res[0], res[1] = hs[1], hs[0], res[1], res[0]
			} else {
				hs, res, progress = sampleRun(t, 2, between, double)
			}
			checkSharedRetry(t, hs, res, progress)
		})
	}
}

// checkSharedRetry checks TestDisruptiveScenariosShareTheRetry's runs:
// hs and res are between's and double's, in that order.
func checkSharedRetry(t *testing.T, hs []*history.History, res []ledger.Result, progress string) {
	t.Helper()
	for i, h := range hs {
		if h == nil || !res[i].Passed {
			t.Fatalf("%s did not pass: %+v\n%s", []string{"between", "double"}[i], res[i].Failed(), progress)
		}
	}
	restartEnds := func(h *history.History) []time.Time {
		var out []time.Time
		for _, f := range h.Faults {
			if f.Kind == history.FaultRelayRestart {
				out = append(out, f.End)
			}
		}
		return out
	}
	hb, hd := hs[0], hs[1]
	// The three restarts, whoever's history holds them: a restart that
	// ended before a scenario began (double may restart before between
	// has even begun) is rightly not in that scenario's history.
	all := map[int64]time.Time{}
	for _, h := range hs {
		for _, e := range restartEnds(h) {
			all[e.UnixNano()] = e
		}
	}
	if len(all) != 3 {
		t.Fatalf("the histories hold %d distinct relay restarts, want 3 (between's one, double's two)\n%s", len(all), progress)
	}
	for _, h := range hs {
		has := map[int64]bool{}
		for _, e := range restartEnds(h) {
			has[e.UnixNano()] = true
		}
		first := firstDelivery(h)
		for k, e := range all {
			if e.After(h.Started) && !has[k] {
				t.Errorf("%s began at %s; a restart that ended at %s is missing from its history\n%s",
					h.Scenario, h.Started.Format("15:04:05.000"), e.Format("15:04:05.000"), progress)
			}
			if !e.Before(first) {
				t.Errorf("%s: a restart ended at %s, after its first delivery at %s: the two took turns (one retry interval each)\n%s",
					h.Scenario, e.Format("15:04:05.000"), first.Format("15:04:05.000"), progress)
			}
		}
	}
	// between's own restart is its last: none after it; double sent after every restart.
	var own time.Time
	for _, f := range hb.Faults {
		if f.Kind == history.FaultRelayRestart && !strings.HasPrefix(f.Detail, "by neighbour") {
			own = f.End
		}
	}
	for _, e := range restartEnds(hb) {
		if e.After(own) {
			t.Errorf("between: a neighbour's restart ended at %s, after its own last restart (%s) while the relay owed it its message\n%s", e.Format("15:04:05.000"), own.Format("15:04:05.000"), progress)
		}
	}
	for _, e := range restartEnds(hd) {
		if !e.Before(hd.Submissions[0].SubmittedAt) {
			t.Errorf("double: a restart ended at %s, after its send at %s\n%s", e.Format("15:04:05.000"), hd.Submissions[0].SubmittedAt.Format("15:04:05.000"), progress)
		}
	}
}

// sampleRun runs scs together on one in-process sample relay (backoff
// retry_max/2) and fake MTA, as a pack runs.
func sampleRun(t *testing.T, retryMax float64, scs ...*scenarios.Scenario) ([]*history.History, []ledger.Result, string) {
	t.Helper()
	return sampleHubRun(t, retryMax, time.Duration(retryMax*float64(time.Second))/2, false, false, scs...)
}

// TestTurnViolation: the check over a recorded history finds a
// neighbour's restart step after the scenario's own last restart (or its
// first submission after it) and before its drain, and nothing else: not
// a neighbour's restart before, nor a drain's last-resort restart.
func TestTurnViolation(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	restart := func(start float64, detail string) history.Fault {
		return history.Fault{Kind: history.FaultRelayRestart, Start: at(start), End: at(start + 0.5), Detail: detail}
	}
	between := func(faults ...history.Fault) *history.History {
		return &history.History{Submissions: []history.Submission{{SubmittedAt: at(1)}},
			Faults: append([]history.Fault{restart(3, "1 of 1")}, faults...)}
	}
	drained := at(300)
	if why := turnViolation(between(restart(2, "by neighbour double 2 of 2")), drained); why != "" {
		t.Errorf("a neighbour's restart before its own: %s", why)
	}
	if why := turnViolation(between(restart(4, "by neighbour other drain")), drained); why != "" {
		t.Errorf("a neighbour's drain restart: %s", why)
	}
	if why := turnViolation(between(restart(301, "by neighbour later 1 of 1")), drained); why != "" {
		t.Errorf("a neighbour's restart after its drain: %s", why)
	}
	if why := turnViolation(between(restart(4, "by neighbour later 1 of 1")), drained); !strings.Contains(why, "neighbour later restarted the relay at 12:00:04.000") {
		t.Errorf("a neighbour's restart step while exposed: %q", why)
	}
	double := &history.History{Submissions: []history.Submission{{SubmittedAt: at(5)}},
		Faults: []history.Fault{restart(1, "1 of 2"), restart(2, "2 of 2"), restart(3, "by neighbour between 1 of 1")}}
	if why := turnViolation(double, drained); why != "" {
		t.Errorf("a neighbour's restart between its own last one and its first send: %s", why)
	}
	double.Faults = append(double.Faults, restart(6, "by neighbour late 1 of 1"))
	if why := turnViolation(double, drained); !strings.Contains(why, "neighbour late") {
		t.Errorf("a neighbour's restart after its first send: %q", why)
	}
}

// TestScheduleBeginsInAdmissionOrder: scenarios begin (their histories
// start, their faults start reaching them) in the order Schedule admits
// them, not in the order their goroutines happen to run: a disruptive one
// admitted after a shared one cannot restart the relay before the shared
// one has begun, and restarts in turn order are in the histories of all
// admitted before.
func TestScheduleBeginsInAdmissionOrder(t *testing.T) {
	t.Parallel()
	var scs []*scenarios.Scenario
	for i := range 10 {
		scs = append(scs, load(t, fmt.Sprintf(`name: shared-%d
steps:
  - send: {to: [s%d@rcpt.greyharness.test]}
  - wait: delivered
`, i, i)))
	}
	scs = append(scs, load(t, `name: restarter
steps:
  - restart: {}
  - send: {to: [r@rcpt.greyharness.test]}
  - wait: delivered
`))
	hs, res, progress := sampleRun(t, 2, scs...)
	for i, h := range hs {
		if h == nil || !res[i].Passed {
			t.Fatalf("%s did not pass: %+v\n%s", scs[i].Name, res[i].Failed(), progress)
		}
		if i > 0 && !h.Started.After(hs[i-1].Started) {
			t.Errorf("%s began at %s, not after %s (admitted before it) at %s", h.Scenario, h.Started.Format("15:04:05.000000"), hs[i-1].Scenario, hs[i-1].Started.Format("15:04:05.000000"))
		}
	}
	restarts := func(h *history.History) []history.Fault {
		var out []history.Fault
		for _, f := range h.Faults {
			if f.Kind == history.FaultRelayRestart {
				out = append(out, f)
			}
		}
		return out
	}
	own := restarts(hs[len(hs)-1])
	if len(own) != 1 {
		t.Fatalf("the restarter's history has %d relay restarts, want its one\n%s", len(own), progress)
	}
	// Every shared one began before the restart (above); one that drained
	// with nothing left to watch may end before it, any other has it.
	for _, h := range hs[:len(hs)-1] {
		if got := restarts(h); h.Ended.After(own[0].End) && (len(got) != 1 || !got[0].End.Equal(own[0].End)) {
			t.Errorf("%s ran from %s to %s, over the restarter's restart (ended %s), and its history has %d relay restarts, want that one",
				h.Scenario, h.Started.Format("15:04:05.000"), h.Ended.Format("15:04:05.000"), own[0].End.Format("15:04:05.000"), len(got))
		}
	}
}
