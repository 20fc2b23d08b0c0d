package fakemta

import (
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// mxServer runs a fake MTA whose policy names two MX hosts on 127.0.0.2
// and 127.0.0.3 (free ports) and returns it with their addresses.
func mxServer(t *testing.T, mod func(*Config), state string) (*Server, *fakeClock, string, string) {
	t.Helper()
	clock := newClock()
	pol := parseTestPolicy(t, "greylist: {delay: 300s, auto_whitelist_after: 0}\nmx:\n  state: "+state+"\n  hosts: [127.0.0.2:0, 127.0.0.3:0]\n")
	cfg := Config{Policy: pol, Now: clock.Now, Logf: t.Logf, ReadTimeout: 10 * time.Second}
	mod(&cfg)
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	as := s.Addrs()
	if len(as) != 2 || !strings.HasPrefix(as[0].String(), "127.0.0.2:") || !strings.HasPrefix(as[1].String(), "127.0.0.3:") {
		t.Fatalf("listeners %v, want the two MX hosts", as)
	}
	return s, clock, as[0].String(), as[1].String()
}

// mxSplit: split state greylists again at each MX.
func mxSplit(t *testing.T, mod func(*Config)) {
	s, clock, mx1, mx2 := mxServer(t, mod, MXSplit)
	at := func(addr string, want int) {
		t.Helper()
		if code, err := deliver(t, addr, flavorBase); code != want {
			t.Fatalf("at %s: got %d %v, want %d", addr, code, err, want)
		}
	}
	at(mx1, 451)
	clock.Add(300 * time.Second)
	at(mx1, 0)
	at(mx2, 451) // the second MX has never seen the triplet
	clock.Add(300 * time.Second)
	at(mx2, 0)
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 2 || msgs[0].MX != mx1 || msgs[1].MX != mx2 {
		t.Fatalf("messages' MX: %+v", msgs)
	}
	// A transaction is journaled when its session ends, after the client's QUIT.
	var txs []Transaction
	pollUntil(t, "four transactions journaled", func() bool {
		txs = txs[:0]
		for _, e := range journalEvents(t, s) {
			if e.Kind == EventTransaction {
				txs = append(txs, *e.Transaction)
			}
		}
		return len(txs) == 4
	})
	if txs[0].MX != mx1 || txs[2].MX != mx2 || !strings.HasPrefix(txs[2].Rcpts[0].Key, "mx="+mx2+"|") {
		t.Fatalf("transactions' MX: %+v", txs)
	}
	es := s.Greylist()
	if len(es) != 2 || !strings.HasPrefix(es[0].Key, "mx="+mx1+"|") || !strings.HasPrefix(es[1].Key, "mx="+mx2+"|") {
		t.Fatalf("greylist entries %+v", es)
	}
}

// mxShared: shared state passes at the other MX.
func mxShared(t *testing.T, mod func(*Config)) {
	s, clock, mx1, mx2 := mxServer(t, mod, MXShared)
	if code, err := deliver(t, mx1, flavorBase); code != 451 {
		t.Fatalf("first at mx1: %d %v", code, err)
	}
	clock.Add(300 * time.Second)
	if code, err := deliver(t, mx2, flavorBase); code != 0 {
		t.Fatalf("retry at mx2: %d %v", code, err)
	}
	if es := s.Greylist(); len(es) != 1 || es[0].Passes != 1 {
		t.Fatalf("one shared record: %+v", es)
	}
}

func TestMXStateFlagOverridesPolicy(t *testing.T) {
	clock := newClock()
	s := startServer(t, "greylist: {delay: 300s}\nmx: {state: shared}\n", func(c *Config) { c.Now, c.MXState = clock.Now, MXSplit })
	l, err := net.Listen("tcp", "127.0.0.3:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l)
	deliver(t, s.Addr(), flavorBase)
	clock.Add(300 * time.Second)
	if code, err := deliver(t, l.Addr().String(), flavorBase); code != 451 {
		t.Fatalf("split by Config.MXState: %d %v", code, err)
	}
}

// TestCLIListensOnThePolicysMXHosts: without --listen, `greyharness
// fakemta` listens on the policy's mx.hosts instead of its default address.
func TestCLIListensOnThePolicysMXHosts(t *testing.T) {
	pol := t.TempDir() + "/policy.yaml"
	if err := os.WriteFile(pol, []byte("greylist: {}\nmx: {state: split, hosts: [127.0.0.2:0, 127.0.0.3:0]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	cmd, lines, stderr := startCLI(t, ctx, nil, "--policy", pol)
	a1 := nextLine(t, ctx, lines, "fakemta: listening on ")
	a2 := nextLine(t, ctx, lines, "fakemta: listening on ")
	cmd.Process.Signal(os.Interrupt)
	var rest []string
	for l := range lines {
		rest = append(rest, l)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, stderr %s", err, stderr.String())
	}
	if !strings.HasPrefix(a1, "127.0.0.2:") || !strings.HasPrefix(a2, "127.0.0.3:") {
		t.Fatalf("listening on %s and %s, want the two MX hosts", a1, a2)
	}
	for _, l := range rest {
		if strings.Contains(l, "listening on") {
			t.Fatalf("a third listener: %q", l)
		}
	}
}

// TestRuleMatchesMX: `match.mx` picks the listener by its ordinal, so a
// scenario can make the first MX defer while the second answers, whatever
// addresses the relay profile gives them.
func TestRuleMatchesMX(t *testing.T) {
	pol := parseTestPolicy(t, "rules:\n  - match: {stage: rcpt, mx: 1}\n    reply: \"451 4.3.2 Primary MX busy\"\n  - match: {stage: rcpt, mx: \"3-\"}\n    reply: \"550 5.7.1 no\"\n")
	s, err := New(Config{Policy: pol, Logf: t.Logf, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, host := range []string{"127.0.0.2:0", "127.0.0.3:0", "127.0.0.4:0"} {
		l, err := net.Listen("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		s.Serve(l)
		addrs = append(addrs, l.Addr().String())
	}
	t.Cleanup(func() { s.Close() })
	for i, want := range []int{451, 0, 550} {
		if code, err := deliver(t, addrs[i], flavorBase); code != want {
			t.Errorf("MX %d (%s): got %d %v, want %d", i+1, addrs[i], code, err, want)
		}
	}
	doc := PolicyDocument(s.Policy())
	if doc.Rules[0].Match.MX != "1" || doc.Rules[1].Match.MX != "3-" {
		t.Errorf("policy document's mx: %+v", doc.Rules)
	}
}

func TestRuleMXBadValue(t *testing.T) {
	_, err := ParsePolicy("p.yaml", []byte("rules:\n  - match: {mx: zero}\n    accept: true\n"))
	if err == nil || !strings.Contains(err.Error(), "p.yaml:2:17: mx:") {
		t.Fatalf("got %v, want a p.yaml:2:17 mx error", err)
	}
}

// TestUnlistenClosesAnMXHost: an MX host added after Start (ListenMore)
// and taken away again (Unlisten) refuses connections, and listened on
// again it is MX 2 once more, its rules with it.
func TestUnlistenClosesAnMXHost(t *testing.T) {
	pol := parseTestPolicy(t, "rules:\n  - match: {stage: rcpt, mx: 2}\n    reply: \"451 4.3.2 Backup MX busy\"\n")
	s, err := New(Config{Listen: []string{"127.0.0.2:0"}, Policy: pol, Logf: t.Logf, ReadTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	for round := range 2 {
		if err := s.ListenMore([]string{"127.0.0.3:0"}); err != nil {
			t.Fatal(err)
		}
		as := s.Addrs()
		if len(as) != 2 {
			t.Fatalf("round %d: listeners %v, want two", round, as)
		}
		mx2 := as[1].String()
		if code, err := deliver(t, mx2, flavorBase); code != 451 {
			t.Fatalf("round %d: at MX 2 %s: %d %v, want the mx: 2 rule's 451", round, mx2, code, err)
		}
		s.Unlisten([]string{"127.0.0.3:0", "127.0.0.2:0"}) // MX 1 was configured: it stays
		if c, err := net.Dial("tcp", mx2); err == nil {
			c.Close()
			t.Fatalf("round %d: %s still answers after Unlisten", round, mx2)
		}
		if code, err := deliver(t, s.Addr(), flavorBase); code != 0 {
			t.Fatalf("round %d: MX 1: %d %v", round, code, err)
		}
	}
}
