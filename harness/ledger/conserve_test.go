package ledger

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/history"
)

// bytesSource turns fuzz input into small choices; exhausted input reads 0.
type bytesSource struct {
	b []byte
	i int
}

func (s *bytesSource) n(max int) int {
	if max <= 0 {
		return 0
	}
	if s.i >= len(s.b) {
		return 0
	}
	v := int(s.b[s.i])
	s.i++
	return v % max
}

func (s *bytesSource) done() bool { return s.i >= len(s.b) }

// randomHistory builds a History from fuzz input: submissions (tagged or
// shared senders, shared Message-IDs, refused ones, repeated recipients),
// attempts (greylisted, refused at MAIL or RCPT, delivered, dropped after
// the body, identified by harness id, Message-ID or envelope only), DSNs
// (well formed, bad, greylisted, about unknown messages), foreign traffic,
// failed connections, restarts and stops, queue listings (failed ones,
// with an End) and checkpoints.
func randomHistory(data []byte) *history.History {
	src := &bytesSource{b: data}
	b := newH(float64(60 + src.n(120)))
	b.h.GreylistDelay = dur(float64(src.n(3)))
	if src.n(4) == 0 {
		b.h.Timing.RetryMax = 0
	}
	pool := []string{"bob@rcpt.test", "carol@rcpt.test", "Bob@RCPT.test", "dave@rcpt.test"}
	nsub := 1 + src.n(4)
	for i := 0; i < nsub; i++ {
		hid := fmt.Sprintf("h%d", i)
		var rcpts []string
		for k := 0; k <= src.n(3); k++ {
			rcpts = append(rcpts, pool[src.n(len(pool))])
		}
		s := b.submit(hid, float64(src.n(20)), rcpts...)
		if src.n(3) == 0 {
			s.MailFrom = "shared@sender.test"
		}
		if i > 0 && src.n(4) == 0 {
			s.MessageID = b.h.Submissions[0].MessageID // a resubmission
		}
		if src.n(6) == 0 {
			s.Accepted = false
			s.Reply = fakemta.Reply{Code: 554, Text: "no"}
		}
	}
	subs := b.h.Submissions
	sec := 0.0
	for !src.done() && len(b.h.Journal) < 80 {
		sec += float64(src.n(15)) + 0.25
		s := &subs[src.n(len(subs))]
		rcpt := pool[src.n(len(pool))]
		if src.n(5) == 0 {
			rcpt = "stranger@rcpt.test"
		}
		from := s.MailFrom
		if src.n(8) == 0 {
			from = "foreign@elsewhere.test"
		}
		m := body(s, sec, rcpt)
		switch src.n(3) {
		case 0:
			m.HarnessID = ""
		case 1:
			m.HarnessID, m.MessageID = "", ""
		}
		switch src.n(12) {
		case 0:
			b.greylist(sec, s, rcpt)
		case 1:
			b.txn(sec, from, []fakemta.RcptAttempt{{Addr: rcpt, Reply: ok250()}}, &fakemta.Reply{Code: 250}, m)
		case 2:
			b.txn(sec, from, []fakemta.RcptAttempt{{Addr: rcpt, Reply: grey(), Greylist: "deferred"}}, nil, nil)
		case 3:
			b.reject(sec, s, rcpt, fakemta.Reply{Code: 550, Enhanced: "5.1.1"})
		case 4:
			b.conn++
			b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventTransaction, Conn: b.conn,
				Transaction: &fakemta.Transaction{MailFrom: from, Mail: fakemta.Reply{Code: 421 + 30*src.n(2)}}})
		case 5:
			b.dropEOD(sec, s, rcpt)
		case 6:
			b.bounce(sec, s, rcpt, []string{"failed", "delayed", "relayed"}[src.n(3)], []string{"4.7.1", "5.1.1", ""}[src.n(3)])
		case 7:
			b.txn(sec, "", []fakemta.RcptAttempt{{Addr: s.MailFrom, Reply: grey(), Greylist: "deferred"}}, nil, nil)
		case 8:
			rep := &dsn.Report{Recipients: []dsn.Recipient{{Action: "failed", FinalRecipient: rcpt}}}
			switch src.n(4) {
			case 0:
				rep.OriginalMessageID = s.MessageID
			case 1:
				rep.OriginalHarnessID = "unknown"
			case 2:
				rep.OriginalMessageID = "dsn-h0-failed@relay.test" // about a DSN, maybe
			}
			to := s.MailFrom
			if src.n(4) == 0 {
				to = "nobody@elsewhere.test"
			}
			if src.n(6) == 0 {
				rep = nil
			}
			b.dsnTo(sec, to, rep, fmt.Sprintf("d%d@relay.test", len(b.h.Journal)))
		case 9:
			b.conn++
			b.event(fakemta.Event{Time: at(sec), Kind: fakemta.EventConnect, Conn: b.conn, Client: "192.0.2.10:1"})
			b.event(fakemta.Event{Time: at(sec + 0.1), Kind: fakemta.EventReply, Conn: b.conn, Reply: &fakemta.Reply{Code: 421}})
			if src.n(2) == 0 {
				b.event(fakemta.Event{Time: at(sec + 0.2), Kind: fakemta.EventClose, Conn: b.conn})
			}
		case 10:
			kinds := []history.FaultKind{history.FaultRelayRestart, history.FaultRelayStop, history.FaultRelayStart,
				history.FaultFakeMTARestart, history.FaultFakeMTAStop, history.FaultFakeMTAStart, history.FaultFlush}
			b.fault(kinds[src.n(len(kinds))], sec, sec+float64(src.n(5)))
		case 11:
			var es []history.QueueEntry
			for _, x := range subs {
				if src.n(2) == 0 {
					es = append(es, queued(&x))
				}
			}
			b.listingSpan(sec, sec+float64(src.n(3))/100, es...)
			if src.n(8) == 0 {
				b.h.Queue[len(b.h.Queue)-1].Err = "timeout"
			}
			if src.n(6) == 0 {
				b.h.Checkpoints = append(b.h.Checkpoints, history.Checkpoint{Name: "cp", At: at(sec - 0.5)})
			}
		}
	}
	if b.h.Ended.Before(at(sec)) {
		b.h.Ended = at(sec + 1)
	}
	return b.h
}

// checkConservation asserts the conservation invariant from outside the
// ledger: no harness error, exactly one finding per (submission,
// recipient), and every foreign entry a real transaction, named once.
func checkConservation(t *testing.T, h *history.History) Result {
	t.Helper()
	r := Judge(h)
	if len(r.HarnessErrors) > 0 {
		t.Fatalf("harness errors: %v", r.HarnessErrors)
	}
	want := map[string]int{}
	for _, s := range h.Submissions {
		if !s.Accepted {
			continue
		}
		seen := map[string]bool{}
		for _, x := range s.RcptTo {
			k := s.HarnessID + "|" + strings.ToLower(x)
			if !seen[k] {
				seen[k] = true
				want[k]++
			}
		}
	}
	got := map[string]int{}
	for _, f := range r.Findings {
		if f.HarnessID != "" {
			got[f.HarnessID+"|"+strings.ToLower(f.Rcpt)]++
		} else if f.Has(HarnessError) {
			t.Fatalf("harness-error finding: %s", f.Why)
		}
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: %d findings, want %d", k, got[k], n)
		}
	}
	for _, f := range r.Findings {
		k := f.HarnessID + "|" + strings.ToLower(f.Rcpt)
		if f.HarnessID != "" && want[k] == 0 && !f.Has(NotAccepted) {
			t.Errorf("%s: a finding for no accepted (message, recipient): %v", k, f.Verdicts)
		}
	}
	txns := map[uint64]bool{}
	for _, ev := range h.Journal {
		if ev.Kind == fakemta.EventTransaction {
			txns[ev.Seq] = true
		}
	}
	named := map[uint64]bool{}
	for _, f := range r.Foreign {
		if !txns[f.Seq] || named[f.Seq] || f.Why == "" {
			t.Errorf("foreign entry %+v: not a transaction, named twice, or unexplained", f)
		}
		named[f.Seq] = true
	}
	a, _ := json.Marshal(r)
	b, _ := json.Marshal(Judge(h))
	if string(a) != string(b) {
		t.Errorf("Judge is not deterministic")
	}
	return r
}

// FuzzJudgeConservation: over random histories, every submitted (message,
// recipient) has exactly one finding and every journal transaction is
// attributed to a message, a DSN, or named as foreign traffic.
func FuzzJudgeConservation(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 1, 2, 0, 0, 1, 5, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	f.Add([]byte("the relay greylists, restarts, lists its queue and bounces twice"))
	f.Add([]byte{200, 3, 2, 2, 1, 0, 2, 2, 1, 7, 7, 7, 0, 3, 3, 11, 11, 6, 6, 8, 8, 9, 10, 4, 4})
	f.Fuzz(func(t *testing.T, data []byte) {
		checkConservation(t, randomHistory(data))
	})
}

// TestConservationOverManyHistories runs the property over a fixed set of
// pseudo-random histories on every `go test` (the fuzz target explores more).
func TestConservationOverManyHistories(t *testing.T) {
	x := uint32(2463534242)
	foreign := 0
	for i := 0; i < 400; i++ {
		data := make([]byte, 20+i%200)
		for k := range data {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			data[k] = byte(x)
		}
		r := checkConservation(t, randomHistory(data))
		foreign += len(r.Foreign)
	}
	if foreign == 0 {
		t.Error("no history had foreign traffic: the generator does not exercise it")
	}
}

// A violation of the invariant is a harness error: loud, failing, and in
// the Result.
func TestConservationViolationIsAHarnessError(t *testing.T) {
	b := newH(30)
	s := b.submit("m1", 0, bob, "carol@rcpt.test")
	b.deliver(1, s, bob)
	j := newJudge(b.h)
	// Not walked: the transaction is unaccounted for; judged nothing: no
	// finding for either recipient.
	j.conserve(map[string]int{"0|" + bob: 2})
	if len(j.harness) != 3 {
		t.Fatalf("harness errors: %v", j.harness)
	}
	for _, want := range []string{"has 2 findings", "has 0 findings", "was not accounted for"} {
		if !strings.Contains(strings.Join(j.harness, "\n"), want) {
			t.Errorf("harness errors lack %q: %v", want, j.harness)
		}
	}
	// Judge surfaces what conserve finds.
	r := Judge(b.h)
	if len(r.HarnessErrors) != 0 {
		t.Fatalf("a sound history gave %v", r.HarnessErrors)
	}
	j2 := newJudge(b.h)
	j2.harnessErr("lost track of %s", "m1")
	res := j2.result([]Finding{{HarnessID: "m1", Rcpt: bob, Verdicts: []Verdict{Delivered}, Primary: Delivered}})
	if res.Passed || len(res.HarnessErrors) != 1 || res.Counts[HarnessError] != 1 || res.Findings[0].Primary != HarnessError ||
		!strings.Contains(res.Findings[0].Why, "lost track of m1") {
		t.Errorf("harness error not surfaced first: %+v", res)
	}
}
