package runner

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// TestAboutMX: a scenario is about MX hosts when it needs multi-mx or its
// policy (or one it swaps in) has mx; such a scenario runs alone.
func TestAboutMX(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       bool
	}{
		{"plain", "name: p\nsteps:\n  - send: {to: [a@rcpt.test]}\n", false},
		{"needs multi-mx", "name: p\nneeds: [multi-mx]\nsteps:\n  - send: {to: [a@rcpt.test]}\n", true},
		{"policy with mx", "name: p\npolicy:\n  mx: {state: split}\nsteps:\n  - send: {to: [a@rcpt.test]}\n", true},
		{"swapped-in policy with mx", "name: p\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - policy:\n      mx: {state: shared}\n", true},
	} {
		scs, err := scenarios.LoadBytes("s.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		sc := &scs[0]
		if got := AboutMX(sc); got != tc.want {
			t.Errorf("%s: AboutMX = %v, want %v", tc.name, got, tc.want)
		}
		if iso, _ := Isolate(sc); (iso == Alone) != tc.want {
			t.Errorf("%s: isolation %v", tc.name, iso)
		}
	}
}

// TestHubOpensBackupMXOnlyForMXScenarios: the hub's fake MTA listens on the
// first next hop only; while a scenario about MX hosts runs, on every one
// (MX 2 answers), and after it the backup MX is a closed port again, so a
// relay's failover in another scenario meets a refused connection instead
// of a second chance that would undo the scenario's fault.
func TestHubOpensBackupMXOnlyForMXScenarios(t *testing.T) {
	hops := mxPair(t)
	opt := &Options{Profile: &profile.Profile{Name: "t", NextHop: hops}}
	ctx := context.Background()
	hub, err := NewHub(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	opt.Hub = hub
	answers := func(addr string) bool {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	if !answers(hops[0]) || answers(hops[1]) {
		t.Fatalf("before any scenario: MX 1 answers %v, MX 2 %v; want only MX 1", answers(hops[0]), answers(hops[1]))
	}
	plain := &scenarios.Scenario{Name: "greylist-once", File: "p.yaml"}
	r, err := Begin(ctx, opt, plain)
	if err != nil {
		t.Fatal(err)
	}
	if answers(hops[1]) {
		t.Error("a plain scenario: MX 2 answers")
	}
	r.Close()
	for round := range 2 { // and again: the listener comes back with its ordinal
		mx := &scenarios.Scenario{Name: "multi-mx", File: "m.yaml", DeclaredNeeds: []string{"multi-mx"}}
		r, err = Begin(ctx, opt, mx)
		if err != nil {
			t.Fatal(err)
		}
		if !answers(hops[0]) || !answers(hops[1]) {
			t.Errorf("round %d, a scenario about MX hosts: MX 1 answers %v, MX 2 %v; want both", round, answers(hops[0]), answers(hops[1]))
		}
		if round == 1 { // a fake MTA restart while it runs: both again
			if err := hub.stopFake(); err != nil {
				t.Fatal(err)
			}
			if err := hub.startFake(ctx); err != nil {
				t.Fatal(err)
			}
			if !answers(hops[0]) || !answers(hops[1]) {
				t.Errorf("after a fake MTA restart: MX 1 answers %v, MX 2 %v; want both", answers(hops[0]), answers(hops[1]))
			}
		}
		r.Close()
		if !answers(hops[0]) || answers(hops[1]) {
			t.Errorf("round %d, after it: MX 1 answers %v, MX 2 %v; want only MX 1", round, answers(hops[0]), answers(hops[1]))
		}
	}
}

// mxPair finds one port free on 127.0.0.2 and 127.0.0.3.
func mxPair(t *testing.T) []string {
	for range 20 {
		a, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.Addr().(*net.TCPAddr).Port
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", port))
		a.Close()
		if err == nil {
			b.Close()
			return []string{fmt.Sprintf("127.0.0.2:%d", port), fmt.Sprintf("127.0.0.3:%d", port)}
		}
	}
	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3")
	return nil
}

// TestMXScenariosRunTogether: scenarios alone only because they are about
// MX hosts form one group: they hold the relay and the fake MTA together
// (each its own tenant and policy, the backup MX open for all of them,
// neither owning the connection-level stages), and nothing else runs
// beside them. One that is also alone for another reason stays alone.
func TestMXScenariosRunTogether(t *testing.T) {
	hops := mxPair(t)
	opt := &Options{Profile: &profile.Profile{Name: "t", NextHop: hops, Submit: profile.Submit{Addr: blackholeRelay(t)}}, Relay: stubRelay{}}
	split := load(t, "name: split\nneeds: [multi-mx]\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: {for: delivered, timeout: 700ms}\n")
	excl := load(t, "name: excl\nexclusive: true\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: {for: delivered, timeout: 300ms}\n")
	shared := load(t, "name: shared\npolicy:\n  mx: {state: shared}\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: {for: delivered, timeout: 700ms}\n")
	helo := load(t, "name: helo\npolicy:\n  mx: {state: shared}\n  rules:\n    - match: {stage: helo, connection: \"1\"}\n      close: \"421 4.3.2 bye\"\nsteps:\n  - send: {to: [a@rcpt.test]}\n  - wait: {for: delivered, timeout: 300ms}\n")
	for _, c := range []struct {
		sc   *scenarios.Scenario
		want string
	}{{split, "multi-mx"}, {shared, "multi-mx"}, {excl, ""}, {helo, ""}} {
		if iso, _ := Isolate(c.sc); iso != Alone {
			t.Errorf("%s: %s, want alone", c.sc.Name, iso)
		}
		if got := AloneGroup(c.sc); got != c.want {
			t.Errorf("%s: group %q, want %q", c.sc.Name, got, c.want)
		}
	}
	hs, _, errs := RunScenarios(context.Background(), opt, []*scenarios.Scenario{split, excl, shared, helo}, 0)
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s: %v", hs[i].Scenario, err)
		}
	}
	// Each holds the world from its start through its wait (it lets the
	// world go after it, before its history ends: the watch overlaps).
	held := []time.Duration{700 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond, 300 * time.Millisecond}
	overlap := func(a, b int) bool {
		return hs[a].Started.Before(hs[b].Started.Add(held[b])) && hs[b].Started.Before(hs[a].Started.Add(held[a]))
	}
	if !overlap(0, 2) {
		t.Errorf("the two MX scenarios ran one after the other: from %s and from %s", hs[0].Started, hs[2].Started)
	}
	for _, p := range [][2]int{{0, 1}, {2, 1}, {0, 3}, {2, 3}, {1, 3}} {
		if overlap(p[0], p[1]) {
			t.Errorf("%s ran beside %s", hs[p[0]].Scenario, hs[p[1]].Scenario)
		}
	}
	c, err := net.Dial("tcp", hops[1])
	if err == nil {
		c.Close()
		t.Error("MX 2 still answers after the MX scenarios")
	}
}
