package runner

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// freeAddr is a loopback address free now, for a fake MTA that must come
// back on the same port after a stop.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestOutageDeferralSeenInQueue: while the fake MTA is stopped no reply
// of its own can show a deferral, but the relay's queue listing can. A
// message listed deferred (its connection refused) ends `wait for
// deferred` long before its deadline; the listing is in the history, the
// ledger's timeline shows its reason, and nothing counts it as an attempt
// at the fake MTA.
func TestOutageDeferralSeenInQueue(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: outage-queue
steps:
  - fakemta: stop
  - send: {to: [frank@rcpt.greyharness.test]}
  - wait: {for: deferred, timeout: 1h}
  - fakemta: start
  - wait: {for: delivered, timeout: 1h}
`)
	r, _ := beginWithSampleRelayAt(t, sc, 200*time.Millisecond, freeAddr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for i := range 2 {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if !r.wait(ctx, sc.Steps[2].Wait) {
		t.Fatalf("wait for deferred did not hold after %s: the listing's deferral was not seen", time.Since(start).Round(time.Millisecond))
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("wait for deferred took %s", d)
	}
	r.track.mu.Lock()
	for _, m := range r.track.msgs {
		for a, rs := range m.rcpts {
			if rs.attempts != 0 || rs.deferred {
				t.Errorf("%s: the listing counted as an attempt at the fake MTA: %+v", a, *rs)
			}
		}
	}
	r.track.mu.Unlock()
	for i := 3; i < 5; i++ {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	h, res := r.Finish(ctx)
	seen := false
	for _, s := range h.Queue {
		for _, e := range s.Entries {
			seen = seen || e.Deferred && strings.Contains(e.Reason, "refused")
		}
	}
	if !seen {
		t.Errorf("no listing in the history shows the message deferred with its reason: %+v", h.Queue)
	}
	if len(res.Findings) != 1 {
		t.Fatalf("findings %+v", res.Findings)
	}
	f := res.Findings[0]
	if f.Failed || f.Primary != ledger.Delivered {
		t.Errorf("finding %+v, want delivered", f)
	}
	var attempts int
	var reason bool
	for _, e := range f.Timeline {
		switch e.What {
		case ledger.WhatAttempt:
			attempts++
		case ledger.WhatQueueSeen:
			reason = reason || strings.Contains(e.Detail, "refused")
		}
	}
	if attempts != 1 || !reason {
		t.Errorf("timeline: %d attempt(s) (want 1: the delivery), refusal listed: %v\n%+v", attempts, reason, f.Timeline)
	}
}

// TestOutageLetsOthersStartOnceTheFakeMTAIsBack: a scenario alone only
// because it stops the fake MTA holds the others back until its start
// step; its steps after that touch no one, so the next ones start then,
// not after its last wait and drain.
func TestOutageLetsOthersStartOnceTheFakeMTAIsBack(t *testing.T) {
	opt := &Options{Profile: &profile.Profile{Name: "t", NextHop: []string{freeAddr(t)}, Submit: profile.Submit{Addr: blackholeRelay(t)}}, Relay: stubRelay{}}
	outage := load(t, `name: outage
steps:
  - fakemta: stop
  - send: {to: [frank@rcpt.test]}
  - wait: {for: deferred, timeout: 200ms}
  - fakemta: start
  - wait: {for: delivered, timeout: 1500ms}
`)
	shared := load(t, "name: shared\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: {for: delivered, timeout: 100ms}\n")
	if iso, _ := Isolate(outage); iso != Alone {
		t.Fatalf("outage: %s, want alone", iso)
	}
	hs, _, errs := RunScenarios(context.Background(), opt, []*scenarios.Scenario{outage, shared}, 0)
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", hs[i].Scenario, err)
		}
	}
	var back time.Time
	for _, f := range hs[0].Faults {
		if f.Kind == history.FaultFakeMTAStart {
			back = f.End
		}
	}
	if back.IsZero() {
		t.Fatalf("no fake MTA start in the outage's history: %+v", hs[0].Faults)
	}
	if hs[1].Started.Before(back) {
		t.Errorf("the shared scenario started at %s, during the outage (back at %s)", hs[1].Started, back)
	}
	if !hs[1].Started.Before(back.Add(time.Second)) {
		t.Errorf("the shared scenario started at %s, %s after the fake MTA was back: it waited for the outage's last wait", hs[1].Started, hs[1].Started.Sub(back))
	}
}

// TestNeighbourEndingDuringAnOutageLeavesItDown: a scenario that ends
// while another's fake-MTA outage is on must not start the fake MTA again
// (only the scenario that stopped it may, when it ends before its start):
// that would end the outage early, unrecorded, and the outage's own start
// step would then fail to listen.
func TestNeighbourEndingDuringAnOutageLeavesItDown(t *testing.T) {
	next := freeAddr(t)
	sr := newSampleRelay(t, 100*time.Millisecond)
	sr.cfg.NextHop = []string{next}
	if err := sr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	opt := &Options{Profile: &profile.Profile{Name: "sample", NextHop: []string{next}, Submit: profile.Submit{Addr: sr.addr},
		Timing: history.Timing{RetryMax: seconds(0.3), QueueLifetime: seconds(60), RestartGrace: seconds(1)}}, Relay: sr}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hub, err := NewHub(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	opt.Hub = hub
	// first drains and lets the world go, as Finish does before its watch.
	first := load(t, "name: first\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: delivered\n")
	rf, err := Begin(ctx, opt, first)
	if err != nil {
		t.Fatal(err)
	}
	for i := range first.Steps {
		if err := rf.Step(ctx, i, &first.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	rf.releaseWorld()
	// outage takes the world and stops the fake MTA; first ends meanwhile.
	outage := load(t, "name: outage\nsteps:\n  - fakemta: stop\n  - fakemta: start\n  - send: {to: [f@rcpt.test]}\n")
	ro, err := Begin(ctx, opt, outage)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.Step(ctx, 0, &outage.Steps[0]); err != nil {
		t.Fatal(err)
	}
	rf.Close()
	if hub.running() {
		t.Error("the fake MTA is up again after a neighbour ended during the outage")
	}
	if err := ro.Step(ctx, 1, &outage.Steps[1]); err != nil {
		t.Errorf("the outage's start step: %v", err)
	}
}
