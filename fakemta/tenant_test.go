package fakemta

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// tenantMsg is a message of tenant name: the label goes into the sender's
// and the recipients' domains, as the harness does.
func tenantMsg(name string, rcpts ...string) msgSpec {
	m := msgSpec{sender: "sender+gh-1@" + name + ".client.test", msgID: name + "@client.test", body: "hello\r\n"}
	for _, r := range rcpts {
		l, d, _ := strings.Cut(r, "@")
		m.rcpts = append(m.rcpts, l+"@"+name+"."+d)
	}
	return m
}

// Two tenants with opposite policies at the same time get opposite
// replies; rules match the addresses as the scenario wrote them (the
// tenant's label stripped) and the journal names each transaction's tenant.
func TestTenantsOppositePoliciesAtOnce(t *testing.T) {
	s := startServer(t, "", nil)
	deny := parseTestPolicy(t, `rules: [{match: {stage: rcpt, rcpt: "carol@rcpt.test", sender: "sender+*@client.test"}, reply: "451 4.7.1 Greylisted"}]`)
	if err := s.SetTenant("ta", deny, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("tb", &Policy{}, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	codes := map[string][]int{}
	var mu sync.Mutex
	for range 5 {
		for _, name := range []string{"ta", "tb"} {
			wg.Go(func() {
				code, _ := deliver(t, s.Addr(), tenantMsg(name, "carol@rcpt.test"))
				mu.Lock()
				codes[name] = append(codes[name], code)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	for _, c := range codes["ta"] {
		if c != 451 {
			t.Errorf("tenant ta (rule 451): got %v", codes["ta"])
			break
		}
	}
	for _, c := range codes["tb"] {
		if c != 0 {
			t.Errorf("tenant tb (accept): got %v", codes["tb"])
			break
		}
	}
	// Untenanted traffic follows the server's own policy (accept).
	if code, err := deliver(t, s.Addr(), msgSpec{sender: "x@client.test", rcpts: []string{"carol@rcpt.test"}, msgID: "u@x", body: "x\r\n"}); code != 0 {
		t.Errorf("no tenant: %d %v, want accepted", code, err)
	}
	var n map[string]int
	pollUntil(t, "11 transactions journaled", func() bool {
		n = map[string]int{}
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventTransaction {
				n[ev.Tenant]++
				if ev.Tenant != "" && !strings.Contains(ev.Transaction.Rcpts[0].Addr, "@"+ev.Tenant+".") {
					t.Fatalf("transaction to %s journaled as tenant %q", ev.Transaction.Rcpts[0].Addr, ev.Tenant)
				}
			}
		}
		return n["ta"]+n["tb"]+n[""] == 11
	})
	if n["ta"] != 5 || n["tb"] != 5 || n[""] != 1 {
		t.Fatalf("transactions by tenant: %v", n)
	}
}

// Greylist state, attempt counters, policy swaps and wipes are per tenant.
func TestTenantsKeepStateApart(t *testing.T) {
	clock := newClock()
	s := startServer(t, "", func(c *Config) { c.Now = clock.Now })
	gl := parseTestPolicy(t, "greylist: {delay: 300s, auto_whitelist_after: 0}\n")
	for _, n := range []string{"ta", "tb"} {
		if err := s.SetTenant(n, gl, TenantOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	at := func(name string, want int) {
		t.Helper()
		if code, err := deliver(t, s.Addr(), tenantMsg(name, "carol@rcpt.test")); code != want {
			t.Fatalf("tenant %s: %d %v, want %d", name, code, err, want)
		}
	}
	at("ta", 451)
	clock.Add(300 * time.Second)
	at("ta", 0)   // ta's triplet has matured
	at("tb", 451) // tb has never seen the same triplet
	// A wipe of ta forgets ta only.
	clock.Add(300 * time.Second)
	if err := s.WipeTenant("ta"); err != nil {
		t.Fatal(err)
	}
	at("tb", 0)
	at("ta", 451)
	// Attempt counters: each tenant's first attempt is 1.
	first := parseTestPolicy(t, `rules: [{match: {rcpt: "dave@rcpt.test", attempt: "1"}, reply: "550 5.1.1 first"}]`)
	s.SetTenant("ta", first, TenantOptions{})
	s.SetTenant("tb", first, TenantOptions{})
	for _, n := range []string{"ta", "tb"} {
		if code, _ := deliver(t, s.Addr(), tenantMsg(n, "dave@rcpt.test")); code != 550 {
			t.Fatalf("tenant %s first attempt: %d, want 550", n, code)
		}
		if code, _ := deliver(t, s.Addr(), tenantMsg(n, "dave@rcpt.test")); code != 0 {
			t.Fatalf("tenant %s second attempt: %d, want accepted", n, code)
		}
	}
	// A swap for tb leaves ta's policy alone.
	s.SetTenant("tb", parseTestPolicy(t, `rules: [{match: {rcpt: "*"}, reply: "550 5.7.1 no"}]`), TenantOptions{})
	at("tb", 550)
	at("ta", 0)
	// After removal tb's traffic follows the server's own policy.
	if !s.RemoveTenant("tb") || s.RemoveTenant("tb") {
		t.Fatal("RemoveTenant: want true once, then false")
	}
	at("tb", 0)
}

// A DSN to a tenant's tagged sender is the tenant's: MAIL FROM:<> has no
// label, the recipient does.
func TestTenantDSNToTaggedSender(t *testing.T) {
	s := startServer(t, "", nil)
	s.SetTenant("ta", parseTestPolicy(t, `rules: [{match: {rcpt: "sender+*@client.test"}, reply: "452 4.3.1 full"}]`), TenantOptions{})
	if code, _ := deliver(t, s.Addr(), msgSpec{sender: "", rcpts: []string{"sender+gh-1@ta.client.test"}, msgID: "d@x", body: "x\r\n"}); code != 452 {
		t.Fatalf("DSN to ta's sender: %d, want ta's 452", code)
	}
	ev := waitJournal(t, s, "the DSN's transaction", func(e Event) bool { return e.Kind == EventTransaction })
	if ev.Tenant != "ta" {
		t.Fatalf("DSN transaction's tenant %q, want ta", ev.Tenant)
	}
}

// The connection-level stages follow the one tenant that owns them; a
// second owner is refused; connection numbers count from the tenant's start.
func TestTenantOwnsConnectionStages(t *testing.T) {
	s := startServer(t, "", nil)
	deliver(t, s.Addr(), flavorBase) // the server's connection 1: not the tenant's
	p := parseTestPolicy(t, `rules: [{match: {stage: helo, connection: "1"}, close: "421 4.3.2 closing"}]`)
	if err := s.SetTenant("tx", p, TenantOptions{Connections: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("ty", &Policy{}, TenantOptions{Connections: true}); err == nil {
		t.Fatal("a second owner of the connection-level stages was accepted")
	}
	if code, _ := deliver(t, s.Addr(), tenantMsg("tx", "a@rcpt.test")); code != 421 {
		t.Fatalf("tx's connection 1: %d, want 421 at HELO", code)
	}
	if code, err := deliver(t, s.Addr(), tenantMsg("tx", "a@rcpt.test")); code != 0 {
		t.Fatalf("tx's connection 2: %d %v, want accepted", code, err)
	}
	// The owner gives the stages up and keeps its tenant; another takes them.
	if err := s.SetTenant("tx", p, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetTenant("ty", &Policy{}, TenantOptions{Connections: true}); err != nil {
		t.Fatalf("owner after the first gave up: %v", err)
	}
	if code, err := deliver(t, s.Addr(), tenantMsg("tx", "a@rcpt.test")); code != 0 {
		t.Fatalf("tx after giving the stages up: %d %v, want accepted", code, err)
	}
}

// Split MX state per tenant: a tenant's policy says split, another's
// shared, on the same two listeners.
func TestTenantMXStateSplit(t *testing.T) {
	s, clock, mx1, mx2 := mxServer(t, func(*Config) {}, MXShared)
	split := parseTestPolicy(t, "greylist: {delay: 300s, auto_whitelist_after: 0}\nmx: {state: split}\n")
	shared := parseTestPolicy(t, "greylist: {delay: 300s, auto_whitelist_after: 0}\nmx: {state: shared}\n")
	s.SetTenant("ts", split, TenantOptions{})
	s.SetTenant("th", shared, TenantOptions{})
	at := func(addr, name string, want int) {
		t.Helper()
		if code, err := deliver(t, addr, tenantMsg(name, "b@remote.test")); code != want {
			t.Fatalf("tenant %s at %s: %d %v, want %d", name, addr, code, err, want)
		}
	}
	at(mx1, "ts", 451)
	at(mx1, "th", 451)
	clock.Add(300 * time.Second)
	at(mx1, "ts", 0)
	at(mx1, "th", 0)
	at(mx2, "ts", 451) // split: the second MX has not seen it
	at(mx2, "th", 0)   // shared: one greylist
}

// A fake MTA restarted on the same state rebuilds a tenant's greylist
// when the tenant registers again.
func TestTenantStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	gl := parseTestPolicy(t, "greylist: {delay: 300s, auto_whitelist_after: 0}\n")
	mod := func(c *Config) { c.StateDir, c.Now = dir, clock.Now }
	s := startServer(t, "", mod)
	s.SetTenant("ta", gl, TenantOptions{})
	if code, _ := deliver(t, s.Addr(), tenantMsg("ta", "carol@rcpt.test")); code != 451 {
		t.Fatalf("first: %d, want 451", code)
	}
	waitJournal(t, s, "the transaction", func(e Event) bool { return e.Kind == EventTransaction })
	s.Close()
	s2 := startServer(t, "", mod)
	s2.SetTenant("ta", gl, TenantOptions{})
	s2.SetTenant("tb", gl, TenantOptions{})
	clock.Add(300 * time.Second)
	if code, err := deliver(t, s2.Addr(), tenantMsg("ta", "carol@rcpt.test")); code != 0 {
		t.Fatalf("ta after the restart: %d %v, want the matured triplet to pass", code, err)
	}
	if code, _ := deliver(t, s2.Addr(), tenantMsg("tb", "carol@rcpt.test")); code != 451 {
		t.Fatalf("tb after the restart: %d, want 451 (never seen)", code)
	}
	// Tenants given at start get theirs in the same pass over the journal.
	waitJournal(t, s2, "tb's transaction", func(e Event) bool { return e.Kind == EventTransaction && e.Tenant == "tb" })
	s2.Close()
	s3 := startServer(t, "", func(c *Config) {
		mod(c)
		c.Tenants = []TenantSpec{{Name: "ta", Policy: gl}, {Name: "tb", Policy: gl}}
	})
	clock.Add(300 * time.Second)
	for _, n := range []string{"ta", "tb"} {
		if code, err := deliver(t, s3.Addr(), tenantMsg(n, "carol@rcpt.test")); code != 0 {
			t.Fatalf("%s after the second restart: %d %v, want the matured triplet to pass", n, code, err)
		}
	}
	if code, _ := deliver(t, s3.Addr(), tenantMsg("tc", "carol@rcpt.test")); code != 0 {
		t.Fatalf("no tenant: %d, want the server's policy (accept)", code)
	}
}

// The same over the control API: tenants registered with PUT, opposite
// replies, a per-tenant wipe, DELETE, and 405s with Allow.
func TestAPITenants(t *testing.T) {
	f := newAPIFixture(t, "", "tok", nil)
	put := func(path, body string, want int) {
		t.Helper()
		code, _, b := f.do(t, http.MethodPut, path, strings.NewReader(body))
		if code != want {
			t.Fatalf("PUT %s: %d %s, want %d", path, code, b, want)
		}
	}
	put("/api/v1/tenants/ta/policy", `rules: [{match: {rcpt: "carol@rcpt.test"}, reply: "550 5.1.1 no such user"}]`, http.StatusCreated)
	put("/api/v1/tenants/tb/policy", "greylist: {delay: 1h, auto_whitelist_after: 0}\n", http.StatusCreated)
	put("/api/v1/tenants/tc/policy?connections=true", "{}", http.StatusCreated)
	put("/api/v1/tenants/td/policy?connections=true", "{}", http.StatusConflict)
	put("/api/v1/tenants/Bad_Name/policy", "{}", http.StatusBadRequest)
	put("/api/v1/tenants/ta/policy", "rules: [{match: {stage: nope}}]", http.StatusBadRequest)
	var ts []TenantInfo
	f.getJSON(t, "/api/v1/tenants", &ts)
	if len(ts) != 3 || ts[0].Name != "ta" || !ts[2].Connections {
		t.Fatalf("GET /api/v1/tenants: %+v", ts)
	}
	if code := apiSend(t, f.srv.Addr(), "s+1@ta.client.test", "carol@ta.rcpt.test"); code != 550 {
		t.Fatalf("tenant ta: %d, want 550", code)
	}
	if code := apiSend(t, f.srv.Addr(), "s+1@tb.client.test", "carol@tb.rcpt.test"); code != 451 {
		t.Fatalf("tenant tb: %d, want 451", code)
	}
	var es []GreylistEntry
	f.getJSON(t, "/api/v1/tenants/tb/greylist", &es)
	if len(es) != 1 || es[0].Recipient != "carol@rcpt.test" {
		t.Fatalf("tb's greylist: %+v (want one record, the address as the scenario wrote it)", es)
	}
	if code, _, b := f.do(t, http.MethodPost, "/api/v1/tenants/tb/wipe", nil); code != http.StatusOK {
		t.Fatalf("wipe: %d %s", code, b)
	}
	f.getJSON(t, "/api/v1/tenants/tb/greylist", &es)
	if len(es) != 0 {
		t.Fatalf("tb's greylist after its wipe: %+v", es)
	}
	var doc PolicyDoc
	f.getJSON(t, "/api/v1/tenants/ta/policy", &doc)
	if len(doc.Rules) != 1 || doc.Rules[0].Reply != "550 5.1.1 no such user" {
		t.Fatalf("ta's policy: %+v", doc)
	}
	if code, _, _ := f.do(t, http.MethodDelete, "/api/v1/tenants/ta", nil); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _, _ := f.do(t, http.MethodDelete, "/api/v1/tenants/ta", nil); code != http.StatusNotFound {
		t.Fatalf("DELETE again: %d, want 404", code)
	}
	if code := apiSend(t, f.srv.Addr(), "s+1@ta.client.test", "carol@ta.rcpt.test"); code != 0 {
		t.Fatalf("after DELETE ta's traffic follows the server's policy: %d", code)
	}
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/api/v1/tenants/ta", "DELETE"},
		{http.MethodPost, "/api/v1/tenants/ta/policy", "GET, HEAD, PUT"},
		{http.MethodGet, "/api/v1/tenants/ta/wipe", "POST"},
		{http.MethodPost, "/api/v1/tenants", "GET, HEAD"},
	} {
		code, hdr, b := f.do(t, c.method, c.path, nil)
		var e apiError
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != c.allow || json.Unmarshal(b, &e) != nil || e.Error == "" {
			t.Errorf("%s %s: %d Allow %q %s, want 405 Allow %q with a JSON error", c.method, c.path, code, hdr.Get("Allow"), b, c.allow)
		}
	}
	evs := journalEvents(t, f.srv)
	seen := map[string]bool{}
	for _, ev := range evs {
		if ev.Kind == EventControl && ev.Tenant != "" {
			seen[ev.Note+" "+ev.Tenant] = true
		}
	}
	for _, want := range []string{"tenant ta", "tenant tb", "tenant connections tc", "wipe-state tb", "tenant-remove ta"} {
		if !seen[want] {
			t.Errorf("no control event %q in the journal (%v)", want, seen)
		}
	}
}

// A tenant's tarpit at DATA is journaled as the tenant's when it begins:
// whoever waits for the held DATA phase (a restart during data) learns of
// it then, not when the transaction ends after the delay.
func TestTenantTarpitEventNamesTenant(t *testing.T) {
	s := startServer(t, "", nil)
	hold := parseTestPolicy(t, `rules: [{match: {stage: data}, delay: 200ms}]`)
	if err := s.SetTenant("ta", hold, TenantOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, err := deliver(t, s.Addr(), tenantMsg("ta", "carol@rcpt.test")); code != 0 {
		t.Fatalf("delivery: %d %v", code, err)
	}
	var tarpit *Event
	pollUntil(t, "the tarpit journaled", func() bool {
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventControl && strings.HasPrefix(ev.Note, "tarpit") {
				tarpit = &ev
				return true
			}
		}
		return false
	})
	if tarpit.Tenant != "ta" {
		t.Errorf("tarpit event %+v: tenant %q, want ta", *tarpit, tarpit.Tenant)
	}
}
