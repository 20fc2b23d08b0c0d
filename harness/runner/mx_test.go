package runner

import (
	"context"
	"fmt"
	"net"
	"testing"

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
