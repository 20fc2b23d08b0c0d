package ledger

import (
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
)

func (b *hb) listingSpan(start, end float64, entries ...history.QueueEntry) {
	if entries == nil {
		entries = []history.QueueEntry{}
	}
	b.h.Queue = append(b.h.Queue, history.QueueSnapshot{At: at(start), End: at(end), Entries: entries})
}

func whyHas(t *testing.T, f Finding, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(f.Why, p) {
			t.Errorf("why lacks %q: %s%s", p, f.Why, dumpTimeline(f))
		}
	}
}

// Issue 10 item 11: a listing started at +8.000s and read by +8.020s does
// not show a message delivered at +8.008s: its absence proves nothing.
func TestListingCoversItsInterval(t *testing.T) {
	b := newH(20)
	b.h.Timing.RetryMax = dur(4) // bound 7s
	s := b.submit("m1", 0, bob)
	b.greylist(1.1, s, bob) // deadline +8.100s: delivered in time
	b.h.Checkpoints = []history.Checkpoint{{Name: "cp", At: at(7.9)}}
	b.listingSpan(8.000, 8.020)
	b.deliver(8.008, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)

	// A listing read before the delivery still counts.
	b.h.Queue[0].End = at(8.005)
	want(t, find(t, Judge(b.h), "m1", bob), HeldSilently, true, Delivered, HeldSilently)

	// Overdue, then delivered inside the listing's interval: not held silently.
	b = newH(20)
	b.h.Timing.RetryMax = dur(4)
	s = b.submit("m1", 0, bob)
	b.greylist(0.5, s, bob) // deadline +7.500s
	b.listingSpan(8.000, 8.020)
	b.deliver(8.008, s, bob)
	if f := find(t, Judge(b.h), "m1", bob); f.Has(HeldSilently) {
		t.Errorf("held silently from a listing that covered the delivery: %s", f.Why)
	}
}

// Issue 10 item 12: a delivery whose connection was open through a relay
// restart is a real attempt; the retry clock does not restart at the end of
// the outage.
func TestAttemptAcrossRestartCounts(t *testing.T) {
	b := newH(80)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.conn++
	c := b.conn
	b.event(fakemta.Event{Time: at(10), Kind: fakemta.EventConnect, Conn: c, Client: "192.0.2.10:40001"})
	b.fault(history.FaultRelayRestart, 12, 14)
	// The surviving delivery process finishes on its original connection
	// at +70s, 56s after the restart ended (bound 31s).
	d := fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "accepted"}
	b.event(fakemta.Event{Time: at(70), Kind: fakemta.EventTransaction, Conn: c, Client: "192.0.2.10:40001",
		Transaction: &fakemta.Transaction{MailFrom: s.MailFrom, Mail: ok250(),
			Rcpts: []fakemta.RcptAttempt{{Addr: bob, Attempt: 2, Reply: ok250()}}, Data: &d, Message: body(s, 70, bob)}})
	b.event(fakemta.Event{Time: at(70.1), Kind: fakemta.EventClose, Conn: c})
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)
}

// Precision: listed while overdue, then gone without delivery or DSN:
// stalled for the visible span, lost afterwards (not held-silently).
func TestStalledThenGone(t *testing.T) {
	b := newH(90)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob) // deadline +32s
	b.listing(10, queued(s))
	b.listing(40, queued(s))
	b.listing(50, queued(s))
	b.listing(60)
	b.listing(80)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost, Stalled)
	whyHas(t, f, "+40.000s", "+60.000s", "never came back")

	// Postfix with defer_transports: expired, its bounce queued and never
	// tried. The queued DSN is named in the reason.
	b.h.Queue[3].Entries = []history.QueueEntry{{QueueID: "A5688", Sender: "", Recipients: []string{s.MailFrom}, Reason: "deferred transport"}}
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost, Stalled)
	whyHas(t, f, "a DSN to its sender sat in the relay's queue as A5688 (deferred transport) from +60.000s to +60.000s")
}

// Precision: held-silently only when the message was hidden and came back;
// hidden and never back is lost only. The reason says which.
func TestHeldSilentlyNeedsAComeback(t *testing.T) {
	b := newH(90)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(10, queued(s))
	b.listing(40)
	b.listing(60)
	b.listing(80)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost)
	whyHas(t, f, "never came back")

	// Listed again later (still undelivered at the end): held silently.
	b.h.Queue[2].Entries = []history.QueueEntry{queued(s)}
	b.h.Queue[3].Entries = []history.QueueEntry{queued(s)}
	f = find(t, Judge(b.h), "m1", bob)
	if !f.Has(HeldSilently) || f.Has(Lost) {
		t.Errorf("hidden at +40s, listed again at +60s: got %v: %s", f.Verdicts, f.Why)
	}
	whyHas(t, f, "came back", "listed again at +60.000s")

	// Hidden, then delivered: held silently and delivered.
	b = newH(90)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(40)
	b.deliver(70, s, bob)
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, HeldSilently, true, Delivered, HeldSilently)
	whyHas(t, f, "came back", "delivered at +70.000s")

	// Hidden at a checkpoint and never back: lost only.
	b = newH(90)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.greylist(25, s, bob)
	b.h.Checkpoints = []history.Checkpoint{{Name: "cp", At: at(30)}}
	b.listing(31)
	b.listing(85)
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost)
	// Tried again after the checkpoint's listing missed it: it came back.
	b.greylist(50, s, bob)
	want(t, find(t, Judge(b.h), "m1", bob), Lost, true, Lost, HeldSilently)
}

// Precision: a DSN that never got through is evidence. A relay that gives
// up after one temporary failure tries a DSN at once: premature-bounce even
// though the DSN was greylisted and abandoned, and lost (the sender never
// learnt); the reason names the DSN deferred and never retried.
func TestAbandonedDSNAfterGivingUp(t *testing.T) {
	b := newH(90)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.txn(1.5, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.listing(10)
	b.listing(40)
	b.fault(history.FaultRelayRestart, 60, 62) // the drain restarts it: shown on the timeline
	b.listing(80)
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, Lost, true, Lost, PrematureBounce)
	whyHas(t, f, "was deferred at RCPT", "and never retried", "+1.500s", "451 4.7.1")
	if !hasEntry(f, WhatDSN, "never got through") || !hasEntry(f, WhatFault, "relay-restart") {
		t.Errorf("timeline lacks the DSN attempt: %s", dumpTimeline(f))
	}
	if len(r.HarnessErrors) > 0 || len(r.Foreign) > 0 {
		t.Errorf("harness errors %v foreign %v", r.HarnessErrors, r.Foreign)
	}

	// The same without any queue listing: still premature-bounce and lost.
	b.h.Queue = nil
	want(t, find(t, Judge(b.h), "m1", bob), Lost, true, Lost, PrematureBounce)

	// Retried and then accepted: an ordinary premature bounce, timed from
	// the first try (when the relay gave up).
	b = newH(90)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.txn(1.5, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.bounce(30, s, bob, "failed", "4.7.1")
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, PrematureBounce, true, Bounced, PrematureBounce)
	whyHas(t, f, "+1.500s")

	// A delay notice deferred while the relay keeps retrying is no give-up.
	b = newH(90)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.txn(2, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.greylist(20, s, bob)
	b.deliver(40, s, bob)
	want(t, find(t, Judge(b.h), "m1", bob), Delivered, false, Delivered)
}

// Precision: with no queue listing at all (a profile without a queue
// command), an overdue message with no attempt and no DSN is held
// silently, the reason saying the queue is not observable; never stalled.
func TestNoQueueListingIsNotStalled(t *testing.T) {
	b := newH(60)
	b.submit("m1", 0, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, HeldSilently, true, HeldSilently)
	whyHas(t, f, "not observable")
}

// An idle cached connection does not stretch an attempt: only a connection
// open through an outage does.
func TestIdleCachedConnectionIsNoAttempt(t *testing.T) {
	b := newH(80)
	a := b.submit("a", 0, bob)
	m := b.submit("m", 0, bob)
	b.greylist(2, m, bob) // deadline +33s
	b.conn++
	c := b.conn
	ev := func(sec float64, kind fakemta.EventKind, cmd string, tx *fakemta.Transaction) {
		b.event(fakemta.Event{Time: at(sec), Kind: kind, Conn: c, Client: "192.0.2.10:40002", Command: cmd, Transaction: tx})
	}
	d := fakemta.Reply{Code: 250}
	ev(1, fakemta.EventConnect, "", nil)
	ev(1.1, fakemta.EventCommand, "MAIL FROM:<"+a.MailFrom+">", nil)
	ev(1.2, fakemta.EventTransaction, "", &fakemta.Transaction{MailFrom: a.MailFrom, Mail: ok250(),
		Rcpts: []fakemta.RcptAttempt{{Addr: bob, Reply: ok250()}}, Data: &d, Message: body(a, 1.2, bob)})
	ev(59.9, fakemta.EventCommand, "MAIL FROM:<"+m.MailFrom+">", nil)
	ev(60, fakemta.EventTransaction, "", &fakemta.Transaction{MailFrom: m.MailFrom, Mail: ok250(),
		Rcpts: []fakemta.RcptAttempt{{Addr: bob, Reply: ok250()}}, Data: &d, Message: body(m, 60, bob)})
	r := Judge(b.h)
	want(t, find(t, r, "a", bob), Delivered, false, Delivered)
	f := find(t, r, "m", bob)
	want(t, f, Stalled, true, Delivered, Stalled)
	whyHas(t, f, "from +2.000s", "until +59.900s")
}
