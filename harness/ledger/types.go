// Package ledger judges one scenario's History: per (message, recipient) it
// accounts for every delivery attempt the fake MTA saw, every DSN that came
// back, every queue listing and every fault, and turns them into verdicts.
//
// Judge is a pure function of the History: it reads no clock (the scenario's
// "now" is History.Ended) and does no I/O, so a saved History can be judged
// again offline with the same result. The exact rule behind every verdict,
// with its slack constants, is in docs/verdicts.md.
package ledger

import (
	"fmt"
	"time"
)

// Verdict is one judgement on a (message, recipient).
type Verdict string

// Verdicts. See docs/verdicts.md for the exact rules.
const (
	// Delivered: the fake MTA answered 2xx to the final dot of a transaction
	// in which this recipient got a 2xx RCPT reply.
	Delivered Verdict = "delivered"
	// Bounced: an accepted DSN with Action: failed names this message and recipient.
	Bounced Verdict = "bounced"
	// DelayedNotice: an accepted DSN with Action: delayed names it (informational).
	DelayedNotice Verdict = "delayed-notice"
	// HeldSilently: past a retry deadline, unresolved, and absent from the
	// relay's queue listing (the seed failure).
	HeldSilently Verdict = "held-silently"
	// Stalled: past a retry deadline, unresolved, but listed in the queue (or
	// no listing could tell).
	Stalled Verdict = "stalled"
	// Lost: unresolved when the scenario drained and absent from the final
	// queue listing taken after the last fault.
	Lost Verdict = "lost"
	// Duplicate: its body reached the recipient more than once.
	Duplicate Verdict = "duplicate"
	// Stale: delivered later than its group's latency bound (Expectation.Within).
	Stale Verdict = "stale"
	// PrematureBounce: bounced for a temporary failure before the queue lifetime.
	PrematureBounce Verdict = "premature-bounce"
	// RetryTooSoon: retried inside the greylist delay after a greylist deferral.
	RetryTooSoon Verdict = "retry-too-soon"
	// BadDSN: a DSN sent to the null sender, a DSN about a DSN, or a DSN
	// missing the fields that identify the message or recipient.
	BadDSN Verdict = "bad-dsn"
	// Pending: in flight and not yet late.
	Pending Verdict = "pending"
	// NotAccepted: the relay refused the submission; not its responsibility.
	NotAccepted Verdict = "not-accepted"
	// HarnessError: the ledger's conservation invariant does not hold (a
	// scenario-level finding): the harness itself lost track of something.
	HarnessError Verdict = "harness-error"
)

// severity orders verdicts from worst to mildest. Primary is the first
// verdict of a finding in this order (among failing verdicts when it failed),
// and Verdicts are listed in canonical order.
var severity = []Verdict{
	HarnessError, Lost, HeldSilently, BadDSN, Stalled, PrematureBounce, Duplicate, Stale,
	RetryTooSoon, Pending, Bounced, Delivered, DelayedNotice, NotAccepted,
}

// Severity returns v's rank: 0 is the worst; unknown verdicts rank last.
func Severity(v Verdict) int {
	for i, s := range severity {
		if s == v {
			return i
		}
	}
	return len(severity)
}

// AllVerdicts returns every verdict from worst to mildest.
func AllVerdicts() []Verdict { return append([]Verdict(nil), severity...) }

// Slack constants. A relay gets retry_max*RetrySlackFraction + RetrySlackFixed
// beyond its longest retry interval before a missing attempt counts against
// it, and may bounce a temporarily failing message up to
// queue_lifetime*LifetimeSlackFraction + LifetimeSlackFixed early.
const (
	RetrySlackFraction    = 0.5
	RetrySlackFixed       = time.Second
	LifetimeSlackFraction = 0.02
	LifetimeSlackFixed    = time.Second
)

// RetrySlack is the slack added to retry_max: retry_max/2 + 1s.
func RetrySlack(retryMax time.Duration) time.Duration {
	return time.Duration(float64(retryMax)*RetrySlackFraction) + RetrySlackFixed
}

// RetryBound is the longest tolerated gap without a delivery attempt for an
// unresolved message: retry_max + RetrySlack(retry_max).
func RetryBound(retryMax time.Duration) time.Duration {
	return retryMax + RetrySlack(retryMax)
}

// LifetimeSlack is how early a temporary-failure bounce may come: 2% of the
// queue lifetime + 1s (relays keep arrival times in whole seconds).
func LifetimeSlack(lifetime time.Duration) time.Duration {
	return time.Duration(float64(lifetime)*LifetimeSlackFraction) + LifetimeSlackFixed
}

// Timeline entry kinds (TimelineEntry.What).
const (
	WhatSubmitted    = "submitted"
	WhatAttempt      = "attempt"
	WhatReply        = "reply"
	WhatFault        = "fault"
	WhatQueueSeen    = "queue-seen"
	WhatQueueMissing = "queue-missing"
	WhatDSN          = "dsn"
	WhatDeadline     = "deadline"
)

// TimelineEntry is one thing that happened to a message, in time order.
type TimelineEntry struct {
	At     time.Time `json:"at"`
	What   string    `json:"what"`
	Detail string    `json:"detail,omitempty"`
}

// Finding is the ledger's judgement on one (message, recipient), or a
// scenario-level finding (HarnessID empty) for what cannot be attributed to a
// message, such as a DSN that names no message.
type Finding struct {
	HarnessID   string    `json:"harness_id,omitempty"`
	MessageID   string    `json:"message_id,omitempty"`
	Group       string    `json:"group,omitempty"`
	Rcpt        string    `json:"rcpt,omitempty"`
	SubmittedAt time.Time `json:"submitted_at,omitzero"`
	// Verdicts holds every verdict that applies, in canonical order (a message
	// may be delivered, duplicate and stale at once).
	Verdicts []Verdict `json:"verdicts"`
	// Primary is the verdict that sums the finding up: the worst failing
	// verdict when it failed, else the worst verdict.
	Primary Verdict `json:"primary"`
	// Expected says what its group expected, e.g. "delivered within 1m0s".
	Expected string `json:"expected,omitempty"`
	Failed   bool   `json:"failed"`
	// Warn marks a passing finding with a warning (retry-too-soon, tolerated duplicate).
	Warn bool `json:"warn,omitempty"`
	// Why explains Primary (and any other failure) with the deadline missed.
	Why      string          `json:"why"`
	Timeline []TimelineEntry `json:"timeline,omitempty"`
}

// Has reports whether f carries verdict v.
func (f Finding) Has(v Verdict) bool {
	for _, x := range f.Verdicts {
		if x == v {
			return true
		}
	}
	return false
}

// Result is the ledger's judgement of one scenario run.
type Result struct {
	// Findings: a harness-error finding first when the conservation
	// invariant broke, then one per (message, recipient) sorted by
	// submission time, harness id and recipient, then scenario-level
	// findings.
	Findings []Finding `json:"findings"`
	// Passed is true when no finding failed.
	Passed bool `json:"passed"`
	// Counts counts findings by Primary verdict.
	Counts map[Verdict]int `json:"counts"`
	// Foreign lists the journal transactions about no submitted message:
	// every transaction is either attributed or named here.
	Foreign []Foreign `json:"foreign,omitempty"`
	// HarnessErrors lists violations of the ledger's conservation
	// invariant (an accepted message and recipient without exactly one
	// finding, a journal transaction not accounted for). Any makes the
	// scenario fail with a scenario-level harness-error finding: the
	// harness, not the relay, lost something.
	HarnessErrors []string `json:"harness_errors,omitempty"`
}

// Failed returns the failed findings, in order.
func (r Result) Failed() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Failed {
			out = append(out, f)
		}
	}
	return out
}

// Rel formats t relative to start as "+12.345s" (the form every report and
// Why uses). A zero t formats as "-".
func Rel(start, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(start)
	sign := "+"
	if d < 0 {
		sign, d = "-", -d
	}
	return fmt.Sprintf("%s%d.%03ds", sign, d/time.Second, (d%time.Second)/time.Millisecond)
}

// Foreign is a journal transaction about no submitted message (another
// sender's traffic through the same next hop, a DSN about something else).
type Foreign struct {
	Seq      uint64    `json:"seq"`
	At       time.Time `json:"at"`
	Conn     uint64    `json:"conn,omitempty"`
	MailFrom string    `json:"mail_from"`
	Why      string    `json:"why"`
}
