// Package history holds what one scenario run recorded: submissions to the
// relay under test, the fake MTA's journal, queue listings, and faults. The
// ledger judges a History offline; it is saved as JSON on failure so
// `greyharness judge DIR` can re-check it.
package history

import (
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta/record"
)

// Timing is the relay profile's timing, from which every deadline derives.
type Timing struct {
	RetryMax      Duration `json:"retry_max" yaml:"retry_max"`           // longest gap between two delivery attempts
	QueueLifetime Duration `json:"queue_lifetime" yaml:"queue_lifetime"` // when a deferred message must bounce
	DelayWarning  Duration `json:"delay_warning" yaml:"delay_warning"`   // when a delayed DSN is due (0: relay sends none)
	RestartGrace  Duration `json:"restart_grace" yaml:"restart_grace"`   // how long a (re)start may take
}

// Submission is one message the harness handed to the relay under test.
type Submission struct {
	HarnessID   string    `json:"harness_id"` // X-Greyharness-Id, unique per message
	MessageID   string    `json:"message_id"` // without angle brackets
	Group       string    `json:"group"`      // the send step's name, for expectations
	MailFrom    string    `json:"mail_from"`
	RcptTo      []string  `json:"rcpt_to"` // every recipient the harness gave, accepted or not
	SubmittedAt time.Time `json:"submitted_at"`
	// Accepted is true when the relay answered 2xx to the final dot: from then
	// on the relay owns the message (RFC 5321 §6.1), for the recipients whose
	// RCPT it accepted, whatever happens to the line afterwards.
	Accepted bool `json:"accepted"`
	// Reply is the relay's reply to the final dot (code, enhanced code, text
	// with its queue id) or, when the message was not accepted, the reply
	// that ended the submission. Dropped: the line dropped without a reply.
	Reply record.Reply `json:"reply"`
	// Unknown is true when the whole body was sent but the line dropped (or
	// timed out) before any reply to the final dot: the relay may or may not
	// own the message (RFC 1047). Never set together with Accepted.
	Unknown bool `json:"unknown,omitempty"`
	// Rcpts is the relay's reply to each RCPT, in RcptTo order (a recipient
	// never tried because the conversation ended has no entry). Histories
	// written before it existed have none: there Accepted covers every
	// recipient of RcptTo.
	Rcpts []RcptReply `json:"rcpts,omitempty"`
	// Quit notes what went wrong after an accepted final dot (QUIT refused,
	// garbage, line dropped). It is information only: acceptance stands.
	Quit string `json:"quit,omitempty"`
	// SecondEHLO is the relay's refusal of the second EHLO of a double
	// handshake (send: ehlo_twice), e.g. OpenSMTPD's "503 5.5.1 Invalid
	// command: Already identified". RFC 5321 §4.1.4 lets a server refuse a
	// later EHLO; the session goes on in the state of the first, so it is
	// information only.
	SecondEHLO string `json:"second_ehlo,omitempty"`
	// Resubmission marks a second submission of an already used Message-ID.
	Resubmission bool `json:"resubmission,omitempty"`
}

// RcptReply is the relay's reply to one RCPT TO at submission.
type RcptReply struct {
	Addr  string       `json:"addr"`
	Reply record.Reply `json:"reply"`
}

// RcptReply returns the relay's reply to RCPT TO:<rcpt> (compared without
// case), if the submission recorded one.
func (s *Submission) RcptReply(rcpt string) (record.Reply, bool) {
	for _, r := range s.Rcpts {
		if strings.EqualFold(r.Addr, rcpt) {
			return r.Reply, true
		}
	}
	return record.Reply{}, false
}

// RcptAccepted reports whether the relay owns the message for rcpt: the
// final dot got 2xx and, when per-recipient replies were recorded, rcpt's
// RCPT got 2xx.
func (s *Submission) RcptAccepted(rcpt string) bool {
	if !s.Accepted {
		return false
	}
	if len(s.Rcpts) == 0 {
		return true // an old history: accepted means every recipient
	}
	r, ok := s.RcptReply(rcpt)
	return ok && !r.Dropped && r.Code >= 200 && r.Code < 300
}

// AcceptedRcpts returns the recipients the relay owns the message for, in
// RcptTo order.
func (s *Submission) AcceptedRcpts() []string {
	var out []string
	for _, r := range s.RcptTo {
		if s.RcptAccepted(r) {
			out = append(out, r)
		}
	}
	return out
}

// QueueEntry is one message as the relay's queue listing shows it.
type QueueEntry struct {
	QueueID    string    `json:"queue_id"`
	Sender     string    `json:"sender"`
	Recipients []string  `json:"recipients"`
	Arrival    time.Time `json:"arrival,omitempty"`
	Reason     string    `json:"reason,omitempty"` // last delay reason, when the listing says
	// Deferred says the listing shows that a delivery attempt of it failed
	// temporarily, Reason saying how (a refused connection, a timeout, a
	// 4xx): evidence that the relay tried, even when the fake MTA saw
	// nothing of it. It is no attempt at the fake MTA.
	Deferred bool `json:"deferred,omitempty"`
	// NextAttempt is when the relay says it will try next, when it says so.
	NextAttempt time.Time `json:"next_attempt,omitempty"`
	MessageID   string    `json:"message_id,omitempty"` // when the listing shows it
	HarnessID   string    `json:"harness_id,omitempty"` // when the listing shows it
}

// QueueSnapshot is one queue listing started at At and read by End: it
// covers that interval (a message resolved inside it may be missing). Err
// is set when listing failed (then Entries means nothing). A zero End
// (histories saved before End existed) means End = At.
type QueueSnapshot struct {
	At      time.Time    `json:"at"`
	End     time.Time    `json:"end,omitzero"`
	Entries []QueueEntry `json:"entries"`
	Err     string       `json:"err,omitempty"`
}

// FaultKind names an injected fault.
type FaultKind string

// Fault kinds.
const (
	FaultRelayRestart   FaultKind = "relay-restart"
	FaultRelayStop      FaultKind = "relay-stop"
	FaultRelayStart     FaultKind = "relay-start"
	FaultFakeMTAStop    FaultKind = "fakemta-stop"
	FaultFakeMTAStart   FaultKind = "fakemta-start"
	FaultFakeMTARestart FaultKind = "fakemta-restart"
	FaultFakeMTAWipe    FaultKind = "fakemta-wipe-state"
	FaultPolicySwap     FaultKind = "policy"
	FaultFlush          FaultKind = "flush"
)

// Fault is one injected fault with when it began and ended.
type Fault struct {
	Kind   FaultKind `json:"kind"`
	Start  time.Time `json:"start"`
	End    time.Time `json:"end"`
	Detail string    `json:"detail,omitempty"`
	Err    string    `json:"err,omitempty"`
}

// Checkpoint records a `checkpoint` step: the ledger judges every message
// submitted before At as of At.
type Checkpoint struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

// Expectation is one scenario expectation on a group of messages.
type Expectation struct {
	Group   string   `json:"group,omitempty"`   // "" = all messages
	Verdict string   `json:"verdict,omitempty"` // delivered, bounced, ...
	Within  Duration `json:"within,omitempty"`  // latency bound from submission (stale beyond it)
	// DSNAction expects a DSN with this Action (delayed, failed) for each message of the group.
	DSNAction string `json:"dsn_action,omitempty"`
}

// Expect is a scenario's expectations.
type Expect struct {
	Messages            []Expectation `json:"messages,omitempty"`
	NoDuplicates        bool          `json:"no_duplicates"`
	ToleratedDuplicates bool          `json:"tolerated_duplicates,omitempty"` // duplicates reported as info, not failure
	// NoSilentHold is always on; kept for the record.
	NoSilentHold bool `json:"no_silent_hold"`
	// RetryTooSoonIsError makes "retry too soon" fail the scenario instead of warning.
	RetryTooSoonIsError bool `json:"retry_too_soon_is_error,omitempty"`
}

// History is everything one scenario run recorded.
type History struct {
	Scenario string `json:"scenario"`
	Relay    string `json:"relay"` // relay profile name
	Timing   Timing `json:"timing"`
	// GreylistDelay is the scenario policy's greylist delay (0 when no greylist),
	// for "retry too soon".
	GreylistDelay Duration        `json:"greylist_delay"`
	Started       time.Time       `json:"started"`
	Ended         time.Time       `json:"ended"` // when the scenario drained
	Submissions   []Submission    `json:"submissions"`
	Journal       []record.Event  `json:"journal"`
	Queue         []QueueSnapshot `json:"queue"`
	Faults        []Fault         `json:"faults"`
	Checkpoints   []Checkpoint    `json:"checkpoints,omitempty"`
	Expect        Expect          `json:"expect"`
	// StepError says which step the harness could not carry out and why
	// (a restart command failed, the relay never came back, every submission
	// refused); the steps after it did not run. The messages are still judged
	// on what was recorded, and the scenario fails.
	StepError string `json:"step_error,omitempty"`
	// RelayDown says that the relay under test went down for good while
	// the scenario ran, by a neighbour's doing: a restart (a step's or a
	// drain's) failed and the harness's one attempt to bring the relay back
	// failed too. The steps from there did not run; what was recorded
	// before is shown, but the scenario is not judged a relay failure: its
	// outcome is an error naming the cause.
	RelayDown string `json:"relay_down,omitempty"`
}
