package runner

import (
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/scenarios"
)

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
