package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/scenarios"
)

// TestTrackerAndLedgerAgree feeds one event stream to the runner's tracker
// (what waits see) and to the ledger (what verdicts see) and checks that
// they attribute every event to the same (message, recipient): attempts
// before DATA by a tagged sender, attempts by a sender two messages share,
// an attempt racing the submission's 250, DSNs naming the message only by
// Message-ID, a DSN greylisted on its way back, and foreign traffic.
func TestTrackerAndLedgerAgree(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	sub := func(hid, from string, sec float64, accepted bool, rcpts ...string) history.Submission {
		return history.Submission{HarnessID: hid, MessageID: hid + "@harness.test", Group: "g", MailFrom: from, RcptTo: rcpts,
			SubmittedAt: at(sec), Accepted: accepted, Reply: fakemta.Reply{Code: 250}}
	}
	subs := []history.Submission{
		sub("A", "alice+gh-A@s.test", 0, true, "r1@d.test", "R2@d.test"),
		sub("B", "plain@s.test", 1, true, "r1@d.test"),
		sub("C", "plain@s.test", 2, true, "r1@d.test"),
		sub("D", "alice+gh-D@s.test", 3, false, "r1@d.test"),
	}
	h := &history.History{Scenario: "agree", Started: t0, Ended: at(100),
		Timing: history.Timing{RetryMax: history.Duration(20 * time.Second), QueueLifetime: history.Duration(300 * time.Second)}}
	h.Submissions = subs
	var seq, conn uint64
	var evs []fakemta.Event
	ok := fakemta.Reply{Code: 250}
	grey := fakemta.Reply{Code: 451, Enhanced: "4.7.1", Text: "greylisted"}
	txn := func(sec float64, from string, rcpts []fakemta.RcptAttempt, data *fakemta.Reply, m *fakemta.Message) {
		seq++
		conn++
		evs = append(evs, fakemta.Event{Seq: seq, Time: at(sec), Kind: fakemta.EventTransaction, Conn: conn, Client: "192.0.2.1:1",
			Transaction: &fakemta.Transaction{MailFrom: from, Mail: ok, Rcpts: rcpts, Data: data, Message: m}})
	}
	rcpt := func(a string, r fakemta.Reply) fakemta.RcptAttempt { return fakemta.RcptAttempt{Addr: a, Reply: r} }
	body := func(s history.Submission, withHID bool) *fakemta.Message {
		m := &fakemta.Message{MessageID: s.MessageID, MailFrom: s.MailFrom, Accepted: true}
		if withHID {
			m.HarnessID = s.HarnessID
		}
		return m
	}
	eod := &fakemta.Reply{Code: 250}
	// Before any 250 reached the harness: A greylisted for both recipients.
	txn(0.5, subs[0].MailFrom, []fakemta.RcptAttempt{rcpt("R1@d.test", grey), rcpt("r2@d.test", grey)}, nil, nil)
	split := len(evs)
	// The shared sender: greylisted (no body to tell B from C).
	txn(5, "plain@s.test", []fakemta.RcptAttempt{rcpt("r1@d.test", grey)}, nil, nil)
	// C delivered by its harness id; then the shared sender again.
	txn(30, "plain@s.test", []fakemta.RcptAttempt{rcpt("r1@d.test", ok)}, eod, body(subs[2], true))
	txn(31, "plain@s.test", []fakemta.RcptAttempt{rcpt("r1@d.test", grey)}, nil, nil)
	// A: r1 delivered by Message-ID only (no X-Greyharness-Id in the body).
	txn(32, subs[0].MailFrom, []fakemta.RcptAttempt{rcpt("r1@d.test", ok)}, eod, body(subs[0], false))
	// A DSN to A's sender greylisted at RCPT, then accepted, naming A by Message-ID.
	txn(40, "", []fakemta.RcptAttempt{rcpt(subs[0].MailFrom, grey)}, nil, nil)
	txn(60, "", []fakemta.RcptAttempt{rcpt(subs[0].MailFrom, ok)}, eod, &fakemta.Message{MessageID: "dsn1@relay", Accepted: true,
		DSN: &dsn.Report{OriginalMessageID: subs[0].MessageID, Recipients: []dsn.Recipient{{FinalRecipient: "r2@d.test", Action: "failed", Status: "4.7.1"}}}})
	// The refused submission D tried anyway, and foreign traffic.
	txn(61, subs[3].MailFrom, []fakemta.RcptAttempt{rcpt("r1@d.test", grey)}, nil, nil)
	txn(62, "stranger@elsewhere.test", []fakemta.RcptAttempt{rcpt("r1@d.test", ok)}, eod, &fakemta.Message{MessageID: "x@y", Accepted: true})
	txn(63, "plain@s.test", []fakemta.RcptAttempt{rcpt("nobody@d.test", ok)}, nil, nil)
	h.Journal = evs

	tr := newTracker()
	for _, s := range subs {
		e := s
		e.Accepted, e.SubmittedAt, e.Reply = false, time.Time{}, fakemta.Reply{}
		tr.expect(e)
	}
	for _, ev := range evs[:split] {
		tr.observe(ev)
	}
	for _, s := range subs {
		tr.submitted(s)
	}
	for _, ev := range evs[split:] {
		tr.observe(ev)
	}

	res := ledger.Judge(h)
	if len(res.HarnessErrors) > 0 {
		t.Fatalf("harness errors: %v", res.HarnessErrors)
	}
	if len(res.Foreign) != 2 {
		t.Errorf("foreign traffic: got %+v, want the stranger's message and plain@s.test to nobody@", res.Foreign)
	}
	want := map[string][3]int{ // attempts, delivered, bounced
		"A|r1@d.test": {2, 1, 0}, "A|r2@d.test": {1, 0, 1},
		"B|r1@d.test": {2, 0, 0}, "C|r1@d.test": {1, 1, 0}, "D|r1@d.test": {1, 0, 0},
	}
	for i, m := range tr.msgs {
		for r, rs := range m.rcpts {
			k := m.sub.HarnessID + "|" + r
			var f ledger.Finding
			for _, x := range res.Findings {
				if x.HarnessID == m.sub.HarnessID && strings.EqualFold(x.Rcpt, r) {
					f = x
				}
			}
			attempts := 0
			for _, e := range f.Timeline {
				if e.What == ledger.WhatAttempt {
					attempts++
				}
			}
			got := [3]int{rs.attempts, rs.delivered, b2i(rs.bounced)}
			if got != want[k] {
				t.Errorf("%s: tracker saw %v, want %v", k, got, want[k])
			}
			if !m.sub.Accepted {
				continue // the ledger judges nothing else of a refused message
			}
			ledgerSaw := [3]int{attempts, b2i(f.Has(ledger.Delivered)), b2i(f.Has(ledger.Bounced))}
			if got != ledgerSaw {
				t.Errorf("submission %v %s: tracker saw %v (attempts, delivered, bounced), ledger saw %v\n%s", i, k, got, ledgerSaw, f.Why)
			}
		}
	}
	if !tr.anyDefer {
		t.Error("tracker saw no deferral")
	}
	if left, total := tr.pending("", everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 || rs.bounced })); total != 3 || left != 1 {
		t.Errorf("drained: %d of %d left, want B (1 of 3; D was refused)", left, total)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// A wait for delivery waits only for the recipients the relay accepted: a
// recipient refused at submission is never coming.
func TestTrackerWaitsOnlyForAcceptedRecipients(t *testing.T) {
	tr := newTracker()
	s := history.Submission{HarnessID: "gh-1", MessageID: "gh-1@h", Group: "g", MailFrom: "a+gh-1@s.test",
		RcptTo: []string{"bob@r.test", "carol@r.test"}}
	tr.expect(s)
	s.Accepted = true
	s.Rcpts = []history.RcptReply{{Addr: "bob@r.test", Reply: fakemta.Reply{Code: 250}},
		{Addr: "carol@r.test", Reply: fakemta.Reply{Code: 550, Enhanced: "5.1.1", Text: "no"}}}
	tr.submitted(s)
	ok := fakemta.Reply{Code: 250}
	tr.observe(fakemta.Event{Time: time.Now(), Kind: fakemta.EventTransaction, Transaction: &fakemta.Transaction{
		MailFrom: s.MailFrom, Mail: ok, Rcpts: []fakemta.RcptAttempt{{Addr: "bob@r.test", Reply: ok}}, Data: &ok,
		Message: &fakemta.Message{HarnessID: "gh-1", MessageID: "gh-1@h", Accepted: true}}})
	if !tr.all("g", waitCond(&scenarios.Wait{For: "delivered"})) {
		t.Error("bob, the only accepted recipient, is delivered: the wait should be over")
	}
}

// A relay that gives up at its queue lifetime with a notice that says
// Action: delayed (OpenSMTPD 6.8 at `queue ttl`, nullmailer 2.2) has settled
// the message: the drained wait ends (the dequeued check then still wants it
// out of the listing) instead of waiting out its deadline three times (wait,
// flush, restart). A delay notice before the lifetime, or one followed by an
// attempt, settles nothing.
func TestDrainedAfterAnExpiryNotice(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	const lifetime = 60 * time.Second
	grey := fakemta.Reply{Code: 451, Enhanced: "4.3.0", Text: "try later"}
	ok := fakemta.Reply{Code: 250}
	run := func(events ...fakemta.Event) bool {
		tr := newTracker()
		s := history.Submission{HarnessID: "gh-1", MessageID: "gh-1@h", Group: "g", MailFrom: "a+gh-1@s.test",
			RcptTo: []string{"judy@r.test"}, SubmittedAt: t0, Accepted: true, Reply: ok}
		tr.expect(s)
		tr.submitted(s)
		for _, ev := range events {
			tr.observe(ev)
		}
		return tr.all("g", drainedCond(lifetime))
	}
	attempt := func(sec float64) fakemta.Event {
		return fakemta.Event{Time: at(sec), Kind: fakemta.EventTransaction, Transaction: &fakemta.Transaction{
			MailFrom: "a+gh-1@s.test", Mail: ok, Rcpts: []fakemta.RcptAttempt{{Addr: "judy@r.test", Reply: grey}}}}
	}
	notice := func(sec float64) fakemta.Event {
		return fakemta.Event{Time: at(sec), Kind: fakemta.EventTransaction, Transaction: &fakemta.Transaction{
			MailFrom: "", Mail: ok, Rcpts: []fakemta.RcptAttempt{{Addr: "a+gh-1@s.test", Reply: ok}}, Data: &ok,
			Message: &fakemta.Message{MessageID: "dsn@relay", Accepted: true, DSN: &dsn.Report{OriginalMessageID: "gh-1@h",
				Recipients: []dsn.Recipient{{FinalRecipient: "judy@r.test", Action: "delayed", Status: "4.4.7"}}}}}}
	}
	if run(attempt(1), notice(2)) {
		t.Error("an early delay notice settles nothing")
	}
	if !run(attempt(1), notice(2), attempt(50), notice(61)) {
		t.Error("a delayed notice at the queue lifetime with no attempt after it: settled")
	}
	if run(attempt(1), notice(61), attempt(63)) {
		t.Error("an attempt after the notice: the relay still tries, not settled")
	}
	if run(attempt(1)) {
		t.Error("deferred only: not settled")
	}
	if !drainedCond(lifetime)(&msgState{rcpts: map[string]*rcptState{"x@r.test": {delivered: 1}}}) {
		t.Error("delivered: settled")
	}
}

// TestTrackerSettled: a message is settled (no copy a relay could send
// again) when its recipient bounced with no body ever, or when the relay
// sent a command after the final reply of its last copy on that
// connection and no relay fault came at or after that copy.
func TestTrackerSettled(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	s := history.Submission{HarnessID: "A", MessageID: "A@harness.test", MailFrom: "alice+gh-A@s.test", RcptTo: []string{"r@d.test"},
		SubmittedAt: at(0), Accepted: true, Reply: fakemta.Reply{Code: 250}}
	tr := newTracker()
	tr.expect(s)
	tr.submitted(s)
	var seq uint64
	ev := func(sec float64, conn uint64, kind fakemta.EventKind) fakemta.Event {
		seq++
		return fakemta.Event{Seq: seq, Time: at(sec), Kind: kind, Conn: conn, Client: "192.0.2.1:1"}
	}
	copyOf := func(sec float64, conn uint64, eod fakemta.Reply) fakemta.Event {
		e := ev(sec, conn, fakemta.EventTransaction)
		e.Transaction = &fakemta.Transaction{MailFrom: s.MailFrom, Mail: fakemta.Reply{Code: 250},
			Rcpts: []fakemta.RcptAttempt{{Addr: "r@d.test", Reply: fakemta.Reply{Code: 250}}}, Data: &eod,
			Message: &fakemta.Message{MessageID: s.MessageID, HarnessID: "A", MailFrom: s.MailFrom, Accepted: eod.Code == 250}}
		return e
	}
	command := func(sec float64, conn uint64, line string) fakemta.Event {
		e := ev(sec, conn, fakemta.EventCommand)
		e.Command = line
		return e
	}
	never := func(time.Time) bool { return false }
	if tr.settled(never) {
		t.Fatal("settled before any copy")
	}
	// A copy dropped after the final dot: the relay cannot know.
	tr.observe(copyOf(1, 1, fakemta.Reply{Dropped: true}))
	if tr.settled(never) {
		t.Error("settled after a copy dropped after the final dot")
	}
	// Sent again and accepted; no command after the 250 yet.
	tr.observe(command(10, 2, "EHLO relay"))
	tr.observe(copyOf(11, 2, fakemta.Reply{Code: 250}))
	if tr.settled(never) {
		t.Error("settled with no command after the final reply")
	}
	// A command on another connection says nothing about this one.
	tr.observe(command(12, 3, "QUIT"))
	if tr.settled(never) {
		t.Error("settled by a command on another connection")
	}
	tr.observe(command(12.5, 2, "QUIT"))
	if !tr.settled(never) {
		t.Error("not settled after the relay sent QUIT following the 250")
	}
	// A relay restart at or after the copy: its record may be lost.
	if tr.settled(func(copyAt time.Time) bool { return !at(11.5).Before(copyAt) }) {
		t.Error("settled although the relay was restarted after the copy")
	}

	// A recipient that bounced and never got a body is settled; one that
	// has neither is not.
	b := history.Submission{HarnessID: "B", MessageID: "B@harness.test", MailFrom: "bob+gh-B@s.test", RcptTo: []string{"x@d.test"},
		SubmittedAt: at(20), Accepted: true, Reply: fakemta.Reply{Code: 250}}
	tr.expect(b)
	tr.submitted(b)
	if tr.settled(never) {
		t.Error("settled with B neither delivered nor bounced")
	}
	d := ev(30, 4, fakemta.EventTransaction)
	d.Transaction = &fakemta.Transaction{MailFrom: "", Mail: fakemta.Reply{Code: 250},
		Rcpts: []fakemta.RcptAttempt{{Addr: b.MailFrom, Reply: fakemta.Reply{Code: 250}}}, Data: &fakemta.Reply{Code: 250},
		Message: &fakemta.Message{MessageID: "dsn@relay", Accepted: true,
			DSN: &dsn.Report{OriginalMessageID: b.MessageID, Recipients: []dsn.Recipient{{FinalRecipient: "x@d.test", Action: "failed", Status: "5.1.1"}}}}}
	tr.observe(d)
	if !tr.settled(never) {
		t.Error("not settled with B bounced (no body ever) and A acknowledged")
	}
}
