package fakemta

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// laneServer starts a server on 127.0.0.1 with two lanes on 127.0.0.11
// and 127.0.0.12 (free ports).
func laneServer(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Lanes: []string{"127.0.0.11:0", "127.0.0.12:0"}, Logf: t.Logf, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for n := 1; n <= 2; n++ {
		if a := s.LaneAddr(n); !strings.HasPrefix(a, "127.0.0.1"+string(rune('0'+n))+":") {
			t.Fatalf("lane %d listens on %q", n, a)
		}
	}
	if len(s.Addrs()) != 1 {
		t.Fatalf("Addrs %v: lanes are not MX hosts", s.Addrs())
	}
	return s
}

// Two tenants each holding a lane, with opposite connection-level
// policies, get opposite replies on their own lanes at the same time; the
// primary listener keeps the server's own policy, and each lane numbers
// its own connections.
func TestLanesOppositeConnectionPoliciesAtOnce(t *testing.T) {
	s := laneServer(t)
	refuse := parseTestPolicy(t, `rules: [{match: {stage: helo, connection: "1"}, close: "421 4.3.2 closing"}]`)
	if err := s.SetTenant("l1-ta", refuse, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("l2-tb", &Policy{}, TenantOptions{Lane: 2}); err != nil {
		t.Fatal(err)
	}
	a, b, main := dialRaw(t, s.LaneAddr(1)), dialRaw(t, s.LaneAddr(2)), dialRaw(t, s.Addr())
	a.greeting()
	b.greeting()
	main.greeting()
	// Both open at once: lane 1's connection 1 meets the 421, lane 2's does not.
	a.must("EHLO relay.client.test", 421)
	b.must("EHLO relay.client.test", 250)
	main.must("EHLO relay.client.test", 250)
	if !a.closedByServer() {
		t.Fatal("lane 1: the line stays open after 421")
	}
	// Lane 1's connection 2 is its tenant's second: accepted.
	if code, err := deliver(t, s.LaneAddr(1), tenantMsg("l1-ta", "a@rcpt.test")); code != 0 {
		t.Fatalf("lane 1, connection 2: %d %v, want accepted", code, err)
	}
	if code, err := deliver(t, s.LaneAddr(2), tenantMsg("l2-tb", "a@rcpt.test")); code != 0 {
		t.Fatalf("lane 2: %d %v, want accepted", code, err)
	}
	ti := s.Tenants()
	if len(ti) != 2 || ti[0].Lane != 1 || ti[1].Lane != 2 {
		t.Fatalf("Tenants %+v, want lanes 1 and 2", ti)
	}
}

// A lane is held by one tenant at a time; it is free again once its
// holder lets it go or is removed, and a lane no tenant holds follows the
// server's own policy (not the owner of the primary next hop's stages).
func TestLaneHeldByOne(t *testing.T) {
	s := laneServer(t)
	refuse := parseTestPolicy(t, `rules: [{match: {stage: helo}, close: "421 4.3.2 closing"}]`)
	if err := s.SetTenant("ta", refuse, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("tb", &Policy{}, TenantOptions{Lane: 1}); !errors.Is(err, ErrLaneConflict) {
		t.Fatalf("second holder of lane 1: %v, want ErrLaneConflict", err)
	}
	for _, n := range []int{-1, 3} {
		if err := s.SetTenant("tc", &Policy{}, TenantOptions{Lane: n}); err == nil {
			t.Fatalf("lane %d accepted with 2 lanes", n)
		}
	}
	if err := s.SetTenant("td", &Policy{}, TenantOptions{Lane: 2, Connections: true}); err == nil {
		t.Fatal("a tenant holding a lane and the primary's connection-level stages was accepted")
	}
	// The owner of the primary next hop's stages does not reach lane 2.
	if err := s.SetTenant("to", refuse, TenantOptions{Connections: true}); err != nil {
		t.Fatal(err)
	}
	if code, err := deliver(t, s.LaneAddr(2), flavorBase); code != 0 {
		t.Fatalf("free lane 2: %d %v, want the server's own policy (accept)", code, err)
	}
	if code, _ := deliver(t, s.Addr(), flavorBase); code != 421 {
		t.Fatalf("primary: %d, want the owner's 421", code)
	}
	if code, _ := deliver(t, s.LaneAddr(1), flavorBase); code != 421 {
		t.Fatalf("lane 1: %d, want its holder's 421", code)
	}
	// ta lets lane 1 go and keeps its tenant; tb takes it.
	if err := s.SetTenant("ta", refuse, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("tb", &Policy{}, TenantOptions{Lane: 1}); err != nil {
		t.Fatalf("lane 1 after its holder let it go: %v", err)
	}
	if code, err := deliver(t, s.LaneAddr(1), flavorBase); code != 0 {
		t.Fatalf("lane 1 held by tb: %d %v, want accepted", code, err)
	}
	s.RemoveTenant("tb")
	if err := s.SetTenant("ta", refuse, TenantOptions{Lane: 1}); err != nil {
		t.Fatalf("lane 1 after its holder was removed: %v", err)
	}
}

// Config.Tenants may hold lanes (a fake MTA restarted under laned scenarios).
func TestLaneTenantsAtStart(t *testing.T) {
	refuse := parseTestPolicy(t, `rules: [{match: {stage: helo}, close: "421 4.3.2 closing"}]`)
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, Lanes: []string{"127.0.0.11:0"}, Logf: t.Logf,
		Tenants: []TenantSpec{{Name: "l1-ta", Policy: refuse, Options: TenantOptions{Lane: 1}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if code, _ := deliver(t, s.LaneAddr(1), flavorBase); code != 421 {
		t.Fatalf("lane 1: %d, want 421", code)
	}
	if code, err := deliver(t, s.Addr(), flavorBase); code != 0 {
		t.Fatalf("primary: %d %v, want accepted", code, err)
	}
	if _, err := New(Config{Lanes: []string{"127.0.0.11:0"}, Tenants: []TenantSpec{{Name: "a", Options: TenantOptions{Lane: 1}}, {Name: "b", Options: TenantOptions{Lane: 1}}}}); !errors.Is(err, ErrLaneConflict) {
		t.Fatalf("two tenants holding lane 1 at start: %v", err)
	}
}

// CloseLane refuses connections on one lane (and cuts those open there)
// while the other listeners answer; OpenLane listens again on the same
// address. Both are journaled as the holder's.
func TestCloseAndOpenLane(t *testing.T) {
	s := laneServer(t)
	if err := s.SetTenant("l1-ta", &Policy{}, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	addr := s.LaneAddr(1)
	open := dialRaw(t, addr)
	open.greeting()
	if err := s.CloseLane(1); err != nil {
		t.Fatal(err)
	}
	if !open.closedByServer() {
		t.Error("a connection on the closed lane stays open")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatal("the closed lane accepts connections")
	}
	if code, err := deliver(t, s.LaneAddr(2), flavorBase); code != 0 {
		t.Fatalf("lane 2 while lane 1 is closed: %d %v", code, err)
	}
	if code, err := deliver(t, s.Addr(), flavorBase); code != 0 {
		t.Fatalf("primary while lane 1 is closed: %d %v", code, err)
	}
	if err := s.CloseLane(1); err != nil {
		t.Fatalf("closing a closed lane: %v", err)
	}
	if err := s.OpenLane(1); err != nil {
		t.Fatal(err)
	}
	if s.LaneAddr(1) != addr {
		t.Fatalf("lane 1 reopened on %s, want %s", s.LaneAddr(1), addr)
	}
	if code, err := deliver(t, addr, tenantMsg("l1-ta", "a@rcpt.test")); code != 0 {
		t.Fatalf("lane 1 reopened: %d %v", code, err)
	}
	if err := s.OpenLane(1); err != nil {
		t.Fatalf("opening an open lane: %v", err)
	}
	if err := s.CloseLane(3); err == nil {
		t.Fatal("closing lane 3 of 2")
	}
	var notes []string
	for _, ev := range journalEvents(t, s) {
		if ev.Kind == EventControl && strings.HasPrefix(ev.Note, "lane ") {
			if ev.Tenant != "l1-ta" {
				t.Errorf("%q names tenant %q, want the holder", ev.Note, ev.Tenant)
			}
			notes = append(notes, ev.Note)
		}
	}
	if strings.Join(notes, ",") != "lane 1 stop,lane 1 start" {
		t.Errorf("journal notes %v", notes)
	}
}

// A lane's new holder starts with no connection of an earlier holder: a
// relay reusing a cached connection would carry the new holder's first
// message past its connect and helo rules (no greeting, no EHLO), and its
// fault would never be met.
func TestNewLaneHolderCutsEarlierConnections(t *testing.T) {
	s := laneServer(t)
	if err := s.SetTenant("l1-ta", &Policy{}, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	old := dialRaw(t, s.LaneAddr(1))
	old.greeting()
	old.must("EHLO relay.client.test", 250)
	s.RemoveTenant("l1-ta")
	refuse := parseTestPolicy(t, `rules: [{match: {stage: helo, connection: "1"}, close: "421 4.3.2 closing"}]`)
	if err := s.SetTenant("l1-tb", refuse, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	if !old.closedByServer() {
		t.Fatal("the earlier holder's connection on lane 1 stays open for the new holder")
	}
	fresh := dialRaw(t, s.LaneAddr(1))
	fresh.greeting()
	fresh.must("EHLO relay.client.test", 421)
	// Keeping the lane (a policy swap) cuts nothing.
	if err := s.SetTenant("l1-tb", &Policy{}, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	kept := dialRaw(t, s.LaneAddr(1))
	kept.greeting()
	kept.must("EHLO relay.client.test", 250)
	if err := s.SetTenant("l1-tb", &Policy{}, TenantOptions{Lane: 1}); err != nil {
		t.Fatal(err)
	}
	kept.must("NOOP", 250)
}
