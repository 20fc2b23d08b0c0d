package samplerelay

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// One test per bug, each showing the effect the harness must catch.

func TestBugKB950757(t *testing.T) {
	slow(t)
	t.Parallel()
	s, dir, cfg := greylistedOnce(t, BugKB950757)
	cfg.DoubleRestartWindow = 1 * time.Second

	// Start, then a double restart: two starts in quick succession.
	startRelay(t, cfg).stop(t)
	startRelay(t, cfg).stop(t)
	r := startRelay(t, cfg)
	m := submitDeferred(t, s, r)

	// Held silently: on disk, but not listed and not retried (several backoffs).
	eventually(t, 2*time.Second, "message hidden from the queue listing", func() bool {
		return findEntry(listing(t, dir), m) == nil
	})
	if n := filesOnDisk(t, dir); n != 1 {
		t.Fatalf("%d messages on disk, want the held one", n)
	}
	expectNoRcpt(t, s.rcpts, 1500*time.Millisecond, "retry of the held message") // > window and > 3 backoffs
	if findEntry(listing(t, dir), m) != nil {
		t.Fatal("held message showed up in the listing")
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"flush", "--queue", dir, "--timeout", "3s"}, &out, &errb); code != 0 {
		t.Fatalf("flush: %d %s", code, errb.String())
	}
	expectNoRcpt(t, s.rcpts, 400*time.Millisecond, "retry of the held message after a flush")

	// The next (single) restart re-stamps and releases it: delivered, late.
	r.stop(t)
	startRelay(t, cfg)
	waitDeliveryOf(t, s, m, "delivery after the next restart", "delivered message is not the held one")
}

func TestDoubleRestartWithoutBugRetries(t *testing.T) {
	t.Parallel()
	s, _, cfg := greylistedOnce(t)
	cfg.DoubleRestartWindow = 1 * time.Second
	startRelay(t, cfg).stop(t)
	startRelay(t, cfg).stop(t)
	r := startRelay(t, cfg)
	m := submitDeferred(t, s, r)
	waitDeliveryOf(t, s, m, "retry after the double restart", "wrong message")
}

func TestBugDropOn4xx(t *testing.T) {
	slow(t)
	t.Parallel()
	s, dir, cfg := greylistedOnce(t, BugDropOn4xx)
	r := startRelay(t, cfg)
	submitDeferred(t, s, r)
	eventually(t, 2*time.Second, "message deleted", func() bool { return filesOnDisk(t, dir) == 0 })
	if l := listing(t, dir); len(l) != 0 {
		t.Fatalf("listing %+v, want empty", l)
	}
	expectNoDelivery(t, s.deliveries, 1200*time.Millisecond, "delivery or DSN", nil)
}

func TestBugBounceOn4xx(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(func(from, to string, n int) *smtp.SMTPError {
		if to == "bob@rcpt.test" {
			return greylist(1)(from, to, n)
		}
		return nil
	}, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir) // queue lifetime 20s
	cfg.Bugs = []Bug{BugBounceOn4xx}
	r := startRelay(t, cfg)
	start := time.Now()
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	d := waitDelivery(t, s.deliveries, 3*time.Second, "premature failure DSN", isDSNTo("alice@sender.test"))
	if el := d.At.Sub(start); el >= cfg.QueueLifetime {
		t.Fatalf("DSN after %s: not premature", el)
	}
	checkDSN(t, d, "failed", "4.7.1", "bob@rcpt.test", m, true)
	expectNoDelivery(t, s.deliveries, 800*time.Millisecond, "retry to bob", toRcpt("bob@rcpt.test"))
}

func TestBugNoRetry(t *testing.T) {
	slow(t)
	t.Parallel()
	s, dir, cfg := greylistedOnce(t, BugNoRetry)
	r := startRelay(t, cfg)
	m := submitDeferred(t, s, r)
	eventually(t, 2*time.Second, "listed with no next_attempt and reason retry disabled", func() bool {
		e := findEntry(listing(t, dir), m)
		return e != nil && e.NextAttempt.IsZero() && e.Reason == "retry disabled"
	})
	var out, errb bytes.Buffer
	Main([]string{"queue", "--queue", dir}, &out, &errb)
	if strings.Contains(out.String(), "next_attempt") {
		t.Errorf("listing has a next_attempt for a recipient that is never retried:\n%s", out.String())
	}
	expectNoRcpt(t, s.rcpts, 1200*time.Millisecond, "retry")
	if findEntry(listing(t, dir), m) == nil {
		t.Fatal("message left the listing")
	}
}

func TestBugStallVisible(t *testing.T) {
	slow(t)
	t.Parallel()
	s, dir, cfg := greylistedOnce(t, BugStallVisible)
	r := startRelay(t, cfg)
	m := submitDeferred(t, s, r)
	var first time.Time
	eventually(t, 2*time.Second, "listed with a future next_attempt", func() bool {
		e := findEntry(listing(t, dir), m)
		if e == nil || !e.NextAttempt.After(time.Now()) {
			return false
		}
		first = e.NextAttempt
		return true
	})
	expectNoRcpt(t, s.rcpts, 1200*time.Millisecond, "retry")
	e := findEntry(listing(t, dir), m)
	if e == nil || !e.NextAttempt.After(time.Now()) || !e.NextAttempt.After(first) {
		t.Fatalf("after the stall: entry %+v, want a next_attempt later than now and than %s", e, first)
	}
}

func TestBugHammer(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(greylist(3), nil)
	cfg := fastCfg(s, t.TempDir())
	cfg.MinBackoff, cfg.MaxBackoff = 1500*time.Millisecond, 2*time.Second
	cfg.Bugs = []Bug{BugHammer}
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	var at []time.Time
	var ev []rcptEvent
	for i := 0; i < 4; i++ {
		ev = append(ev, waitRcpt(t, s.rcpts, 3*time.Second, func(rcptEvent) bool { return true }))
		at = append(at, ev[i].At)
	}
	// The first retry is at once, in the same transaction: inside any
	// greylist delay, however slow the machine.
	if ev[0].Conn == nil || ev[1].Conn != ev[0].Conn {
		t.Fatalf("first retry on another connection: not asked again at once")
	}
	for i := 1; i < len(at); i++ {
		if gap := at[i].Sub(at[i-1]); gap >= cfg.MinBackoff/2 {
			t.Fatalf("retry %d after %s: not hammering (backoff is %s)", i, gap, cfg.MinBackoff)
		}
	}
	waitDelivery(t, s.deliveries, 2*time.Second, "delivery", nil)
}

func TestBugLoseQueueOnRestart(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(tempfailAlways, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.Bugs = []Bug{BugLoseQueueOnRestart}
	r := startRelay(t, cfg)
	m := submitDeferred(t, s, r)
	if findEntry(listing(t, dir), m) == nil {
		t.Fatal("not listed before the restart")
	}
	r.stop(t)
	s.script(nil, nil)
	startRelay(t, cfg)
	if l := listing(t, dir); len(l) != 0 || filesOnDisk(t, dir) != 0 {
		t.Fatalf("queue after restart: %+v, want empty", l)
	}
	expectNoDelivery(t, s.deliveries, 1200*time.Millisecond, "delivery of the lost message", nil)
}

func TestBugRedeliverAfterRestart(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.Bugs = []Bug{BugRedeliverAfterRestart}
	r := startRelay(t, cfg)
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	waitDelivery(t, s.deliveries, 3*time.Second, "delivery", nil)
	eventually(t, 2*time.Second, "not listed once delivered", func() bool { return len(listing(t, dir)) == 0 })
	r.stop(t)
	startRelay(t, cfg)
	waitDeliveryOf(t, s, m, "duplicate delivery after restart", "duplicate is not the same message")
}

// TestBugRedeliverAfterLateRestart: a restart later than the queue lifetime
// after the delivery (a slow restart on a loaded machine) must still deliver
// again, not expire the resurrected message with a failure DSN.
func TestBugRedeliverAfterLateRestart(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.Bugs = []Bug{BugRedeliverAfterRestart}
	r := startRelay(t, cfg)
	before := time.Now()
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	waitDelivery(t, s.deliveries, 3*time.Second, "delivery", nil)
	eventually(t, 2*time.Second, "not listed once delivered", func() bool { return len(listing(t, dir)) == 0 })
	r.stop(t)
	cfg.QueueLifetime = time.Second
	eventually(t, 3*time.Second, "the queue lifetime passed since the arrival", func() bool { return time.Since(before) > cfg.QueueLifetime })
	startRelay(t, cfg)
	d := waitDelivery(t, s.deliveries, 3*time.Second, "delivery after the late restart", nil)
	if d.From != "alice@sender.test" || !bytes.Contains(d.Data, []byte(m.MessageID)) {
		t.Fatalf("after the late restart: from=<%s> to=%v, want the message again, not a DSN about it", d.From, d.To)
	}
}

func TestBugResendAcceptedRcpts(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(func(from, to string, n int) *smtp.SMTPError {
		if to == "b@rcpt.test" {
			return greylist(1)(from, to, n)
		}
		return nil
	}, nil)
	cfg := fastCfg(s, t.TempDir())
	cfg.Bugs = []Bug{BugResendAcceptedRcpts}
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "a@rcpt.test", "b@rcpt.test")
	d1 := waitDelivery(t, s.deliveries, 3*time.Second, "first delivery", nil)
	d2 := waitDelivery(t, s.deliveries, 3*time.Second, "retry", nil)
	if strings.Join(d1.To, ",") != "a@rcpt.test" || !contains(d2.To, "a@rcpt.test") || !contains(d2.To, "b@rcpt.test") {
		t.Fatalf("deliveries to %v then %v; want [a] then [a b] (a delivered twice)", d1.To, d2.To)
	}
}

func TestBugNoDSNOnExpiry(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(tempfailBob, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.QueueLifetime = 800 * time.Millisecond
	cfg.Bugs = []Bug{BugNoDSNOnExpiry}
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	eventually(t, 3*time.Second, "expired message removed", func() bool {
		return filesOnDisk(t, dir) == 0 && len(listing(t, dir)) == 0
	})
	expectNoDelivery(t, s.deliveries, 800*time.Millisecond, "DSN", nil)
}

func TestBugDSNToNullSender(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(rejectNobody, nil)
	cfg := fastCfg(s, t.TempDir())
	cfg.Bugs = []Bug{BugDSNToNullSender}
	r := startRelay(t, cfg)

	// A bounce about a null-sender message is sent to <>.
	submit(t, r.addr, "", "nobody@rcpt.test")
	deadline := time.After(3 * time.Second)
	for found := false; !found; {
		select {
		case line := <-s.rawLines:
			found = strings.EqualFold(strings.TrimSpace(line), "RCPT TO:<>")
		case <-deadline:
			t.Fatal("no DSN addressed to <> within 3s")
		}
	}

	// A failure DSN about a normal message does not identify it.
	m := submit(t, r.addr, "alice@sender.test", "nobody@rcpt.test")
	d := waitDelivery(t, s.deliveries, 3*time.Second, "failure DSN", isDSNTo("alice@sender.test"))
	body := string(d.Data)
	if !strings.Contains(body, "Action: failed") {
		t.Fatalf("not a failure DSN:\n%s", body)
	}
	if strings.Contains(body, m.MessageID) || strings.Contains(body, m.HarnessID) {
		t.Fatalf("DSN still names the original message:\n%s", body)
	}
}

func TestBugNoMXFailover(t *testing.T) {
	t.Parallel()
	s1, s2 := newSink(t), newSink(t)
	s1.script(tempfailAlways, nil)
	cfg := fastCfg(s1, t.TempDir())
	cfg.NextHop = []string{s1.addr, s2.addr}
	cfg.Bugs = []Bug{BugNoMXFailover}
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	// Several attempts at the first MX, each stopping there.
	for range 3 {
		waitRcpt(t, s1.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	}
	expectNoRcpt(t, s2.rcpts, 200*time.Millisecond, "the second MX")
}
