package ledger

import (
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
)

func refused550() fakemta.Reply {
	return fakemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "<carol@rcpt.test>: Recipient address rejected"}
}

// partial submits hid to bob and carol; the relay accepted bob's RCPT and
// refused carol's.
func (b *hb) partial(hid string, sec float64) *history.Submission {
	s := b.submit(hid, sec, bob, carol)
	s.Rcpts = []history.RcptReply{{Addr: bob, Reply: ok250()}, {Addr: carol, Reply: refused550()}}
	return s
}

// The accepted recipient is judged; the refused one is not-accepted with
// the relay's RCPT reply, and fails a scenario that expected delivery.
func TestPartialAcceptanceJudgesOnlyAccepted(t *testing.T) {
	b := newH(40)
	s := b.partial("m1", 0)
	b.listing(5) // nothing queued for carol: she must not be held, stalled or lost
	b.deliver(10, s, bob)
	r := Judge(b.h)
	want(t, find(t, r, "m1", bob), Delivered, false, Delivered)
	f := find(t, r, "m1", carol)
	want(t, f, NotAccepted, true, NotAccepted)
	for _, s := range []string{"RCPT TO:<carol@rcpt.test>", "550 5.1.1 <carol@rcpt.test>: Recipient address rejected", "expected delivered"} {
		if !strings.Contains(f.Why, s) {
			t.Errorf("why %q lacks %q", f.Why, s)
		}
	}
	if !hasEntry(f, WhatSubmitted, "550 5.1.1") {
		t.Errorf("timeline lacks the RCPT refusal: %s", dumpTimeline(f))
	}
	if r.Passed {
		t.Error("a refused recipient in a scenario that expects delivery must fail it")
	}

	// A scenario that expects the refusal passes on it.
	b.h.Expect.Messages = []history.Expectation{{Verdict: "not-accepted"}}
	f = find(t, Judge(b.h), "m1", carol)
	want(t, f, NotAccepted, false, NotAccepted)
}

// A relay that refused a recipient and delivered to it anyway is wrong.
func TestRefusedRecipientDeliveredAnyway(t *testing.T) {
	b := newH(40)
	b.h.Expect.Messages = []history.Expectation{{Verdict: "not-accepted"}}
	s := b.partial("m1", 0)
	b.deliver(10, s, bob, carol)
	f := find(t, Judge(b.h), "m1", carol)
	want(t, f, NotAccepted, true, NotAccepted)
	if !strings.Contains(f.Why, "delivered") || !hasEntry(f, WhatReply, "after the final dot: 250") {
		t.Errorf("why %q timeline %s", f.Why, dumpTimeline(f))
	}
}

// A whole refusal fails a scenario that expects delivery, with the reply.
func TestNotAcceptedExpectingDeliveryFails(t *testing.T) {
	b := newH(10)
	s := b.submit("m1", 0, bob)
	s.Accepted, s.Reply = false, fakemta.Reply{Code: 554, Enhanced: "5.7.1", Text: "relay access denied"}
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, NotAccepted, true, NotAccepted)
	if !strings.Contains(f.Why, "554 5.7.1 relay access denied") || !strings.Contains(f.Why, "expected delivered") {
		t.Errorf("why %q", f.Why)
	}
}

// unknown submits hid whose line dropped after the final dot, no reply.
func (b *hb) unknown(hid string, sec float64) *history.Submission {
	s := b.submit(hid, sec, bob)
	s.Accepted, s.Unknown = false, true
	s.Reply = fakemta.Reply{Dropped: true, Text: "no reply to the final dot: EOF"}
	return s
}

// No reply to the final dot and no sign of the message afterwards: the
// outcome stays unknown. Reported, not held against the relay.
func TestUnknownOutcomeNeverSeen(t *testing.T) {
	b := newH(100)
	b.unknown("m1", 0)
	b.listing(50)
	b.listing(99)
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, NotAccepted, false, NotAccepted)
	if !f.Warn || !strings.Contains(f.Why, "unknown") || !strings.Contains(f.Why, "no reply to the final dot") {
		t.Errorf("warn %v why %q", f.Warn, f.Why)
	}
	if hasEntry(f, WhatDeadline, "") {
		t.Errorf("no deadline applies to a message the relay never confirmed: %s", dumpTimeline(f))
	}
	if !r.Passed {
		t.Error("an unknown outcome with no evidence is not the relay's failure")
	}
}

// No reply to the final dot, but the relay delivered it (or tried, or
// listed it): it owned the message, so it is judged like any accepted one.
func TestUnknownOutcomeEvidenceDecides(t *testing.T) {
	b := newH(40)
	s := b.unknown("m1", 0)
	b.deliver(5, s, bob)
	want(t, find(t, Judge(b.h), "m1", bob), Delivered, false, Delivered)

	// Listed in the queue, then gone for good: lost, like any accepted message.
	b = newH(100)
	s = b.unknown("m1", 0)
	b.listing(5, queued(s))
	b.listing(99)
	f := find(t, Judge(b.h), "m1", bob)
	if !f.Failed || !f.Has(Lost) {
		t.Errorf("listed by the relay then gone: want lost, got %v failed %v: %s", f.Verdicts, f.Failed, f.Why)
	}
}

// A relay that refused the second EHLO of a double handshake (RFC 5321
// §4.1.4 allows it) and accepted the message: the timeline says so, and the
// delivery is judged as always.
func TestSecondEHLORefusalInTimeline(t *testing.T) {
	b := newH(40)
	s := b.submit("m1", 0, bob)
	s.SecondEHLO = "503 5.5.1 Invalid command: Already identified"
	b.deliver(10, s, bob)
	f := find(t, Judge(b.h), "m1", bob)
	want(t, f, Delivered, false, Delivered)
	if !hasEntry(f, WhatSubmitted, "second EHLO refused: 503 5.5.1 Invalid command: Already identified") {
		t.Errorf("timeline lacks the second EHLO's refusal: %s", dumpTimeline(f))
	}
}
