package ledger

import (
	"fmt"
	"strings"

	"github.com/greyharness/greyharness/harness/history"
)

// account judges one (message, recipient) by what its submission
// established first: only what the relay accepted is its responsibility.
//
//   - RCPT refused, or the submission refused: not-accepted, with the
//     relay's reply. It fails when the group expected anything else (the
//     scenario meant the relay to take it), and when the relay delivered a
//     recipient it had refused.
//   - No reply to the final dot (the line dropped, RFC 1047): the outcome is
//     unknown. When the relay shows it owned the message — it tried,
//     delivered, bounced or listed it — the message is judged like any
//     accepted one; otherwise not-accepted, not failed, with a warning.
//   - Otherwise (2xx to the final dot, this RCPT 2xx): judgeTrack.
func (j *judge) account(tr *track) Finding {
	s := tr.sub
	switch {
	case rcptRefused(s, tr.rcpt):
		return j.notAccepted(tr)
	case s.Unknown:
		return j.unknownOutcome(tr)
	case !s.RcptAccepted(tr.rcpt):
		return j.notAccepted(tr)
	}
	return j.judgeTrack(tr)
}

// rcptRefused reports whether the relay answered RCPT TO:<rcpt> with
// anything but 2xx at submission.
func rcptRefused(s *history.Submission, rcpt string) bool {
	r, ok := s.RcptReply(rcpt)
	return ok && (r.Dropped || !is2xx(r.Code))
}

// notAccepted is the finding on a recipient the relay refused.
func (j *judge) notAccepted(tr *track) Finding {
	s := tr.sub
	exp := j.expectFor(s.Group)
	reply, what := s.Reply, "the submission"
	if r, ok := s.RcptReply(tr.rcpt); ok && rcptRefused(s, tr.rcpt) {
		reply, what = r, fmt.Sprintf("RCPT TO:<%s>", tr.rcpt)
	}
	f := Finding{
		HarnessID: s.HarnessID, MessageID: s.MessageID, Group: s.Group, Rcpt: tr.rcpt,
		SubmittedAt: s.SubmittedAt, Expected: exp.String(),
		Verdicts: []Verdict{NotAccepted}, Primary: NotAccepted,
	}
	tl := []TimelineEntry{{At: s.SubmittedAt, What: WhatSubmitted,
		Detail: submittedDetail(s, tr.rcpt, &reply)}}
	why := []string{fmt.Sprintf("not-accepted: the relay refused %s at %s (%s): it never owned the message for %s",
		what, j.rel(s.SubmittedAt), fmtReply(&reply), tr.rcpt)}
	for _, a := range tr.attempts {
		tl = append(tl, j.attemptEntries(tr, a)...)
	}
	if len(tr.delivered) > 0 {
		f.Failed = true
		why = append(why, fmt.Sprintf("yet it delivered it to %s at %s", tr.rcpt, j.rel(tr.delivered[0])))
	}
	if exp.verdict != NotAccepted {
		f.Failed = true
		why = append(why, fmt.Sprintf("expected %s (group %q), which needs the relay to accept it", exp.verdict, s.Group))
	}
	f.Why = strings.Join(why, "; also ")
	f.Timeline = tl
	return f
}

// unknownOutcome judges a message whose final dot got no reply.
func (j *judge) unknownOutcome(tr *track) Finding {
	orig := tr.sub
	cp := *orig
	cp.Accepted = true // judged as if accepted; the evidence decides below
	tr.sub = &cp
	f := j.judgeTrack(tr)
	tr.sub = orig
	if j.owned(tr) {
		return f
	}
	var tl []TimelineEntry
	for _, e := range f.Timeline {
		if e.What != WhatDeadline {
			tl = append(tl, e)
		}
	}
	f.Timeline = tl
	f.Verdicts, f.Primary, f.Failed, f.Warn = []Verdict{NotAccepted}, NotAccepted, false, true
	f.Why = fmt.Sprintf("not-accepted: outcome unknown: the relay did not answer the final dot at %s (%s), so it never took responsibility, "+
		"and by the end at %s it had neither tried, delivered, bounced nor listed it; not held against the relay (the client must resubmit, RFC 1047)",
		j.rel(orig.SubmittedAt), orig.Reply.Text, j.rel(j.h.Ended))
	return f
}

// owned reports whether the relay showed it had the message: an attempt,
// a delivery, a DSN, or a queue listing showing it.
func (j *judge) owned(tr *track) bool {
	if len(tr.attempts) > 0 || len(tr.delivered) > 0 || len(tr.dropped) > 0 || len(tr.dsns) > 0 {
		return true
	}
	for _, s := range j.snaps {
		if visible(s, tr) {
			return true
		}
	}
	return false
}
