package history

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/greyharness/greyharness/fakemta/record"
)

// A history saved before per-recipient replies existed still loads, and
// there `accepted` covers every recipient of `rcpt_to`.
func TestOldSubmissionAcceptsEveryRecipient(t *testing.T) {
	old := `{"harness_id":"gh-1","message_id":"gh-1@h","group":"g","mail_from":"a@b","rcpt_to":["x@r","Y@r"],
		"submitted_at":"2025-03-01T12:00:00Z","accepted":true,"reply":{"code":250,"text":"accepted"}}`
	var s Submission
	if err := json.Unmarshal([]byte(old), &s); err != nil {
		t.Fatal(err)
	}
	if !s.RcptAccepted("x@r") || !s.RcptAccepted("y@r") || !reflect.DeepEqual(s.AcceptedRcpts(), []string{"x@r", "Y@r"}) {
		t.Errorf("old accepted submission: %v", s.AcceptedRcpts())
	}
	s.Accepted = false
	if s.RcptAccepted("x@r") || len(s.AcceptedRcpts()) != 0 {
		t.Error("a refused old submission accepted a recipient")
	}
}

// With per-recipient replies, only 2xx RCPTs of an accepted submission count.
func TestPartialSubmission(t *testing.T) {
	s := Submission{RcptTo: []string{"x@r", "y@r", "z@r"}, Accepted: true, Rcpts: []RcptReply{
		{Addr: "x@r", Reply: replyOf(250)}, {Addr: "Y@R", Reply: replyOf(550)}, {Addr: "z@r", Reply: replyOf(251)}}}
	if got := s.AcceptedRcpts(); !reflect.DeepEqual(got, []string{"x@r", "z@r"}) {
		t.Errorf("accepted %v", got)
	}
	if r, ok := s.RcptReply("y@r"); !ok || r.Code != 550 {
		t.Errorf("y's reply %+v %v", r, ok)
	}
	b, _ := json.Marshal(s)
	var back Submission
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back.AcceptedRcpts(), s.AcceptedRcpts()) {
		t.Errorf("round trip: %v %v", err, back.AcceptedRcpts())
	}
	s.Unknown, s.Accepted = true, false
	if len(s.AcceptedRcpts()) != 0 {
		t.Error("an unknown outcome is not acceptance")
	}
}

func replyOf(code int) record.Reply { return record.Reply{Code: code} }
