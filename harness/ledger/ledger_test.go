package ledger

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/history"
)

const bob = "bob@rcpt.test"
const carol = "carol@rcpt.test"

func TestSlack(t *testing.T) {
	if got := RetryBound(20 * time.Second); got != 31*time.Second {
		t.Errorf("RetryBound(20s) = %s, want 31s", got)
	}
	if got := LifetimeSlack(300 * time.Second); got != 7*time.Second {
		t.Errorf("LifetimeSlack(5m) = %s, want 7s", got)
	}
	if got := Rel(t0, at(12.3456)); got != "+12.345s" {
		t.Errorf("Rel = %q", got)
	}
	if got := Rel(t0, at(-1.5)); got != "-1.500s" {
		t.Errorf("Rel negative = %q", got)
	}
}

func TestDelivered(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(5, queued(s))
	b.deliver(10, s, bob)
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, Delivered, false, Delivered)
	if !r.Passed || r.Counts[Delivered] != 1 {
		t.Errorf("passed %v counts %v", r.Passed, r.Counts)
	}
	if !strings.Contains(f.Why, "delivered at +10.000s") {
		t.Errorf("why %q", f.Why)
	}
	if !hasEntry(f, WhatAttempt, "451 4.7.1") || !hasEntry(f, WhatReply, "after the final dot: 250") || !hasEntry(f, WhatQueueSeen, "Qm1") {
		t.Errorf("timeline lacks attempt/reply/queue: %s", dumpTimeline(f))
	}
}

func TestDeliveredNeedsRcpt2xx(t *testing.T) {
	// eod 250 but this recipient was refused at RCPT: not delivered to it.
	b := newH(20)
	s := b.submit("m1", 0, bob, carol)
	d := fakemta.Reply{Code: 250}
	b.txn(1, s.MailFrom, []fakemta.RcptAttempt{{Addr: bob, Reply: ok250()}, {Addr: carol, Reply: grey(), Greylist: "deferred"}}, &d, body(s, 1, bob))
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), Delivered, false, Delivered)
	if f := find(t, r, "m1", carol); f.Has(Delivered) {
		t.Errorf("carol counted delivered: %v", f.Verdicts)
	}
}

func TestBounced(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Group: "bad", Verdict: "bounced", DSNAction: "failed"}}
	s := b.submit("m1", 0, bob)
	s.Group = "bad"
	b.reject(1, s, bob, fakemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no such user"})
	b.bounce(2, s, "BOB@rcpt.test", "failed", "5.1.1") // recipient matched case-insensitively
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, Bounced, false, Bounced)
	if !r.Passed {
		t.Errorf("should pass: %s", f.Why)
	}
	// The same DSN delivered again (e.g. after a drop at eod) counts once.
	b.bounce(3, s, bob, "failed", "5.1.1")
	r = Judge(b.h)
	want(t, find(t, r, "m1", bob), Bounced, false, Bounced)
	if !r.Passed || len(r.Findings) != 1 {
		t.Errorf("second copy of the DSN: %+v", r.Findings)
	}
	b.h.Journal = b.h.Journal[:2]
	// Without the expectation a bounce fails (delivered is expected).
	b.h.Expect.Messages = nil
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Bounced, true, Bounced)
	if !strings.Contains(f.Why, "expected delivered") {
		t.Errorf("why %q", f.Why)
	}
}

func TestBouncedByOriginalRecipientAndMessageID(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	b.reject(1, s, bob, fakemta.Reply{Code: 550, Enhanced: "5.1.1"})
	b.dsnTo(2, s.MailFrom, &dsn.Report{
		Recipients:        []dsn.Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "bob@internal.test", OriginalRecipient: bob}},
		OriginalMessageID: "<" + s.MessageID + ">",
	}, "d1@relay.test")
	want(t, find(t, Judge(b.h), "m1", bob), Bounced, false, Bounced)
}

func TestDelayedNotice(t *testing.T) {
	b := newH(40)
	b.h.Expect.Messages = []history.Expectation{{Group: "slow", DSNAction: "delayed"}}
	s := b.submit("m1", 0, bob)
	s.Group = "slow"
	b.greylist(1, s, bob)
	b.bounce(5, s, bob, "delayed", "4.7.1")
	b.deliver(20, s, bob)
	s2 := b.submit("m2", 0, bob)
	s2.Group = "slow"
	b.greylist(1, s2, bob)
	b.deliver(20, s2, bob)
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), Delivered, false, Delivered, DelayedNotice)
	f := find(t, r, "m2", bob)
	want(t, f, Delivered, true, Delivered)
	if !strings.Contains(f.Why, "expected a DSN with Action: delayed") {
		t.Errorf("why %q", f.Why)
	}
}

// The seed incident: greylisted, then invisible in the queue past its
// deadline, released only by a restart.
func TestHeldSilentlyReleasedByRestart(t *testing.T) {
	b := newH(80)
	b.h.Expect.Messages = []history.Expectation{{Within: dur(30)}}
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(5, queued(s))
	b.listing(40) // deadline is +32s (1 + 20 + 11): gone from the listing
	b.fault(history.FaultRelayRestart, 60, 62)
	b.listing(61) // during the restart: not evidence
	b.listing(63, queued(s))
	b.deliver(64, s, bob)
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, HeldSilently, true, Delivered, HeldSilently, Stale)
	if r.Passed || r.Counts[HeldSilently] != 1 {
		t.Errorf("passed %v counts %v", r.Passed, r.Counts)
	}
	for _, s := range []string{"+1.000s", "+32.000s", "+40.000s", "start of relay-restart"} {
		if !strings.Contains(f.Why, s) {
			t.Errorf("why lacks %q: %s", s, f.Why)
		}
	}
	if !hasEntry(f, WhatQueueMissing, "") || !hasEntry(f, WhatFault, "relay-restart") || !hasEntry(f, WhatDeadline, "retry deadline") {
		t.Errorf("timeline: %s", dumpTimeline(f))
	}
	t.Logf("why: %s%s", f.Why, dumpTimeline(f))
	// Had it stayed listed, the same gap is only stalled.
	b.h.Queue[1].Entries = []history.QueueEntry{queued(s)}
	want(t, find(t, Judge(b.h), "m1", bob), Stalled, true, Delivered, Stalled, Stale)
}

func TestStalled(t *testing.T) {
	b := newH(60)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(40, queued(s))
	b.listing(50, queued(s))
	b.deliver(55, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Stalled, true, Delivered, Stalled)
	if !strings.Contains(f.Why, "showed it") {
		t.Errorf("why %q", f.Why)
	}
	// Still stuck at the end, listed: the outcome is stalled.
	b = newH(60)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(60, queued(s))
	want(t, find(t, Judge(b.h), "m1", bob), Stalled, true, Stalled)
}

func TestStalledWithoutQueueListing(t *testing.T) {
	b := newH(60)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Stalled, true, Stalled)
	if !strings.Contains(f.Why, "visibility unknown") {
		t.Errorf("why %q", f.Why)
	}
}

func TestLost(t *testing.T) {
	// Gone after a restart, before any deadline: lost, not held silently.
	b := newH(20)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(5, queued(s))
	b.fault(history.FaultRelayRestart, 10, 12)
	b.listing(20)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost)

	// Gone past its deadline too, and never back: still lost only.
	b.h.Ended = at(100)
	b.h.Queue[1].At = at(100)
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Lost, true, Lost)

	// A final listing before the last fault proves nothing: not lost.
	b = newH(20)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(9)
	b.fault(history.FaultRelayRestart, 10, 12)
	f = find(t, Judge(b.h), "m1", bob)
	if f.Has(Lost) {
		t.Errorf("lost from a listing before the last fault: %v %s", f.Verdicts, f.Why)
	}
}

func TestDuplicate(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob)
	b.dropEOD(1, s, bob) // body received, relay never got the 250 (RFC 1047)
	b.deliver(10, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Duplicate, true, Delivered, Duplicate)
	if !strings.Contains(f.Why, "2 times") {
		t.Errorf("why %q", f.Why)
	}
	b.h.Expect.ToleratedDuplicates = true
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Duplicate, false, Delivered, Duplicate)
	if !f.Warn {
		t.Error("tolerated duplicate should warn")
	}
}

func TestDroppedOnlyIsNotDelivered(t *testing.T) {
	b := newH(10)
	s := b.submit("m1", 0, bob)
	b.dropEOD(1, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	if f.Has(Delivered) || f.Has(Duplicate) {
		t.Errorf("verdicts %v", f.Verdicts)
	}
	want(t, f, Pending, true, Pending)
}

func TestStale(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Group: "g", Within: dur(5)}}
	s := b.submit("m1", 0, bob)
	s.Group = "g"
	b.greylist(1, s, bob)
	b.deliver(10, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Stale, true, Delivered, Stale)
	if !strings.Contains(f.Why, "expected within 5s (by +5.000s)") {
		t.Errorf("why %q", f.Why)
	}
	// A group expecting stale mail passes.
	b.h.Expect.Messages[0].Verdict = "stale"
	want(t, find(t, Judge(b.h), "m1", bob), Stale, false, Delivered, Stale)
}

func TestPrematureBounce(t *testing.T) {
	b := newH(60)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.bounce(30, s, bob, "failed", "4.7.1")
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, PrematureBounce, true, Bounced, PrematureBounce)
	if !strings.Contains(f.Why, "+300.000s") {
		t.Errorf("why %q", f.Why)
	}
	// After the queue lifetime (minus 7s slack) it is a proper bounce.
	b.h.Journal[len(b.h.Journal)-1].Time = at(294)
	b.h.Timing.RetryMax = dur(600)
	b.h.Ended = at(300)
	want(t, find(t, Judge(b.h), "m1", bob), Bounced, false, Bounced)
	// A 5xx from the fake MTA makes an early bounce proper.
	b = newH(60)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.reject(5, s, bob, fakemta.Reply{Code: 554, Enhanced: "5.7.1"})
	b.bounce(6, s, bob, "failed", "5.7.1")
	want(t, find(t, Judge(b.h), "m1", bob), Bounced, false, Bounced)
}

func TestRetryTooSoon(t *testing.T) {
	b := newH(100)
	b.h.GreylistDelay = dur(60)
	b.h.Timing.RetryMax = dur(60)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.greylist(10, s, bob) // 9s after the deferral: too soon
	b.deliver(70, s, bob)  // 69s after the first deferral: fine
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, RetryTooSoon, false, Delivered, RetryTooSoon)
	if !f.Warn || !r.Passed || !strings.Contains(f.Why, "only 9s after the greylist deferral at +1.000s") {
		t.Errorf("warn %v passed %v why %q", f.Warn, r.Passed, f.Why)
	}
	b.h.Expect.RetryTooSoonIsError = true
	want(t, find(t, Judge(b.h), "m1", bob), RetryTooSoon, true, Delivered, RetryTooSoon)
	// A retry after the delay is fine.
	b.h.Journal = b.h.Journal[:1]
	b.deliver(62, s, bob)
	want(t, find(t, Judge(b.h), "m1", bob), Delivered, false, Delivered)
}

func TestBadDSN(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s := b.submit("m1", 0, bob)
	b.reject(1, s, bob, fakemta.Reply{Code: 550, Enhanced: "5.1.1"})
	// Names no message: attributed by the envelope recipient (the unique sender).
	b.dsnTo(2, s.MailFrom, &dsn.Report{Recipients: []dsn.Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: bob}}}, "d1@relay.test")
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, BadDSN, true, BadDSN)
	if !strings.Contains(f.Why, "names no original message") {
		t.Errorf("why %q", f.Why)
	}

	// No Final-Recipient: bad, attributed to the whole message.
	b = newH(30)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s = b.submit("m1", 0, bob)
	b.reject(1, s, bob, fakemta.Reply{Code: 550})
	b.dsnTo(2, s.MailFrom, &dsn.Report{OriginalHarnessID: "m1", Recipients: []dsn.Recipient{{Action: "failed", Status: "5.1.1"}}}, "d1@relay.test")
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, BadDSN, true, BadDSN)
	if !strings.Contains(f.Why, "no Final-Recipient") {
		t.Errorf("why %q", f.Why)
	}

	// A DSN to the null recipient and an unattributable one: scenario-level.
	b = newH(30)
	d := fakemta.Reply{Code: 250}
	b.txn(3, "", []fakemta.RcptAttempt{{Addr: "", Reply: ok250()}}, &d, &fakemta.Message{MessageID: "x@relay.test", SHA256: "x",
		DSN: &dsn.Report{OriginalMessageID: "d0@relay.test", Recipients: []dsn.Recipient{{Action: "failed", FinalRecipient: "a@b"}}}})
	b.dsnTo(4, "nobody@else.test", &dsn.Report{Recipients: []dsn.Recipient{{Action: "failed"}}}, "y@relay.test")
	r = Judge(b.h)
	if r.Passed || len(r.Findings) != 2 {
		t.Fatalf("want 2 scenario-level findings, got %+v", r.Findings)
	}
	if !strings.Contains(r.Findings[0].Why, "null recipient <>") || r.Findings[0].HarnessID != "" || r.Findings[0].Primary != BadDSN {
		t.Errorf("finding 0: %+v", r.Findings[0])
	}
	if !strings.Contains(r.Findings[1].Why, "names no original message") {
		t.Errorf("finding 1: %+v", r.Findings[1])
	}
}

func TestDSNAboutADSN(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s := b.submit("m1", 0, bob)
	b.reject(1, s, bob, fakemta.Reply{Code: 550})
	b.bounce(2, s, bob, "failed", "5.1.1") // dsn-m1-failed@relay.test
	// The relay then bounces its own bounce back to the sender.
	b.dsnTo(5, s.MailFrom, &dsn.Report{OriginalMessageID: "dsn-m1-failed@relay.test",
		Recipients: []dsn.Recipient{{Action: "failed", Status: "5.0.0", FinalRecipient: s.MailFrom}}}, "dd@relay.test")
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, BadDSN, true, Bounced, BadDSN)
	if !strings.Contains(f.Why, "a bounce of a bounce") || len(r.Findings) != 1 {
		t.Errorf("why %q, findings %d", f.Why, len(r.Findings))
	}
}

func TestPendingAndCheckpoints(t *testing.T) {
	b := newH(20)
	b.h.Checkpoints = []history.Checkpoint{{Name: "cp1", At: at(15)}}
	ok := b.submit("ok", 0, bob)
	hidden := b.submit("hidden", 0, bob)
	late := b.submit("late", 14, bob) // submitted before cp1, not yet attempted: fine
	b.greylist(1, ok, bob)
	b.greylist(1, hidden, bob)
	b.listing(16, queued(ok), queued(late))
	b.listing(20, queued(ok), queued(late))
	r := Judge(b.h)
	f := find(t, r, "ok", bob)
	want(t, f, Pending, true, Pending) // the scenario ended before delivery: expected delivered
	if !strings.Contains(f.Why, "next attempt due by +32.000s") {
		t.Errorf("why %q", f.Why)
	}
	f = find(t, r, "hidden", bob)
	want(t, f, Lost, true, Lost) // missing at cp1 and never back: lost only
	if !strings.Contains(f.Why, `checkpoint "cp1" at +15.000s`) || !hasEntry(f, WhatDeadline, "cp1") {
		t.Errorf("why %q timeline %s", f.Why, dumpTimeline(f))
	}
	want(t, find(t, r, "late", bob), Pending, true, Pending)
	if r.Counts[Pending] != 2 || r.Counts[Lost] != 1 {
		t.Errorf("counts %v", r.Counts)
	}
	// Stalled at a checkpoint: listed but no attempt for too long.
	b = newH(60)
	b.h.Checkpoints = []history.Checkpoint{{Name: "cp", At: at(40)}}
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.listing(41, queued(s))
	b.greylist(42, s, bob)
	b.deliver(50, s, bob)
	f = find(t, Judge(b.h), "m1", bob)
	want(t, f, Stalled, true, Delivered, Stalled)
	if !strings.Contains(f.Why, `checkpoint "cp"`) {
		t.Errorf("why %q", f.Why)
	}
}

func TestNotAccepted(t *testing.T) {
	b := newH(10)
	s := b.submit("m1", 0, bob)
	s.Accepted, s.Reply = false, fakemta.Reply{Code: 452, Enhanced: "4.3.1", Text: "insufficient storage"}
	b.h.Expect.Messages = []history.Expectation{{Verdict: "not-accepted"}} // (expecting delivery fails: accepted_test.go)
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), NotAccepted, false, NotAccepted)
	if !r.Passed {
		t.Error("a refused submission is not the relay's failure")
	}
}

// A resubmission shares the Message-ID; the DSN is attributed by harness id.
func TestDSNForResubmittedMessage(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Group: "second", Verdict: "bounced"}}
	first := b.submit("m1", 0, bob)
	second := b.submit("m2", 1, bob)
	second.MessageID, second.Resubmission, second.Group = first.MessageID, true, "second"
	b.deliver(2, first, bob)
	b.reject(3, second, bob, fakemta.Reply{Code: 550})
	b.bounce(4, second, bob, "failed", "5.1.1")
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), Delivered, false, Delivered)
	want(t, find(t, r, "m2", bob), Bounced, false, Bounced)
	if !r.Passed {
		t.Errorf("findings %+v", r.Findings)
	}
}

// A DSN greylisted at RCPT before it is accepted is neither bad nor a
// second DSN, and not an attempt of the original message.
func TestGreylistedDSN(t *testing.T) {
	b := newH(60)
	b.h.GreylistDelay = dur(5)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced", DSNAction: "failed"}}
	s := b.submit("m1", 0, bob)
	b.reject(1, s, bob, fakemta.Reply{Code: 550, Enhanced: "5.1.1"})
	b.txn(2, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.txn(3, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 2, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.bounce(10, s, bob, "failed", "5.1.1")
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, Bounced, false, Bounced)
	if len(r.Findings) != 1 || !r.Passed {
		t.Errorf("findings %+v", r.Findings)
	}
	if n := countEntries(f, WhatAttempt); n != 1 {
		t.Errorf("want 1 attempt (the 550), got %d: %s", n, dumpTimeline(f))
	}
}

// Only fake-MTA journal times count: an Arrival-Date written by a relay with
// a skewed clock changes nothing.
func TestClockSkewIgnored(t *testing.T) {
	var results []Result
	for _, skew := range []time.Duration{0, 48 * time.Hour, -48 * time.Hour} {
		b := newH(60)
		s := b.submit("m1", 0, bob)
		b.greylist(1, s, bob)
		b.bounce(30, s, bob, "failed", "4.7.1")
		rep := b.h.Journal[len(b.h.Journal)-1].Transaction.Message.DSN
		rep.ArrivalDate = s.SubmittedAt.Add(skew)
		rep.Recipients[0].LastAttemptDate = at(1).Add(skew)
		results = append(results, Judge(b.h))
	}
	want(t, find(t, results[0], "m1", bob), PrematureBounce, true, Bounced, PrematureBounce)
	for i := 1; i < len(results); i++ {
		if !reflect.DeepEqual(results[0], results[i]) {
			t.Errorf("skew %d changed the result:\n%+v\n%+v", i, results[0], results[i])
		}
	}
}

func TestPartialDeferral(t *testing.T) {
	mk := func() (*hb, *history.Submission) {
		b := newH(40)
		s := b.submit("m1", 0, bob, carol)
		d := fakemta.Reply{Code: 250, Enhanced: "2.0.0"}
		b.txn(1, s.MailFrom, []fakemta.RcptAttempt{
			{Addr: bob, Attempt: 1, Reply: ok250()},
			{Addr: carol, Attempt: 1, Reply: grey(), Greylist: "deferred"},
		}, &d, body(s, 1, bob))
		return b, s
	}
	// Only the deferred recipient is retried: both delivered once.
	b, s := mk()
	b.deliver(10, s, carol)
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), Delivered, false, Delivered)
	want(t, find(t, r, "m1", carol), Delivered, false, Delivered)
	// Retrying both delivers bob twice.
	b, s = mk()
	b.deliver(10, s, bob, carol)
	r = Judge(b.h)
	want(t, find(t, r, "m1", bob), Duplicate, true, Delivered, Duplicate)
	want(t, find(t, r, "m1", carol), Delivered, false, Delivered)
}

// Outages pause the retry clock; failed connections count as attempts.
func TestOutagesAndConnectionFailures(t *testing.T) {
	b := newH(90)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	b.fault(history.FaultFakeMTAStop, 5, 6)
	b.fault(history.FaultFakeMTAStart, 50, 51)
	b.deliver(75, s, bob) // 24s after the fake MTA came back: fine
	want(t, find(t, Judge(b.h), "m1", bob), Delivered, false, Delivered)

	b = newH(90)
	s = b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	for _, sec := range []float64{20, 40, 60} {
		b.conn++
		b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventConnect, Conn: b.conn, Client: "192.0.2.10:1"})
		b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventReply, Conn: b.conn, Reply: &fakemta.Reply{Code: 421, Enhanced: "4.3.2", Text: "busy"}})
		b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventClose, Conn: b.conn})
	}
	b.deliver(85, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)
	if !hasEntry(f, WhatAttempt, "3 such connections") {
		t.Errorf("timeline %s", dumpTimeline(f))
	}
	// Without them the same history is stalled.
	var kept []fakemta.Event
	for _, ev := range b.h.Journal {
		if ev.Kind == fakemta.EventTransaction {
			kept = append(kept, ev)
		}
	}
	b.h.Journal = kept
	want(t, find(t, Judge(b.h), "m1", bob), Stalled, true, Delivered, Stalled)
}

func TestDeterministicAndPure(t *testing.T) {
	b := newH(80)
	for _, id := range []string{"c", "a", "b"} {
		s := b.submit(id, 0, carol, bob)
		b.greylist(1, s, bob)
	}
	b.listing(40)
	snapshot := len(b.h.Journal)
	r1, r2 := Judge(b.h), Judge(b.h)
	if !reflect.DeepEqual(r1, r2) {
		t.Fatal("Judge is not deterministic")
	}
	if len(b.h.Journal) != snapshot {
		t.Fatal("Judge modified the history")
	}
	var order []string
	for _, f := range r1.Findings {
		order = append(order, f.HarnessID+"/"+f.Rcpt)
	}
	if got := strings.Join(order, " "); got != "a/bob@rcpt.test a/carol@rcpt.test b/bob@rcpt.test b/carol@rcpt.test c/bob@rcpt.test c/carol@rcpt.test" {
		t.Errorf("order %s", got)
	}
	if r := Judge(nil); !r.Passed || len(r.Findings) != 0 {
		t.Errorf("nil history: %+v", r)
	}
}

func TestNormalizeVerdict(t *testing.T) {
	for in, w := range map[string]Verdict{"held silently": HeldSilently, "Premature_Bounce": PrematureBounce, " delivered ": Delivered} {
		if got := NormalizeVerdict(in); got != w {
			t.Errorf("%q -> %q, want %q", in, got, w)
		}
	}
}

// A neighbour's restart (recorded in this scenario's history by the runner)
// is not the relay's delay: within stretches by the outage, no more.
func TestStaleExcusesOutage(t *testing.T) {
	b := newH(30)
	b.h.Expect.Messages = []history.Expectation{{Group: "g", Within: dur(5)}}
	s := b.submit("m1", 0, bob)
	s.Group = "g"
	b.greylist(1, s, bob)
	b.fault(history.FaultRelayRestart, 2, 6)
	b.deliver(8, s, bob) // 8s after submission, 4s of it the relay was restarting
	want(t, find(t, Judge(b.h), "m1", bob), Delivered, false, Delivered)
	b2 := newH(30)
	b2.h.Expect.Messages = []history.Expectation{{Group: "g", Within: dur(5)}}
	s2 := b2.submit("m1", 0, bob)
	s2.Group = "g"
	b2.greylist(1, s2, bob)
	b2.fault(history.FaultRelayRestart, 2, 4)
	b2.deliver(10, s2, bob) // 10s, 2s of outage: still late
	f := find(t, Judge(b2.h), "m1", bob)
	want(t, f, Stale, true, Delivered, Stale)
	if !strings.Contains(f.Why, "2s of outage excused") {
		t.Errorf("why %q", f.Why)
	}
}

// A copy accepted while the relay was being restarted (a neighbour's
// restart, in a concurrent run) may not be recorded by the relay: the copy
// after it is RFC 1047's duplicate, a warning. A copy accepted before the
// restart and sent again after it is a failing duplicate.
func TestDuplicateAcrossRestartGap(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob)
	b.fault(history.FaultRelayRestart, 1, 3)
	b.deliver(2, s, bob) // accepted while the relay was going down
	b.deliver(5, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	if f.Failed || !f.Warn || !f.Has(Duplicate) {
		t.Errorf("copy in the gap: failed %v warn %v verdicts %v, want a warned duplicate", f.Failed, f.Warn, f.Verdicts)
	}
	b2 := newH(30)
	s2 := b2.submit("m1", 0, bob)
	b2.deliver(0.5, s2, bob) // delivered before the restart
	b2.fault(history.FaultRelayRestart, 1, 3)
	b2.deliver(5, s2, bob)
	want(t, find(t, Judge(b2.h), "m1", bob), Duplicate, true, Delivered, Duplicate)
	// The final dot answered before the restart, its session (a cached
	// connection) ending in it: the relay had the 250, a failing duplicate.
	b3 := newH(30)
	s3 := b3.submit("m1", 0, bob)
	b3.fault(history.FaultRelayRestart, 1, 3)
	d := fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "accepted"}
	b3.txn(2, s3.MailFrom, []fakemta.RcptAttempt{{Addr: bob, Attempt: 1, Reply: ok250()}}, &d, body(s3, 0.5, bob))
	b3.deliver(5, s3, bob)
	want(t, find(t, Judge(b3.h), "m1", bob), Duplicate, true, Delivered, Duplicate)
	// Delivered before the restart, sent again while it starts (the
	// sample relay's redeliver-after-restart): the later copy in the gap
	// excuses nothing.
	b4 := newH(30)
	s4 := b4.submit("m1", 0, bob)
	b4.deliver(0.5, s4, bob)
	b4.fault(history.FaultRelayRestart, 1, 3)
	b4.deliver(2, s4, bob)
	want(t, find(t, Judge(b4.h), "m1", bob), Duplicate, true, Delivered, Duplicate)
}

// The fake MTA journals a transaction (durably) before it writes the
// reply to the final dot: a neighbour's relay restart that begins between
// the two finds the 250 not yet sent, the relay cannot record it, and the
// copy after the restart is RFC 1047's duplicate, a warning (seen on the
// sample relay under load: transaction at +0.3207s, restart at +0.3217s,
// the 250 written at +0.3257s, the relay's line cut at +0.3264s). Written
// before the restart, it is a failing duplicate.
func TestDuplicateGapByTheFinalReply(t *testing.T) {
	for _, c := range []struct {
		replied float64
		gap     bool
	}{{1.5, true}, {0.9, false}} {
		b := newH(30)
		s := b.submit("m1", 0, bob)
		b.deliver(0.8, s, bob) // transaction journaled at 0.8
		b.event(fakemta.Event{Time: at(c.replied), Kind: fakemta.EventReply, Conn: b.conn, Reply: &fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK"}})
		b.event(fakemta.Event{Time: at(c.replied + 0.01), Kind: fakemta.EventClose, Conn: b.conn})
		b.fault(history.FaultRelayRestart, 1, 3)
		b.deliver(5, s, bob)
		wantGapDuplicate(t, find(t, Judge(b.h), "m1", bob), c.gap, fmt.Sprintf("250 written at %vs, the restart from 1s to 3s", c.replied))
	}
}

// wantGapDuplicate checks a copy sent again: a warned duplicate when the
// earlier one was in RFC 1047's gap, else a failing one.
func wantGapDuplicate(t *testing.T, f Finding, gap bool, what string) {
	t.Helper()
	if !gap {
		want(t, f, Duplicate, true, Delivered, Duplicate)
		return
	}
	if f.Failed || !f.Warn || !f.Has(Duplicate) {
		t.Errorf("%s: failed %v warn %v verdicts %v, want a warned duplicate", what, f.Failed, f.Warn, f.Verdicts)
	}
}

// A final dot the fake MTA received before a neighbour's relay restart
// began and answered only after it ended (its journal stalled by the
// restart's disk load: seen in CI on Postfix, the body's transaction and
// its 250 journaled at +2.373s, the restart from +0.793s to +2.240s): the
// relay's client died waiting for the reply, so the copy the restarted
// relay sends again is RFC 1047's duplicate, a warning. A body received
// after the restart had ended, answered as late, is a failing duplicate.
func TestDuplicateGapByAPendingFinalReply(t *testing.T) {
	for _, c := range []struct {
		received float64
		gap      bool
	}{{0.8, true}, {3.05, false}} {
		b := newH(30)
		s := b.submit("m1", 0, bob)
		b.fault(history.FaultRelayRestart, 1, 3)
		d := fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "accepted"}
		b.txn(3.1, s.MailFrom, []fakemta.RcptAttempt{{Addr: bob, Attempt: 1, Reply: ok250()}}, &d, body(s, c.received, bob))
		b.event(fakemta.Event{Time: at(3.11), Kind: fakemta.EventReply, Conn: b.conn, Reply: &fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK"}})
		b.deliver(5, s, bob)
		f := find(t, Judge(b.h), "m1", bob)
		wantGapDuplicate(t, f, c.gap, fmt.Sprintf("body received at %vs, answered at 3.1s, the restart from 1s to 3s", c.received))
		if c.gap && !strings.Contains(f.Why, "+3.100s (250 2.0.0 accepted, body received at +0.800s)") {
			t.Errorf("why %q does not name when the first body arrived", f.Why)
		}
	}
}

// A relay records a delivery some time after it reads the 250: a restart
// in between loses the record, and the relay sends the copy again (seen in
// CI on Haraka: a neighbour's restart began 5 ms after the 250, the queue
// still listed the message after the restart, and it came again). With
// the queue listed, a copy is the relay's for sure only from the first
// listing after its reply that no longer shows it; a restart before that
// makes the copy after it RFC 1047's duplicate, a warning. A restart after
// that listing, and the copy again, is a failing duplicate. Without any
// listing nothing shows when the relay recorded it: the reply stands in.
func TestDuplicateGapUntilTheRelayRecordsIt(t *testing.T) {
	for _, c := range []struct {
		name     string
		listings func(b *hb, s *history.Submission)
		gap      bool
	}{
		{"restart before any listing showed it gone", func(b *hb, s *history.Submission) {
			b.listing(0.5, queued(s))
			b.listing(2.5, queued(s)) // after the restart: still there
		}, true},
		{"restart before the listing that showed it gone", func(b *hb, s *history.Submission) {
			b.listing(0.5, queued(s))
			b.listing(2.5) // gone, after the restart began
		}, true},
		{"gone from a listing before the restart", func(b *hb, s *history.Submission) {
			b.listing(1.001) // after the 250, before the restart
		}, false},
		{"no listing at all", func(b *hb, s *history.Submission) {}, false},
	} {
		b := newH(30)
		s := b.submit("m1", 0, bob)
		b.deliver(1, s, bob)
		b.event(fakemta.Event{Time: at(1.0005), Kind: fakemta.EventReply, Conn: b.conn, Reply: &fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "OK"}})
		c.listings(b, s)
		b.fault(history.FaultRelayRestart, 1.005, 2)
		b.deliver(3, s, bob)
		wantGapDuplicate(t, find(t, Judge(b.h), "m1", bob), c.gap, c.name)
	}
}

// TestMXFailoverIsNotRetryTooSoon: trying the next MX host right after the
// first one's greylist deferral is what RFC 5321 §5.1 asks of a relay, not
// a retry too soon; coming back to an MX host already tried inside the
// delay is. The timeline names the MX host of each attempt.
func TestMXFailoverIsNotRetryTooSoon(t *testing.T) {
	b := newH(100)
	b.h.GreylistDelay = dur(60)
	b.h.Timing.RetryMax = dur(60)
	s := b.submit("m1", 0, bob)
	mx1, mx2 := "127.0.0.2:2526", "127.0.0.3:2526"
	b.greylist(1, s, bob)
	b.h.Journal[len(b.h.Journal)-1].Transaction.MX = mx1
	b.greylist(1.1, s, bob) // the next MX, same attempt
	b.h.Journal[len(b.h.Journal)-1].Transaction.MX = mx2
	b.deliver(62, s, bob)
	b.h.Journal[len(b.h.Journal)-1].Transaction.MX = mx1
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)
	for _, mx := range []string{mx1, mx2} {
		if !hasEntry(f, WhatAttempt, "at MX "+mx) {
			t.Errorf("no attempt at MX %s on the timeline:\n%s", mx, dumpTimeline(f))
		}
	}
	// Back at MX 1 inside the delay: too soon.
	b.h.Journal = b.h.Journal[:2]
	b.greylist(5, s, bob)
	b.h.Journal[len(b.h.Journal)-1].Transaction.MX = mx1
	b.deliver(62, s, bob)
	want(t, find(t, Judge(b.h), "m1", bob), RetryTooSoon, false, Delivered, RetryTooSoon)
}

// TestGreylistedDSNTimeline: a DSN deferred once and then delivered is a
// bounce; the timeline says the deferred try was followed by one that got
// through, not that it never did.
func TestGreylistedDSNTimeline(t *testing.T) {
	b := newH(100)
	b.h.Timing.RetryMax = dur(60)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "bounced"}}
	s := b.submit("m1", 0, bob)
	b.reject(1, s, bob, fakemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "No such user"})
	b.txn(2, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
	b.bounce(4, s, bob, "failed", "5.1.1")
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Bounced, false, Bounced)
	if !hasEntry(f, WhatDSN, "deferred at RCPT") || !hasEntry(f, WhatDSN, "a later try got through at +4.000s") || hasEntry(f, WhatDSN, "never got through") {
		t.Errorf("timeline of a greylisted DSN:%s", dumpTimeline(f))
	}
}

// TestTimelineShowsListedDeferral: a listing that shows the message
// deferred (a refused connection the fake MTA never saw) is on the
// timeline with its reason, even after listings that agreed otherwise,
// and it is no attempt.
func TestTimelineShowsListedDeferral(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob)
	b.fault(history.FaultFakeMTAStop, 0, 0)
	fresh := queued(s)
	fresh.Reason = "pending"
	b.listing(1, fresh)
	refused := queued(s)
	refused.Reason, refused.Deferred = "connect to 127.0.0.1[127.0.0.1]:2526: Connection refused", true
	b.listing(2, refused)
	b.listing(3, refused)
	b.fault(history.FaultFakeMTAStart, 4, 4)
	b.deliver(5, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)
	if !hasEntry(f, WhatQueueSeen, "deferred: connect to 127.0.0.1[127.0.0.1]:2526: Connection refused (2 listings") {
		t.Errorf("timeline lacks the listed deferral: %s", dumpTimeline(f))
	}
	if n := countEntries(f, WhatAttempt); n != 1 {
		t.Errorf("%d attempts on the timeline, want 1 (the delivery): %s", n, dumpTimeline(f))
	}
}
