package ledger

import (
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/history"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// at is t0 plus sec seconds.
func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func dur(sec float64) history.Duration {
	return history.Duration(time.Duration(sec * float64(time.Second)))
}

// hb builds a History by hand.
type hb struct {
	h    *history.History
	seq  uint64
	conn uint64
}

// newH: retry_max 20s (bound 31s), queue lifetime 5m, no greylist delay,
// scenario from t0 to t0+end.
func newH(end float64) *hb {
	return &hb{h: &history.History{
		Scenario: "unit", Relay: "hand",
		Timing:  history.Timing{RetryMax: dur(20), QueueLifetime: dur(300)},
		Started: t0, Ended: at(end),
	}}
}

func sender(hid string) string { return "alice+gh-" + hid + "@sender.test" }

func (b *hb) submit(hid string, sec float64, rcpts ...string) *history.Submission {
	b.h.Submissions = append(b.h.Submissions, history.Submission{
		HarnessID: hid, MessageID: hid + "@harness.test", MailFrom: sender(hid), RcptTo: rcpts,
		SubmittedAt: at(sec), Accepted: true, Reply: fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "queued"},
	})
	return &b.h.Submissions[len(b.h.Submissions)-1]
}

func (b *hb) event(ev fakemta.Event) {
	b.seq++
	ev.Seq = b.seq
	b.h.Journal = append(b.h.Journal, ev)
}

func ok250() fakemta.Reply { return fakemta.Reply{Code: 250, Enhanced: "2.1.5", Text: "ok"} }
func grey() fakemta.Reply {
	return fakemta.Reply{Code: 451, Enhanced: "4.7.1", Text: "Greylisted, please try again later"}
}

// txn journals one transaction from the relay (client 192.0.2.10).
func (b *hb) txn(sec float64, from string, rcpts []fakemta.RcptAttempt, data *fakemta.Reply, msg *fakemta.Message) {
	b.conn++
	b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventTransaction, Conn: b.conn, Client: "192.0.2.10:40000",
		Transaction: &fakemta.Transaction{MailFrom: from, Mail: ok250(), Rcpts: rcpts, Data: data, Message: msg}})
}

func body(s *history.Submission, sec float64, rcpts ...string) *fakemta.Message {
	return &fakemta.Message{ID: "m" + s.HarnessID, MessageID: s.MessageID, HarnessID: s.HarnessID, MailFrom: s.MailFrom,
		RcptTo: rcpts, ReceivedAt: at(sec), Accepted: true, SHA256: "sha-" + s.HarnessID}
}

// deliver journals a transaction accepting the body for rcpts.
func (b *hb) deliver(sec float64, s *history.Submission, rcpts ...string) {
	var ras []fakemta.RcptAttempt
	for _, r := range rcpts {
		ras = append(ras, fakemta.RcptAttempt{Addr: r, Attempt: 2, Reply: ok250(), Greylist: "passed"})
	}
	d := fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "accepted"}
	b.txn(sec, s.MailFrom, ras, &d, body(s, sec, rcpts...))
}

// dropEOD journals a transaction whose line was cut after the body.
func (b *hb) dropEOD(sec float64, s *history.Submission, rcpts ...string) {
	var ras []fakemta.RcptAttempt
	for _, r := range rcpts {
		ras = append(ras, fakemta.RcptAttempt{Addr: r, Attempt: 1, Reply: ok250()})
	}
	d := fakemta.Reply{Code: 250, Dropped: true}
	m := body(s, sec, rcpts...)
	m.Accepted = false
	b.txn(sec, s.MailFrom, ras, &d, m)
}

// greylist journals a transaction greylisted at RCPT (never reaches DATA).
func (b *hb) greylist(sec float64, s *history.Submission, rcpt string) {
	b.txn(sec, s.MailFrom, []fakemta.RcptAttempt{{Addr: rcpt, Attempt: 1, Reply: grey(), Greylist: "deferred"}}, nil, nil)
}

// reject journals a transaction refused at RCPT with reply r.
func (b *hb) reject(sec float64, s *history.Submission, rcpt string, r fakemta.Reply) {
	b.txn(sec, s.MailFrom, []fakemta.RcptAttempt{{Addr: rcpt, Attempt: 1, Reply: r}}, nil, nil)
}

// dsnTo journals an accepted null-sender DSN to envelope recipient to.
func (b *hb) dsnTo(sec float64, to string, rep *dsn.Report, mid string) {
	d := fakemta.Reply{Code: 250, Enhanced: "2.0.0", Text: "accepted"}
	m := &fakemta.Message{ID: "d" + mid, MessageID: mid, MailFrom: "", RcptTo: []string{to}, ReceivedAt: at(sec),
		Accepted: true, SHA256: "sha-" + mid, DSN: rep}
	b.txn(sec, "", []fakemta.RcptAttempt{{Addr: to, Attempt: 1, Reply: ok250()}}, &d, m)
}

// bounce journals a well-formed DSN about s and rcpt.
func (b *hb) bounce(sec float64, s *history.Submission, rcpt, action, status string) {
	b.dsnTo(sec, s.MailFrom, &dsn.Report{
		ReportingMTA: "relay.test", ArrivalDate: s.SubmittedAt,
		Recipients:        []dsn.Recipient{{Action: action, Status: status, FinalRecipient: rcpt}},
		OriginalMessageID: s.MessageID, OriginalHarnessID: s.HarnessID,
	}, "dsn-"+s.HarnessID+"-"+action+"@relay.test")
}

func (b *hb) listing(sec float64, entries ...history.QueueEntry) {
	if entries == nil {
		entries = []history.QueueEntry{}
	}
	b.h.Queue = append(b.h.Queue, history.QueueSnapshot{At: at(sec), Entries: entries})
}

func queued(s *history.Submission, rcpts ...string) history.QueueEntry {
	if rcpts == nil {
		rcpts = s.RcptTo
	}
	return history.QueueEntry{QueueID: "Q" + s.HarnessID, Sender: s.MailFrom, Recipients: rcpts, Reason: "451 4.7.1 greylisted"}
}

func (b *hb) fault(kind history.FaultKind, start, end float64) {
	b.h.Faults = append(b.h.Faults, history.Fault{Kind: kind, Start: at(start), End: at(end)})
}

func find(t *testing.T, r Result, hid, rcpt string) Finding {
	t.Helper()
	for _, f := range r.Findings {
		if f.HarnessID == hid && strings.EqualFold(f.Rcpt, rcpt) {
			return f
		}
	}
	t.Fatalf("no finding for %s %s in %+v", hid, rcpt, r.Findings)
	return Finding{}
}

// want checks a finding's verdicts, primary and failure.
func want(t *testing.T, f Finding, primary Verdict, failed bool, verdicts ...Verdict) {
	t.Helper()
	if f.Primary != primary || f.Failed != failed || !sameVerdicts(f.Verdicts, verdicts) {
		t.Errorf("%s %s: got primary %s failed %v verdicts %v; want primary %s failed %v verdicts %v\nwhy: %s\ntimeline: %s",
			f.HarnessID, f.Rcpt, f.Primary, f.Failed, f.Verdicts, primary, failed, verdicts, f.Why, dumpTimeline(f))
	}
}

func sameVerdicts(a, b []Verdict) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[Verdict]int{}
	for _, v := range a {
		m[v]++
	}
	for _, v := range b {
		m[v]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

func dumpTimeline(f Finding) string {
	var sb strings.Builder
	for _, e := range f.Timeline {
		sb.WriteString("\n  " + Rel(t0, e.At) + " " + e.What + " " + e.Detail)
	}
	return sb.String()
}

func hasEntry(f Finding, what, contains string) bool {
	for _, e := range f.Timeline {
		if e.What == what && strings.Contains(e.Detail, contains) {
			return true
		}
	}
	return false
}

// countEntries counts f's timeline entries of kind what.
func countEntries(f Finding, what string) int {
	n := 0
	for _, e := range f.Timeline {
		if e.What == what {
			n++
		}
	}
	return n
}
