package runner

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/scenarios"
)

// The hub routes each journal event to the scenario it belongs to: a
// tenant's transactions and the connection events before them to the
// tenant's scenario, a connection that carried no transaction (and traffic
// of no tenant) to every scenario, and nothing of one tenant to another.
func TestHubRoutesEventsToTheirScenario(t *testing.T) {
	h := &Hub{runs: map[string]*Run{}, conns: map[uint64]*connRoute{}}
	a, b := &Run{track: newTracker(), tenant: "ta"}, &Run{track: newTracker(), tenant: "tb"}
	h.runs["ta"], h.runs["tb"] = a, b
	tx := func(seq, conn uint64, tenant string) fakemta.Event {
		return fakemta.Event{Seq: seq, Conn: conn, Kind: fakemta.EventTransaction, Tenant: tenant, Transaction: &fakemta.Transaction{MailFrom: "s@" + tenant + ".client.test"}}
	}
	evs := []fakemta.Event{
		{Seq: 1, Conn: 1, Kind: fakemta.EventConnect},
		{Seq: 2, Conn: 1, Kind: fakemta.EventCommand, Command: "EHLO relay"},
		{Seq: 3, Conn: 2, Kind: fakemta.EventConnect},
		tx(4, 1, "ta"),
		{Seq: 5, Conn: 2, Kind: fakemta.EventReply, Reply: &fakemta.Reply{Code: 421}},
		{Seq: 6, Conn: 2, Kind: fakemta.EventClose}, // no transaction: everyone's
		{Seq: 7, Conn: 1, Kind: fakemta.EventCommand, Command: "MAIL FROM:<>"},
		tx(8, 1, "tb"), // the same connection carries tb's next
		{Seq: 9, Conn: 1, Kind: fakemta.EventClose},
		tx(10, 3, ""), // no tenant: everyone's (their ledgers call it foreign)
		{Seq: 11, Kind: fakemta.EventControl, Note: "policy", Tenant: "tb"},
		tx(12, 4, "gone"), // a tenant no longer registered: nobody's
		{Seq: 13, Conn: 4, Kind: fakemta.EventClose},
	}
	for _, ev := range evs {
		h.route(ev)
	}
	seqs := func(r *Run) []uint64 {
		var out []uint64
		for _, ev := range r.h.Journal {
			out = append(out, ev.Seq)
		}
		return out
	}
	want := map[*Run][]uint64{a: {1, 2, 4, 3, 5, 6, 9, 10}, b: {3, 5, 6, 7, 8, 9, 10, 11}}
	// (a's 9: the close of a connection a's transaction was on)
	for r, w := range want {
		got := seqs(r)
		if len(got) != len(w) {
			t.Errorf("tenant %s got events %v, want %v", r.tenant, got, w)
			continue
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("tenant %s got events %v, want %v", r.tenant, got, w)
				break
			}
		}
	}
	if len(h.conns) != 0 {
		t.Errorf("connection routes left after their close: %v", h.conns)
	}
}

func TestTenantAddr(t *testing.T) {
	for in, want := range map[string]string{
		"carol@rcpt.test":     "carol@t1-ab.rcpt.test",
		"a+gh-1@client.test":  "a+gh-1@t1-ab.client.test",
		"no-domain":           "no-domain",
		"\"odd@x\"@rcpt.test": "\"odd@x\"@t1-ab.rcpt.test",
	} {
		if got := tenantAddr("t1-ab", in); got != want {
			t.Errorf("tenantAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A wait stretches by the time neighbours kept the relay or the fake MTA
// down, not by the scenario's own faults.
func TestNeighbourOutage(t *testing.T) {
	t0 := time.Now()
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	r := &Run{}
	r.h.Faults = []history.Fault{
		{Kind: history.FaultRelayRestart, Start: at(1), End: at(3), Detail: "by neighbour x 1 of 1"},
		{Kind: history.FaultRelayRestart, Start: at(2), End: at(4), Detail: "1 of 1"}, // its own
		{Kind: history.FaultFakeMTAStop, Start: at(5), End: at(5.1), Detail: "by neighbour y"},
		{Kind: history.FaultFakeMTAStart, Start: at(8), End: at(9), Detail: "by neighbour y"},
	}
	if got := r.neighbourOutage(at(0), at(20)); got != 6*time.Second {
		t.Errorf("neighbour outage %s, want 6s (2s restart + 4s fake MTA down)", got)
	}
	if got := r.neighbourOutage(at(2), at(6)); got != 2*time.Second {
		t.Errorf("neighbour outage in [2s, 6s) %s, want 2s", got)
	}
}

// With lanes, a connection on a lane that carried no transaction (a 421
// at EHLO) is the lane holder's only, not every scenario's; a tenant's
// transaction that comes where its lane says it must not (a laned one at
// a next hop, another on a lane) fails that scenario with the reason.
func TestHubRoutesLaneConnections(t *testing.T) {
	h := &Hub{runs: map[string]*Run{}, conns: map[uint64]*connRoute{}, laneRuns: map[int]*Run{}, laneAt: map[string]int{"127.0.0.11:26": 1}}
	a := &Run{track: newTracker(), tenant: "l1-ta", lane: 1, sc: &scenarios.Scenario{Name: "a"}, opt: &Options{}}
	b := &Run{track: newTracker(), tenant: "tb", sc: &scenarios.Scenario{Name: "b"}, opt: &Options{}}
	h.runs["l1-ta"], h.runs["tb"], h.laneRuns[1] = a, b, a
	tx := func(seq, conn uint64, tenant string) fakemta.Event {
		return fakemta.Event{Seq: seq, Conn: conn, Kind: fakemta.EventTransaction, Tenant: tenant, Transaction: &fakemta.Transaction{MailFrom: "s@" + tenant + ".client.test"}}
	}
	for _, ev := range []fakemta.Event{
		{Seq: 1, Conn: 1, Kind: fakemta.EventConnect, Local: "127.0.0.11:26"},
		{Seq: 2, Conn: 1, Kind: fakemta.EventReply, Reply: &fakemta.Reply{Code: 421}},
		{Seq: 3, Conn: 1, Kind: fakemta.EventClose}, // no transaction, on lane 1: a's only
		{Seq: 4, Conn: 2, Kind: fakemta.EventConnect, Local: "127.0.0.2:26"},
		tx(5, 2, "tb"), // b at the next hop: right
		{Seq: 6, Conn: 3, Kind: fakemta.EventConnect, Local: "127.0.0.11:26"},
		tx(7, 3, "l1-ta"), // a on its lane: right
	} {
		h.route(ev)
	}
	if a.misroute != "" || b.misroute != "" {
		t.Fatalf("routed right, yet misrouted: %q, %q", a.misroute, b.misroute)
	}
	for _, ev := range b.h.Journal {
		if ev.Conn == 1 {
			t.Fatalf("b got lane 1's connection: %+v", ev)
		}
	}
	if len(a.h.Journal) != 5 {
		t.Fatalf("a got %d events, want 5 (lane 1's two connections)", len(a.h.Journal))
	}
	// A next hop's connection with no transaction (or a transaction of no
	// tenant) is every scenario's but a laned one's: its mail goes to its lane.
	nb := len(b.h.Journal)
	for _, ev := range []fakemta.Event{
		{Seq: 20, Conn: 9, Kind: fakemta.EventConnect, Local: "127.0.0.2:26"},
		{Seq: 21, Conn: 9, Kind: fakemta.EventReply, Reply: &fakemta.Reply{Code: 421}},
		tx(22, 9, ""),
		{Seq: 23, Conn: 9, Kind: fakemta.EventClose},
		{Seq: 24, Kind: fakemta.EventControl, Note: "stop"}, // the fake MTA's: everyone's
	} {
		h.route(ev)
	}
	if len(a.h.Journal) != 6 || a.h.Journal[5].Seq != 24 {
		t.Fatalf("a got %v after its own, want only the fake MTA's stop", a.h.Journal[5:])
	}
	if len(b.h.Journal) != nb+5 {
		t.Fatalf("b got %d of the next hop's 5 events", len(b.h.Journal)-nb)
	}
	h.route(fakemta.Event{Seq: 8, Conn: 4, Kind: fakemta.EventConnect, Local: "127.0.0.2:26"})
	h.route(tx(9, 4, "l1-ta"))
	h.route(fakemta.Event{Seq: 10, Conn: 5, Kind: fakemta.EventConnect, Local: "127.0.0.11:26"})
	h.route(tx(11, 5, "tb"))
	if !strings.Contains(a.misroute, "to a next hop (127.0.0.2:26), not to lane 1") {
		t.Errorf("a at a next hop: %q", a.misroute)
	}
	if !strings.Contains(b.misroute, "to lane 1 (127.0.0.11:26), not to its next hop") {
		t.Errorf("b on lane 1: %q", b.misroute)
	}
	if a.h.StepError != a.misroute || b.h.StepError != b.misroute {
		t.Errorf("step errors %q, %q: want the misrouting", a.h.StepError, b.h.StepError)
	}
}

// A history holds every fault that ended between its Started and its
// Ended, and no other: the hub stamps the three under one lock, and a
// scenario's end waits for a fault being delivered to it. Scenarios come
// and go while faults are carried out one after another.
func TestHistoryHoldsEveryFaultBetweenItsEnds(t *testing.T) {
	h := &Hub{runs: map[string]*Run{}, conns: map[uint64]*connRoute{}}
	// A neighbour holds the fake MTA down: an ending scenario leaves it so.
	h.down, h.up = &Run{}, make(chan struct{})
	by := &Run{track: newTracker(), tenant: "by", sc: &scenarios.Scenario{Name: "by"}, hub: h, base: context.Background()}
	h.runs[by.tenant] = by
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_ = h.fault(by, history.FaultFlush, "", func() error { return nil })
		}
	}()
	var runs []*Run
	faults := func() int {
		by.mu.Lock()
		defer by.mu.Unlock()
		return len(by.h.Faults)
	}
	for i := 0; i < 200 || faults() < 2000; i++ {
		r := &Run{track: newTracker(), tenant: fmt.Sprintf("t%d", i), hub: h, base: context.Background(), policy: &fakemta.Policy{}}
		if err := h.register(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		r.registered = true
		r.unregister()
		runs = append(runs, r)
	}
	close(stop)
	wg.Wait()
	by.mu.Lock()
	all := by.h.Faults
	by.mu.Unlock()
	bad := 0
	for _, r := range runs {
		has := map[time.Time]bool{}
		for _, f := range r.h.Faults {
			has[f.End] = true
		}
		for _, f := range all {
			within := f.End.After(r.h.Started) && f.End.Before(r.h.Ended)
			if within != has[f.End] && bad < 5 {
				bad++
				t.Errorf("%s ran %s–%s; a fault that ended at %s: in its history %v, want %v", r.tenant,
					r.h.Started.Format("15:04:05.000000"), r.h.Ended.Format("15:04:05.000000"), f.End.Format("15:04:05.000000"), has[f.End], within)
			}
		}
	}
	if len(all) < 10 {
		t.Fatalf("only %d faults carried out meanwhile: the test shows nothing", len(all))
	}
}
