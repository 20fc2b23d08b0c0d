package ledger

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta/record"
	"github.com/greyharness/greyharness/harness/history"
)

// Judge judges a History. It is pure: "now" is h.Ended, and only the
// History's own timestamps are used (the fake MTA's journal times for
// attempts and DSNs; never dates written by the relay).
func Judge(h *history.History) Result {
	if h == nil {
		h = &history.History{}
	}
	j := newJudge(h)
	j.walk()
	var out []Finding
	judged := map[string]int{} // submission index and recipient → findings
	for si, trs := range j.tracks {
		for _, tr := range trs {
			out = append(out, j.account(tr)) // accepted.go: refused and unknown submissions
			judged[fmt.Sprintf("%d|%s", si, normAddr(tr.rcpt))]++
		}
	}
	j.conserve(judged)
	return j.result(out)
}

// result sorts the findings, adds the scenario-level ones (and a
// harness-error finding when the invariant broke) and counts them.
func (j *judge) result(out []Finding) Result {
	sort.SliceStable(out, func(a, b int) bool {
		x, y := out[a], out[b]
		if !x.SubmittedAt.Equal(y.SubmittedAt) {
			return x.SubmittedAt.Before(y.SubmittedAt)
		}
		if x.HarnessID != y.HarnessID {
			return x.HarnessID < y.HarnessID
		}
		return strings.ToLower(x.Rcpt) < strings.ToLower(y.Rcpt)
	})
	sc := j.scenario
	sort.SliceStable(sc, func(a, b int) bool {
		x, y := sc[a], sc[b]
		if !x.Timeline[0].At.Equal(y.Timeline[0].At) {
			return x.Timeline[0].At.Before(y.Timeline[0].At)
		}
		return x.Why < y.Why
	})
	out = append(out, sc...)
	if len(j.harness) > 0 {
		// First, so every report prints it before any message.
		out = append([]Finding{{Verdicts: []Verdict{HarnessError}, Primary: HarnessError, Failed: true,
			Why: "harness error (the harness lost track of something; no verdict here can be trusted): " + strings.Join(j.harness, "; also ")}}, out...)
	}
	r := Result{Findings: out, Passed: true, Counts: map[Verdict]int{}, Foreign: j.foreign, HarnessErrors: j.harness}
	for _, f := range out {
		r.Counts[f.Primary]++
		if f.Failed {
			r.Passed = false
		}
	}
	return r
}

// conserve checks the ledger's conservation invariant: every accepted
// (message, recipient) has exactly one finding, and every journal
// transaction was attributed to a message, a DSN, or named as foreign
// traffic. A violation is a harness error, never the relay's fault.
func (j *judge) conserve(judged map[string]int) {
	for si, s := range j.h.Submissions {
		if !s.Accepted {
			continue // judged not-accepted; nothing the relay owns
		}
		seen := map[string]bool{}
		for _, r := range s.RcptTo {
			k := normAddr(r)
			if seen[k] {
				continue
			}
			seen[k] = true
			if n := judged[fmt.Sprintf("%d|%s", si, k)]; n != 1 {
				j.harnessErr("submission %d (%s) recipient %s has %d findings, not exactly one", si, s.HarnessID, r, n)
			}
		}
	}
	for _, ev := range j.h.Journal {
		if ev.Kind == record.EventTransaction && ev.Transaction != nil && j.classes[ev.Seq] == "" {
			j.harnessErr("journal seq %d (conn %d, MAIL FROM:<%s>) was not accounted for", ev.Seq, ev.Conn, ev.Transaction.MailFrom)
		}
	}
}

// expectation is a group's merged expectations.
type expectation struct {
	verdict   Verdict
	within    time.Duration
	dsnAction string
}

// NormalizeVerdict maps the spellings a scenario may use ("held silently",
// "held_silently", "Held-Silently") to the Verdict.
func NormalizeVerdict(s string) Verdict {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.NewReplacer(" ", "-", "_", "-").Replace(s)
	return Verdict(s)
}

// expectFor merges the expectations for group: a group's own entries win
// over group-less ("all messages") entries; unset verdict means delivered.
func (j *judge) expectFor(group string) expectation {
	var e expectation
	for pass := 0; pass < 2; pass++ {
		for _, x := range j.h.Expect.Messages {
			if (pass == 0 && (group == "" || x.Group != group)) || (pass == 1 && x.Group != "") {
				continue
			}
			if e.verdict == "" && x.Verdict != "" {
				e.verdict = NormalizeVerdict(x.Verdict)
			}
			if e.within == 0 && x.Within > 0 {
				e.within = x.Within.D()
			}
			if e.dsnAction == "" && x.DSNAction != "" {
				e.dsnAction = strings.ToLower(strings.TrimSpace(x.DSNAction))
			}
		}
	}
	if e.verdict == "" {
		e.verdict = Delivered
	}
	return e
}

func (e expectation) String() string {
	s := string(e.verdict)
	if e.within > 0 {
		s += " within " + e.within.String()
	}
	if e.dsnAction != "" {
		s += ", with a DSN Action: " + e.dsnAction
	}
	return s
}

// activity is a moment from which the relay gets a fresh retry_max: the
// submission, an attempt, or the end of an outage.
type activity struct {
	at, end time.Time // an attempt lasts from its connection's start to its end
	what    string
}

func instant(at time.Time, what string) activity { return activity{at, at, what} }

// window is a stretch past a retry deadline with no attempt while the
// message was unresolved.
type window struct {
	from     activity
	deadline time.Time
	until    time.Time
	untilWhy string
	open     bool // unresolved to the end of the scenario
}

type verdicts struct {
	why     map[Verdict][]string
	failing map[Verdict]bool
	// gapDuplicate: every copy but the last was accepted while the relay
	// was being restarted or stopped (RFC 1047's gap, which a restart opens
	// for any relay): a warning, not a failure.
	gapDuplicate bool
}

func (v *verdicts) add(x Verdict, why string) {
	if v.why == nil {
		v.why = map[Verdict][]string{}
	}
	if why != "" {
		v.why[x] = append(v.why[x], why)
	} else if _, ok := v.why[x]; !ok {
		v.why[x] = nil
	}
}

func (v *verdicts) has(x Verdict) bool { _, ok := v.why[x]; return ok }

func (j *judge) rel(t time.Time) string { return Rel(j.h.Started, t) }

// trackCase is one accepted (message, recipient) while judgeTrack decides
// it: the evidence the steps below find and the verdicts the rules give.
// Each rule reads it and adds verdicts (with the evidence that made them)
// and timeline entries; judgeTrack runs them in a fixed order.
type trackCase struct {
	tr        *track
	s         *history.Submission
	exp       expectation
	v         verdicts
	tl        []TimelineEntry
	extraFail []string // failures that are no verdict (an unmet expectation)

	// Resolution: first delivery, first well-formed failed DSN (bounce), or
	// first failed DSN that is bad; resolved is the earliest of them.
	delivered, bounced, badResolved, resolved time.Time
	bounce                                    *dsnSeen
	giveUp                                    *dsnTry  // unresolved, and the relay gave up: its DSN never got through
	expired                                   *dsnSeen // unresolved, and the relay gave up saying "delayed" (expiry.go)
	end                                       time.Time
	endWhy                                    string

	acts        []activity // moments from which the relay gets a fresh retry_max
	lastAttempt time.Time
	bodies      int    // times the body reached this recipient
	inGap       []bool // each body: the relay was restarted or stopped before it was known to have recorded it
	bodyNotes   []string

	openVerdict Verdict // the verdict of a window still open at the end
	// unjudged: unresolved when the relay went down for good by a
	// neighbour's doing (judge.downSince): pending, and no failure.
	unjudged bool
	vanished []string // hidden while overdue and never back
	outcome  Verdict
}

// judgeTrack judges one (message, recipient): a refused submission is
// not-accepted; an accepted one goes through the rules below.
func (j *judge) judgeTrack(tr *track) Finding {
	s := tr.sub
	c := &trackCase{tr: tr, s: s, exp: j.expectFor(s.Group)}
	c.tl = []TimelineEntry{{At: s.SubmittedAt, What: WhatSubmitted,
		Detail: submittedDetail(s, tr.rcpt, &s.Reply)}}
	if !s.Accepted {
		return Finding{
			HarnessID: s.HarnessID, MessageID: s.MessageID, Group: s.Group, Rcpt: tr.rcpt,
			SubmittedAt: s.SubmittedAt, Expected: c.exp.String(),
			Verdicts: []Verdict{NotAccepted}, Primary: NotAccepted, Timeline: c.tl,
			Why: fmt.Sprintf("the relay refused the submission at %s (%s): not its responsibility", j.rel(s.SubmittedAt), fmtReply(&s.Reply)),
		}
	}
	sort.SliceStable(tr.attempts, func(a, b int) bool { return tr.attempts[a].at.Before(tr.attempts[b].at) })
	sort.SliceStable(tr.dsns, func(a, b int) bool { return tr.dsns[a].at.Before(tr.dsns[b].at) })
	sort.Slice(tr.delivered, func(a, b int) bool { return tr.delivered[a].Before(tr.delivered[b]) })

	j.ruleDSNs(c)
	j.resolve(c)
	j.activities(c)
	j.evidenceTimeline(c)

	j.ruleDelivered(c)
	j.ruleDuplicate(c)
	j.ruleStale(c)
	j.ruleBounced(c)
	j.rulePrematureBounce(c)
	j.ruleRetryTooSoon(c)
	j.ruleRetryDeadlines(c)
	j.ruleGaveUp(c)
	j.ruleOutcome(c)
	for _, cp := range j.h.Checkpoints {
		c.tl = append(c.tl, j.checkpoint(tr, cp, c.acts, c.resolved, &c.v)...)
	}
	j.ruleExpectedDSN(c)
	return j.finding(c)
}

// ruleDSNs gives, for each DSN the fake MTA accepted: bad-dsn when it
// lacks what identifies the message (evidence: its problems; a bad failed
// DSN still resolves the message), delayed-notice for Action: delayed
// (evidence: its status and arrival). The first good Action: failed DSN is
// the bounce (ruleBounced).
func (j *judge) ruleDSNs(c *trackCase) {
	for i := range c.tr.dsns {
		d := &c.tr.dsns[i]
		if !d.accepted {
			continue
		}
		switch {
		case len(d.problems) > 0:
			c.v.add(BadDSN, fmt.Sprintf("the DSN that arrived at %s %s", j.rel(d.at), strings.Join(d.problems, "; ")))
			if d.action == "failed" && c.badResolved.IsZero() {
				c.badResolved = d.at
			}
		case d.action == "failed":
			if c.bounce == nil {
				c.bounce, c.bounced = d, d.at
			}
		case d.action == "delayed":
			c.v.add(DelayedNotice, fmt.Sprintf("a DSN Action: delayed (Status %s) arrived at %s", d.status, j.rel(d.at)))
		}
	}
}

// resolve finds when the message was resolved and where its story ends:
// at the resolution, when the relay gave up (a DSN try that never got
// through, and no attempt after), or at the end of the scenario.
func (j *judge) resolve(c *trackCase) {
	tr := c.tr
	if len(tr.delivered) > 0 {
		c.delivered = tr.delivered[0]
	}
	c.resolved = earliest(c.delivered, c.bounced, c.badResolved)
	sort.SliceStable(tr.tries, func(a, b int) bool { return tr.tries[a].at.Before(tr.tries[b].at) })
	if c.resolved.IsZero() {
		c.giveUp = j.gaveUp(tr)
	}
	if c.resolved.IsZero() && c.giveUp == nil {
		c.expired = j.expiryNotice(tr)
	}
	c.end, c.endWhy = c.resolved, "resolution"
	switch {
	case c.giveUp != nil:
		c.end, c.endWhy = c.giveUp.at, "the relay gave up"
	case c.expired != nil:
		c.end, c.endWhy = c.expired.at, "the relay gave up"
	case c.end.IsZero():
		c.end, c.endWhy = j.h.Ended, "the end of the scenario"
	}
}

// activities collects the moments that give the relay a fresh retry_max
// (submission, attempts, connection-only attempts, outage ends), the
// attempts' timeline and the bodies the recipient received.
func (j *judge) activities(c *trackCase) {
	tr, s := c.tr, c.s
	c.acts = []activity{instant(s.SubmittedAt, "submission")}
	for _, a := range tr.attempts {
		c.tl = append(c.tl, j.attemptEntries(tr, a)...)
		if a.start.Before(c.end) {
			// An attempt lasts while its connection was open: a delivery
			// that survived an outage on its original connection counts.
			c.acts = append(c.acts, activity{a.start, earliest(a.at, c.end), "attempt"})
		}
		if a.at.After(c.lastAttempt) {
			c.lastAttempt = a.at
		}
		if a.body && a.rcpt != nil && is2xx(a.rcpt.Code) && !a.rcpt.Dropped && a.data != nil && (a.data.Dropped || is2xx(a.data.Code)) {
			c.bodies++
			// While the final dot waited for its answer, not when the
			// session ended (a cached connection may end much later, in a
			// restart): from when the body was received (stamped as it
			// arrived) to when the reply was written. A restart that began
			// meanwhile killed the relay's client before it could read
			// the reply, even when the journal, stalled by the restart's
			// load, recorded the reply after the restart had ended.
			//
			// And after the reply, until the relay is known to have
			// recorded the delivery: it does so some time after reading the
			// 250, and a restart in between loses the record. With the
			// queue listed, that is the first listing after the reply that
			// no longer shows the copy (none: to the end); with no listing
			// at all nothing shows it, and the reply stands in.
			from, to := a.received, a.replied
			if to.IsZero() || a.data.Dropped {
				to = from
			}
			if from.IsZero() {
				from = to
			}
			if from.IsZero() {
				from, to = a.at, a.at
			}
			if !a.data.Dropped && len(j.snaps) > 0 {
				to = j.recordedBy(tr, to)
			}
			c.inGap = append(c.inGap, j.relayDown(from, to))
			what := fmtReply(a.data)
			if a.data.Dropped {
				what = "line dropped after the body, no reply"
			}
			if !a.received.IsZero() && a.at.Sub(a.received) >= bodyLag {
				// The evidence for a gap the journal's time alone hides.
				what += ", body received at " + j.rel(a.received)
			}
			c.bodyNotes = append(c.bodyNotes, fmt.Sprintf("%s (%s)", j.rel(a.at), what))
		}
	}
	var connOnly []attempt
	for _, a := range j.connOnly {
		if a.at.After(s.SubmittedAt) && a.at.Before(c.end) {
			c.acts = append(c.acts, instant(a.at, "connection attempt"))
			connOnly = append(connOnly, a)
		}
	}
	c.tl = append(c.tl, j.collapseConnOnly(connOnly)...)
	for _, o := range j.outages {
		if o.end.After(s.SubmittedAt) && o.end.Before(c.end) {
			c.acts = append(c.acts, instant(o.end, "end of "+string(o.kind)))
		}
	}
	sort.SliceStable(c.acts, func(a, b int) bool { return c.acts[a].at.Before(c.acts[b].at) })
}

// evidenceTimeline puts faults, DSNs, notes, DSN tries and queue sightings
// on the timeline.
func (j *judge) evidenceTimeline(c *trackCase) {
	tr, s := c.tr, c.s
	tlEnd := c.resolved // faults shown up to the resolution, or the end when unresolved
	if tlEnd.IsZero() {
		tlEnd = j.h.Ended
	}
	for _, fl := range j.h.Faults {
		if !fl.Start.Before(s.SubmittedAt) && !fl.Start.After(tlEnd) || (fl.Start.Before(s.SubmittedAt) && fl.End.After(s.SubmittedAt)) {
			d := string(fl.Kind)
			if !fl.End.IsZero() {
				d += " until " + j.rel(fl.End)
			}
			if fl.Detail != "" {
				d += ": " + fl.Detail
			}
			if fl.Err != "" {
				d += " (error: " + fl.Err + ")"
			}
			c.tl = append(c.tl, TimelineEntry{At: fl.Start, What: WhatFault, Detail: d})
		}
	}
	for _, d := range tr.dsns {
		det := fmt.Sprintf("conn %d: DSN Action: %s Status: %s, attributed by %s", d.conn, d.action, d.status, d.matchedBy)
		if !d.accepted {
			det += " (not accepted by the fake MTA)"
		}
		if len(d.problems) > 0 {
			det += "; bad: " + strings.Join(d.problems, "; ")
		}
		c.tl = append(c.tl, TimelineEntry{At: d.at, What: WhatDSN, Detail: det})
	}
	c.tl = append(c.tl, tr.notes...)
	for _, d := range tr.tries {
		fate := "it never got through"
		for _, x := range tr.dsns {
			if x.accepted && x.at.After(d.at) {
				fate = "a later try got through at " + j.rel(x.at)
				break
			}
		}
		c.tl = append(c.tl, TimelineEntry{At: d.at, What: WhatDSN, Detail: fmt.Sprintf("conn %d: a DSN to the sender %s at %s: %s; %s",
			d.conn, d.verb(), d.stage, fmtReply(&d.reply), fate)})
	}
	c.tl = append(c.tl, j.queueEntries(tr, c.end, c.resolved.IsZero())...)
}

// recordedBy is when the relay is known to have recorded a copy of tr
// answered at replied: the end of the first usable listing begun at or
// after replied that no longer shows it; the end of the history when none
// does.
func (j *judge) recordedBy(tr *track, replied time.Time) time.Time {
	for _, s := range j.snaps {
		if !s.At.Before(replied) && !visible(s, tr) {
			return snapEnd(s)
		}
	}
	if j.h.Ended.IsZero() {
		return time.Unix(1<<40, 0) // a history not ended: never
	}
	return j.h.Ended
}

// bodyLag is how long after its body's arrival a transaction must be
// journaled for the duplicate's evidence to name the arrival too.
const bodyLag = 100 * time.Millisecond

// ruleDelivered gives delivered: the fake MTA answered 2xx after the
// final dot for this recipient (evidence: the first such reply's time).
func (j *judge) ruleDelivered(c *trackCase) {
	if c.delivered.IsZero() {
		return
	}
	c.v.add(Delivered, fmt.Sprintf("delivered at %s, %s after submission", j.rel(c.delivered), c.delivered.Sub(c.s.SubmittedAt).Round(time.Millisecond)))
}

// ruleDuplicate gives duplicate: delivered, and its body reached the
// recipient more than once (evidence: each body's time and reply, a line
// dropped after the body counting too: RFC 1047).
func (j *judge) ruleDuplicate(c *trackCase) {
	if c.delivered.IsZero() || len(c.tr.delivered) < 1 || c.bodies < 2 {
		return
	}
	why := fmt.Sprintf("its body reached %s %d times: %s", c.tr.rcpt, c.bodies, strings.Join(c.bodyNotes, ", "))
	earlier := c.inGap[:len(c.inGap)-1] // (bodies ≥ 2: each appended one)
	gap := len(earlier) > 0
	for _, g := range earlier {
		gap = gap && g
	}
	if gap {
		// A copy accepted while the relay went down is one it may not have recorded.
		c.v.gapDuplicate = true
		why += "; the relay was restarted or stopped before it was known to have recorded the earlier copies (a final dot still unanswered, or no queue listing yet without the message), so it could not record them (RFC 1047): a warning"
	}
	c.v.add(Duplicate, why)
}

// ruleStale gives stale: delivered later than the scenario's latency
// bound (evidence: delivery time against submission + within; the bound
// goes on the timeline).
func (j *judge) ruleStale(c *trackCase) {
	s, within := c.s, c.exp.within
	if c.delivered.IsZero() || within <= 0 {
		return
	}
	// An outage (a restart, the fake MTA down: the scenario's own or a
	// neighbour's) is not the relay's delay: the bound stretches by it.
	down := j.outageTime(s.SubmittedAt, c.delivered)
	if c.delivered.Sub(s.SubmittedAt)-down <= within {
		return
	}
	by := s.SubmittedAt.Add(within + down)
	excused := ""
	if down > 0 {
		excused = fmt.Sprintf(", %s of outage excused", down.Round(time.Millisecond))
	}
	c.v.add(Stale, fmt.Sprintf("delivered at %s, %s after submission; expected within %s (by %s%s)",
		j.rel(c.delivered), c.delivered.Sub(s.SubmittedAt).Round(time.Millisecond), within, j.rel(by), excused))
	c.tl = append(c.tl, TimelineEntry{At: by, What: WhatDeadline, Detail: "expected delivered within " + within.String()})
}

// ruleBounced gives bounced: a well-formed DSN Action: failed reached the
// sender (evidence: its status and arrival). Delivered and bounced both is
// a failure of its own.
func (j *judge) ruleBounced(c *trackCase) {
	if c.bounce == nil {
		return
	}
	c.v.add(Bounced, fmt.Sprintf("a DSN Action: failed (Status %s) arrived at %s", c.bounce.status, j.rel(c.bounced)))
	if !c.delivered.IsZero() {
		c.extraFail = append(c.extraFail, fmt.Sprintf("it was delivered at %s and yet bounced at %s", j.rel(c.delivered), j.rel(c.bounced)))
	}
}

// rulePrematureBounce gives premature-bounce: bounced, undelivered, for a
// temporary failure (the fake MTA never gave a 5xx), before the profile's
// queue lifetime less its slack. Evidence: when the relay gave up (its
// first DSN try, else the bounce) against submission + queue_lifetime,
// which goes on the timeline.
func (j *judge) rulePrematureBounce(c *trackCase) {
	ql := j.h.Timing.QueueLifetime.D()
	if c.bounce == nil || ql <= 0 || !c.delivered.IsZero() {
		return
	}
	due := c.s.SubmittedAt.Add(ql)
	// The relay gave up when it first tried the DSN, not when the DSN
	// finally got through.
	gave, how := c.bounced, ""
	if d := j.firstTryBefore(c.tr, c.bounced); d != nil {
		gave, how = d.at, fmt.Sprintf(" (it gave up at %s, when it first tried the DSN: %s at %s)", j.rel(d.at), fmtReply(&d.reply), d.stage)
	}
	if gave.Before(due.Add(-LifetimeSlack(ql))) && j.temporary(c.tr, c.bounce) {
		c.v.add(PrematureBounce, fmt.Sprintf("bounced at %s%s for a temporary failure (Status %s; the fake MTA never gave it a 5xx) before the queue lifetime %s ran out at %s (slack %s)",
			j.rel(c.bounced), how, c.bounce.status, ql, j.rel(due), LifetimeSlack(ql)))
		c.tl = append(c.tl, TimelineEntry{At: due, What: WhatDeadline, Detail: "queue lifetime " + ql.String() + " ends: no bounce for a temporary failure before this"})
	}
}

// ruleRetryTooSoon gives retry-too-soon: a retry inside the greylist delay
// after a greylist deferral (evidence: the first such retry, its gap, and
// how many there were).
func (j *judge) ruleRetryTooSoon(c *trackCase) {
	if len(c.tr.tooSoon) == 0 {
		return
	}
	t := c.tr.tooSoon[0]
	why := fmt.Sprintf("retried at %s, only %s after the greylist deferral at %s (greylist delay %s)",
		j.rel(t.at), t.at.Sub(t.ref).Round(time.Millisecond), j.rel(t.ref), j.h.GreylistDelay.D())
	if n := len(c.tr.tooSoon); n > 1 {
		why += fmt.Sprintf(", %d retries too soon in all", n)
	}
	c.v.add(RetryTooSoon, why)
}

// ruleRetryDeadlines gives, for every gap with no attempt longer than
// retry_max plus slack while unresolved, what judgeWindow finds in the
// queue listings of that gap: stalled (visible, untried) or held-silently
// (hidden, and later back). Evidence: the gap's start and the listings;
// each deadline goes on the timeline. A window still open at the end
// decides the outcome when nothing stronger does (ruleOutcome).
func (j *judge) ruleRetryDeadlines(c *trackCase) {
	if j.h.Timing.RetryMax <= 0 {
		return
	}
	for _, w := range j.windows(c.acts, c.end, c.endWhy, c.resolved.IsZero() && c.giveUp == nil) {
		wvs, van := j.judgeWindow(c.tr, w, c.resolved)
		for _, x := range wvs {
			c.v.add(x.v, x.why)
		}
		if van != "" {
			c.vanished = append(c.vanished, van)
		}
		c.tl = append(c.tl, TimelineEntry{At: w.deadline, What: WhatDeadline,
			Detail: fmt.Sprintf("retry deadline: %s (%s) + retry_max %s + slack %s, no attempt by then",
				j.rel(w.from.end), w.from.what, j.h.Timing.RetryMax.D(), RetrySlack(j.h.Timing.RetryMax.D()))})
		if w.open && len(wvs) > 0 {
			c.openVerdict = wvs[0].v
		}
	}
}

// ruleGaveUp gives lost when the relay gave up on an unresolved message
// and the sender never learnt (evidence: its DSN tries and their fate),
// and premature-bounce when it gave up for a temporary failure before the
// queue lifetime less its slack.
func (j *judge) ruleGaveUp(c *trackCase) {
	if c.giveUp == nil {
		return
	}
	fate := j.dsnFate(c.tr, c.giveUp)
	if ql := j.h.Timing.QueueLifetime.D(); ql > 0 {
		due := c.s.SubmittedAt.Add(ql)
		if c.giveUp.at.Before(due.Add(-LifetimeSlack(ql))) && j.temporary(c.tr, &dsnSeen{at: c.giveUp.at}) {
			c.v.add(PrematureBounce, fmt.Sprintf("the relay gave up at %s for a temporary failure (the fake MTA never gave it a 5xx): it tried to send a DSN then and never tried the message again, before the queue lifetime %s ran out at %s (slack %s)",
				j.rel(c.giveUp.at), ql, j.rel(due), LifetimeSlack(ql)))
			c.tl = append(c.tl, TimelineEntry{At: due, What: WhatDeadline, Detail: "queue lifetime " + ql.String() + " ends: no bounce for a temporary failure before this"})
		}
	}
	c.v.add(Lost, fmt.Sprintf("the relay gave up on it at %s and the sender never learnt: %s; undelivered and unbounced when the scenario drained at %s",
		j.rel(c.giveUp.at), fate, j.rel(j.h.Ended)))
}

// ruleOutcome decides how the message ended: delivered, bounced, bad-dsn,
// lost (gave up), bad-dsn (it gave up at the queue lifetime with an
// Action: delayed DSN: expiry.go), or, unresolved, by ruleLostFromListing,
// ruleHeldSilently, the open window's verdict, or rulePending, in that
// order.
func (j *judge) ruleOutcome(c *trackCase) {
	switch {
	case !c.delivered.IsZero():
		c.outcome = Delivered
	case c.bounce != nil:
		c.outcome = Bounced
	case !c.badResolved.IsZero():
		c.outcome = BadDSN
	case c.giveUp != nil:
		c.outcome = Lost
	case c.expired != nil:
		c.outcome = BadDSN
		c.v.add(BadDSN, j.expiryWhy(c.tr, c.expired))
	case !j.downSince.IsZero():
		// What happened to it after that is no verdict on the relay's
		// handling of it here: the scenario's outcome names the cause.
		c.outcome, c.unjudged = Pending, true
		c.v.add(Pending, fmt.Sprintf("not judged: unresolved when the relay went down for good at %s, by a neighbour's doing (%s)",
			j.rel(j.downSince), j.h.RelayDown))
	case j.ruleLostFromListing(c):
		c.outcome = Lost
	case j.ruleHeldSilently(c):
		c.outcome = HeldSilently
	case c.openVerdict != "":
		c.outcome = c.openVerdict
	default:
		j.rulePending(c)
		c.outcome = Pending
	}
}

// ruleLostFromListing gives lost: unresolved when the scenario drained,
// and absent from a final queue listing taken after the last fault, the
// last attempt and the submission (evidence: that listing, and where the
// message was last seen).
func (j *judge) ruleLostFromListing(c *trackCase) bool {
	final := j.finalSnap()
	if final == nil || final.At.Before(j.lastFaultEnd) || final.At.Before(c.lastAttempt) ||
		final.At.Before(c.s.SubmittedAt) || visible(*final, c.tr) {
		return false
	}
	c.v.add(Lost, fmt.Sprintf("undelivered and unbounced when the scenario drained at %s, and absent from the final queue listing at %s (after the last fault ended at %s): %s",
		j.rel(j.h.Ended), j.rel(final.At), j.rel(j.lastFaultEnd), j.lastSeen(c.tr)+j.queuedDSN(c.tr)))
	return true
}

// ruleHeldSilently gives held-silently to an unresolved message that went
// missing from the queue listings while overdue and never came back, when
// no usable listing after the last fault proves it lost (evidence: the
// windows it vanished in).
func (j *judge) ruleHeldSilently(c *trackCase) bool {
	if len(c.vanished) == 0 {
		return false
	}
	c.v.add(HeldSilently, strings.Join(c.vanished, "; ")+", though no usable listing after the last fault could prove it lost")
	return true
}

// rulePending gives pending: unresolved and still within its retry bound
// when the scenario ended (evidence: the last activity and when the next
// attempt is due).
func (j *judge) rulePending(c *trackCase) {
	var last time.Time
	for _, a := range c.acts {
		if a.end.After(last) {
			last = a.end
		}
	}
	c.v.add(Pending, fmt.Sprintf("still in flight when the scenario ended at %s: last activity %s, next attempt due by %s",
		j.rel(j.h.Ended), j.rel(last), j.rel(last.Add(j.bound))))
}

// ruleExpectedDSN fails a message whose scenario expects a DSN with a given
// action when no well-formed one arrived by the end.
func (j *judge) ruleExpectedDSN(c *trackCase) {
	if c.exp.dsnAction == "" || c.unjudged {
		return
	}
	for _, d := range c.tr.dsns {
		if d.accepted && len(d.problems) == 0 && d.action == c.exp.dsnAction {
			return
		}
	}
	c.extraFail = append(c.extraFail, fmt.Sprintf("expected a DSN with Action: %s (group %q) by the end at %s; none arrived", c.exp.dsnAction, c.s.Group, j.rel(j.h.Ended)))
}

// finding decides which verdicts fail (by the scenario's expectations),
// the primary verdict, whether it only warns, and the explanation.
func (j *judge) finding(c *trackCase) Finding {
	s, exp, v := c.s, c.exp, &c.v
	f := Finding{
		HarnessID: s.HarnessID, MessageID: s.MessageID, Group: s.Group, Rcpt: c.tr.rcpt,
		SubmittedAt: s.SubmittedAt, Expected: exp.String(),
	}
	extraFail := c.extraFail
	v.failing = map[Verdict]bool{}
	for x := range v.why {
		switch x {
		case Lost, HeldSilently, BadDSN:
			v.failing[x] = true
		case Stalled, PrematureBounce, Stale:
			v.failing[x] = x != exp.verdict
		case Duplicate:
			v.failing[x] = !j.h.Expect.ToleratedDuplicates && x != exp.verdict && !v.gapDuplicate
		case RetryTooSoon:
			v.failing[x] = j.h.Expect.RetryTooSoonIsError && x != exp.verdict
		}
	}
	outcomeOK := c.outcome == exp.verdict || v.has(exp.verdict)
	if !outcomeOK && !v.failing[c.outcome] && !c.unjudged { // a failing outcome explains itself
		extraFail = append([]string{fmt.Sprintf("expected %s (group %q) but it ended %s", exp.verdict, s.Group, c.outcome)}, extraFail...)
	}

	for x := range v.why {
		f.Verdicts = append(f.Verdicts, x)
	}
	sort.Slice(f.Verdicts, func(a, b int) bool { return canon(f.Verdicts[a]) < canon(f.Verdicts[b]) })
	var failing []Verdict
	for _, x := range f.Verdicts {
		if v.failing[x] {
			failing = append(failing, x)
		}
	}
	f.Failed = len(failing) > 0 || len(extraFail) > 0
	f.Primary = worst(f.Verdicts)
	switch {
	case len(failing) > 0:
		f.Primary = worst(failing)
	case f.Failed:
		f.Primary = c.outcome
	}
	f.Warn = !f.Failed && ((v.has(RetryTooSoon)) || v.has(Duplicate))
	// Why: the primary's explanation, then every other failure.
	parts := []string{string(f.Primary) + ": " + strings.Join(v.why[f.Primary], "; ")}
	if len(v.why[f.Primary]) == 0 {
		parts[0] = string(f.Primary)
	}
	for _, x := range failing {
		if x != f.Primary {
			parts = append(parts, string(x)+": "+strings.Join(v.why[x], "; "))
		}
	}
	parts = append(parts, extraFail...)
	if !f.Failed && f.Warn && f.Primary != RetryTooSoon && v.has(RetryTooSoon) {
		parts = append(parts, "retry-too-soon: "+strings.Join(v.why[RetryTooSoon], "; "))
	}
	f.Why = strings.Join(parts, "; also ")
	sort.SliceStable(c.tl, func(a, b int) bool { return c.tl[a].At.Before(c.tl[b].At) })
	f.Timeline = c.tl
	return f
}

// canon is a verdict's place in Finding.Verdicts: outcomes first, then
// problems from worst to mildest.
func canon(v Verdict) int {
	switch v {
	case Delivered:
		return -4
	case Bounced:
		return -3
	case Pending:
		return -2
	case NotAccepted:
		return -1
	}
	return Severity(v)
}

func worst(vs []Verdict) Verdict {
	var w Verdict
	for _, v := range vs {
		if w == "" || Severity(v) < Severity(w) {
			w = v
		}
	}
	return w
}

func earliest(ts ...time.Time) time.Time {
	var e time.Time
	for _, t := range ts {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

// temporary reports whether a bounce was for a temporary failure: the fake
// MTA never answered this recipient with a 5xx, and either the relay did try
// or its DSN says 4.x.x (a relay may bounce untried mail for its own
// permanent reason, 5.x.x).
func (j *judge) temporary(tr *track, d *dsnSeen) bool {
	tried := false
	for _, a := range tr.attempts {
		if a.at.After(d.at) {
			continue
		}
		tried = true
		for _, r := range []*record.Reply{&a.mail, a.rcpt, a.data} {
			if r != nil && !r.Dropped && r.Code >= 500 {
				return false
			}
		}
	}
	return tried || !strings.HasPrefix(d.status, "5")
}

// windows finds the stretches past a retry deadline: after the end of each
// activity not covered by another (an attempt lasts while its connection
// was open), if no further activity (nor the start of an outage, which
// pauses the clock) begins within the bound while the message is unresolved.
func (j *judge) windows(acts []activity, end time.Time, endWhy string, unresolved bool) []window {
	var ws []window
	var cur activity // the activity that ends last so far
	for i, a := range acts {
		if !a.at.Before(end) {
			continue
		}
		if i == 0 || a.end.After(cur.end) {
			cur = a
		}
		from := cur.end
		next, nextWhy, open := end, endWhy, unresolved
		if i+1 < len(acts) && acts[i+1].at.Before(end) {
			if !acts[i+1].at.After(from) {
				continue // the next activity began before this one ended
			}
			next, nextWhy, open = acts[i+1].at, acts[i+1].what, false
		}
		if j.inOutage(from) {
			continue
		}
		for _, o := range j.outages {
			if o.start.After(from) && o.start.Before(next) {
				next, nextWhy, open = o.start, "start of "+string(o.kind), false
				break
			}
		}
		if next.Sub(from) > j.bound {
			ws = append(ws, window{from: cur, deadline: from.Add(j.bound), until: next, untilWhy: nextWhy, open: open})
		}
	}
	return ws
}

type windowVerdict struct {
	v   Verdict
	why string
}

// snapEnd is when a listing was read (its start for histories without End).
func snapEnd(s history.QueueSnapshot) time.Time {
	if s.End.Before(s.At) {
		return s.At
	}
	return s.End
}

// proves reports whether listing s is evidence about tr: a listing that
// does not show a message resolved before the listing was read proves
// nothing (the message may have left while it was being listed).
func proves(s history.QueueSnapshot, tr *track, resolved time.Time) bool {
	return resolved.IsZero() || snapEnd(s).Before(resolved) || visible(s, tr)
}

// judgeWindow judges one overdue window from the queue listings taken
// during it (at or after the deadline, up to the window's end; for an open
// window, any time after the deadline). With no listing in the window, the
// latest listing between the last activity and the deadline stands in.
//   - listed in all: stalled;
//   - missing from one and it came back later (attempted, delivered, a DSN,
//     or listed again): held silently;
//   - missing and it never came back: no held-silently (lost, at the end,
//     says it), but stalled for the span it was listed while overdue; the
//     returned vanished says so for the caller when lost cannot be proved;
//   - no listing: stalled, visibility unknown — or, when the relay's queue
//     is not observable at all and nothing was ever seen of the message,
//     held silently.
func (j *judge) judgeWindow(tr *track, w window, resolved time.Time) (out []windowVerdict, vanished string) {
	var ev []history.QueueSnapshot
	for _, s := range j.snaps {
		if !s.At.Before(w.deadline) && (w.open || !s.At.After(w.until)) && proves(s, tr, resolved) {
			ev = append(ev, s)
		}
	}
	if len(ev) == 0 {
		for _, s := range j.snaps {
			if !s.At.Before(w.from.end) && s.At.Before(w.deadline) && proves(s, tr, resolved) {
				ev = []history.QueueSnapshot{s}
			}
		}
	}
	rm, slack := j.h.Timing.RetryMax.D(), RetrySlack(j.h.Timing.RetryMax.D())
	gap := fmt.Sprintf("no delivery attempt from %s (%s) until %s (%s): retry deadline %s (retry_max %s + slack %s) missed",
		j.rel(w.from.end), w.from.what, j.rel(w.until), w.untilWhy, j.rel(w.deadline), rm, slack)
	if w.open {
		gap = fmt.Sprintf("no delivery attempt from %s (%s) to the end at %s: retry deadline %s (retry_max %s + slack %s) missed",
			j.rel(w.from.end), w.from.what, j.rel(w.until), j.rel(w.deadline), rm, slack)
	}
	if len(ev) == 0 {
		if len(j.snaps) == 0 && len(tr.attempts) == 0 && len(tr.dsns) == 0 && len(tr.tries) == 0 {
			return []windowVerdict{{HeldSilently, gap + ", and nothing was ever seen of it: no attempt, no DSN, and the relay's queue is not observable (no queue listing), so nobody could see it"}}, ""
		}
		return []windowVerdict{{Stalled, gap + " (no queue listing while it was overdue: visibility unknown)"}}, ""
	}
	hidden := -1
	for i, s := range ev {
		if !visible(s, tr) {
			hidden = i
			break
		}
	}
	if hidden < 0 {
		return []windowVerdict{{Stalled, gap + fmt.Sprintf(", though the queue listing at %s showed it", j.rel(ev[0].At))}}, ""
	}
	h := ev[hidden]
	if at, how := j.cameBack(tr, h.At); !at.IsZero() {
		return []windowVerdict{{HeldSilently, gap + fmt.Sprintf(", and the queue listing at %s did not show it; it came back: %s", j.rel(h.At), how)}}, ""
	}
	vanished = gap + fmt.Sprintf(", then the queue listing at %s did not show it and it never came back", j.rel(h.At))
	if hidden > 0 {
		out = append(out, windowVerdict{Stalled, gap + fmt.Sprintf(", though listed while overdue (%s to %s); then gone from the queue listing at %s and it never came back",
			j.rel(ev[0].At), j.rel(ev[hidden-1].At), j.rel(h.At))})
	}
	return out, vanished
}

// cameBack says how and when the relay showed it still had the message
// after t: an attempt, a delivery, a DSN (even one that never got
// through), or a queue listing showing it. Zero when it never did.
func (j *judge) cameBack(tr *track, t time.Time) (time.Time, string) {
	var at time.Time
	var how string
	consider := func(x time.Time, what string) {
		if x.After(t) && (at.IsZero() || x.Before(at)) {
			at, how = x, what+" at "+j.rel(x)
		}
	}
	for _, d := range tr.delivered {
		consider(d, "delivered")
	}
	for _, d := range tr.dsns {
		consider(d.at, "a DSN Action: "+d.action+" arrived")
	}
	for _, a := range tr.attempts {
		consider(a.at, "tried again")
	}
	for _, d := range tr.tries {
		consider(d.at, "the relay tried to send a DSN")
	}
	for _, s := range j.snaps {
		if visible(s, tr) {
			consider(s.At, "listed again")
		}
	}
	return at, how
}

// lastSeen says when a lost message was last seen in the relay's queue.
func (j *judge) lastSeen(tr *track) string {
	var last time.Time
	for _, s := range j.snaps {
		if visible(s, tr) {
			last = s.At
		}
	}
	if last.IsZero() {
		return "never listed after its submission, and it never came back"
	}
	return "last listed at " + j.rel(last) + ", and it never came back"
}

// queuedDSN names a DSN to the message's sender that sat in the relay's
// queue listings: the relay meant to report, and it never got through.
func (j *judge) queuedDSN(tr *track) string {
	from := normAddr(tr.sub.MailFrom)
	var first, last time.Time
	var entry history.QueueEntry
	for _, s := range j.snaps {
		if s.At.Before(tr.sub.SubmittedAt) {
			continue
		}
		for _, e := range s.Entries {
			if snd := normAddr(e.Sender); snd != "" && !strings.HasPrefix(snd, "mailer-daemon") {
				continue
			}
			for _, r := range e.Recipients {
				if normAddr(r) == from {
					if first.IsZero() {
						first, entry = s.At, e
					}
					last = s.At
				}
			}
		}
	}
	if first.IsZero() {
		return ""
	}
	d := "; a DSN to its sender sat in the relay's queue"
	if entry.QueueID != "" {
		d += " as " + entry.QueueID
	}
	if entry.Reason != "" {
		d += " (" + entry.Reason + ")"
	}
	return d + fmt.Sprintf(" from %s to %s and never reached the sender", j.rel(first), j.rel(last))
}

// verb says what happened to a DSN try: deferred (4xx) or refused.
func (d dsnTry) verb() string {
	if d.reply.Code >= 400 && d.reply.Code < 500 {
		return "was deferred"
	}
	if d.reply.Dropped || d.reply.Code == 0 {
		return "was cut off"
	}
	return "was refused"
}

// gaveUp finds when the relay gave up on an unresolved message: its first
// DSN try (to the message's unique sender, never through) after its last
// attempt, when the relay never tried the message again, no later listing
// shows it, and either a later listing misses it or the retry bound passed
// before the end.
func (j *judge) gaveUp(tr *track) *dsnTry {
	var last time.Time
	for _, a := range tr.attempts {
		if a.at.After(last) {
			last = a.at
		}
	}
	var d *dsnTry
	for i := range tr.tries {
		if !tr.tries[i].at.Before(last) {
			d = &tr.tries[i]
			break
		}
	}
	if d == nil {
		return nil
	}
	missing := false
	for _, s := range j.snaps {
		if !s.At.After(d.at) {
			continue
		}
		if visible(s, tr) {
			return nil
		}
		missing = true
	}
	if !missing && j.h.Ended.Sub(d.at) <= j.bound {
		return nil
	}
	return d
}

// firstTryBefore returns the first DSN try before a bounce with no attempt
// of the message between it and the bounce: when the relay gave up.
func (j *judge) firstTryBefore(tr *track, bounced time.Time) *dsnTry {
	for i := range tr.tries {
		d := &tr.tries[i]
		if !d.at.Before(bounced) {
			return nil
		}
		tried := false
		for _, a := range tr.attempts {
			if a.at.After(d.at) && a.at.Before(bounced) {
				tried = true
			}
		}
		if !tried {
			return d
		}
	}
	return nil
}

// dsnFate says what became of the DSNs the relay tried after giving up.
func (j *judge) dsnFate(tr *track, from *dsnTry) string {
	var ts []dsnTry
	for _, d := range tr.tries {
		if !d.at.Before(from.at) {
			ts = append(ts, d)
		}
	}
	if len(ts) == 1 {
		return fmt.Sprintf("the DSN it tried at %s %s at %s (%s) and never retried", j.rel(ts[0].at), ts[0].verb(), ts[0].stage, fmtReply(&ts[0].reply))
	}
	l := ts[len(ts)-1]
	return fmt.Sprintf("the DSN was tried %d times from %s to %s and never got through (last: %s at %s, %s)",
		len(ts), j.rel(ts[0].at), j.rel(l.at), l.verb(), l.stage, fmtReply(&l.reply))
}

// visible reports whether a queue listing shows the (message, recipient):
// an entry with its harness id, else its Message-ID, else its sender when
// the listing shows neither; and, when the entry lists recipients, this one.
func visible(s history.QueueSnapshot, tr *track) bool {
	_, ok := queueEntry(s, tr)
	return ok
}

func queueEntry(s history.QueueSnapshot, tr *track) (history.QueueEntry, bool) {
	for _, e := range s.Entries {
		var match bool
		switch {
		case e.HarnessID != "":
			match = e.HarnessID == tr.sub.HarnessID
		case e.MessageID != "":
			match = normID(e.MessageID) == normID(tr.sub.MessageID)
		default:
			match = normAddr(e.Sender) == normAddr(tr.sub.MailFrom)
		}
		if !match {
			continue
		}
		if len(e.Recipients) > 0 {
			found := false
			for _, r := range e.Recipients {
				if normAddr(r) == normAddr(tr.rcpt) {
					found = true
				}
			}
			if !found {
				continue
			}
		}
		return e, true
	}
	return history.QueueEntry{}, false
}

func (j *judge) finalSnap() *history.QueueSnapshot {
	if len(j.snaps) == 0 {
		return nil
	}
	return &j.snaps[len(j.snaps)-1]
}

// checkpoint judges tr as of cp.At: it must be resolved, or listed in the
// first usable queue listing at or after cp.At with an activity within the
// retry bound before cp.At. A listing read after the resolution proves
// nothing; missing from the listing is held-silently when the message came
// back, else lost says it (or held-silently when lost cannot be proved).
func (j *judge) checkpoint(tr *track, cp history.Checkpoint, acts []activity, resolved time.Time, v *verdicts) []TimelineEntry {
	s := tr.sub
	if !s.SubmittedAt.Before(cp.At) || (!resolved.IsZero() && !resolved.After(cp.At)) {
		return nil
	}
	var snap *history.QueueSnapshot
	for i := range j.snaps {
		if !j.snaps[i].At.Before(cp.At) {
			snap = &j.snaps[i]
			break
		}
	}
	if snap != nil && !proves(*snap, tr, resolved) {
		return nil // resolved before the listing was read
	}
	var last activity
	covered := false
	for _, a := range acts {
		if a.at.After(cp.At) {
			continue
		}
		if a.end.After(cp.At) {
			covered = true // an attempt in progress at the checkpoint
		}
		if last.end.IsZero() || a.end.After(last.end) {
			last = a
		}
	}
	recent := j.h.Timing.RetryMax == 0 || j.inOutage(cp.At) || covered || cp.At.Sub(last.end) <= j.bound
	name := fmt.Sprintf("checkpoint %q at %s", cp.Name, j.rel(cp.At))
	entry := TimelineEntry{At: cp.At, What: WhatDeadline,
		Detail: name + ": must be delivered, bounced, or listed in the queue with an attempt within retry_max " + j.h.Timing.RetryMax.D().String() + " + slack"}
	switch {
	case snap != nil && !visible(*snap, tr):
		missing := fmt.Sprintf("at %s it was neither delivered nor bounced and the queue listing at %s did not show it (last activity %s, %s)",
			name, j.rel(snap.At), j.rel(last.end), last.what)
		if at, how := j.cameBack(tr, snap.At); !at.IsZero() {
			v.add(HeldSilently, missing+"; it came back: "+how)
		} else if v.has(Lost) {
			v.add(Lost, missing+"; it never came back")
		} else {
			v.add(HeldSilently, missing+"; it never came back, though no usable listing after the last fault could prove it lost")
		}
	case !recent && snap == nil && len(j.snaps) == 0 && len(tr.attempts) == 0 && len(tr.dsns) == 0 && len(tr.tries) == 0:
		v.add(HeldSilently, fmt.Sprintf("at %s it was neither delivered nor bounced, nothing was ever seen of it (no attempt, no DSN), and the relay's queue is not observable (no queue listing)", name))
	case !recent:
		seen := "no queue listing after the checkpoint"
		if snap != nil {
			seen = "listed at " + j.rel(snap.At)
		}
		v.add(Stalled, fmt.Sprintf("at %s its last activity was %s (%s), longer ago than retry_max %s + slack %s (%s)",
			name, j.rel(last.end), last.what, j.h.Timing.RetryMax.D(), RetrySlack(j.h.Timing.RetryMax.D()), seen))
	default:
		return nil
	}
	return []TimelineEntry{entry}
}

// attemptEntries renders one attempt as an attempt entry (the RCPT reply)
// and, when it had a body, a reply entry (the eod reply).
func (j *judge) attemptEntries(tr *track, a attempt) []TimelineEntry {
	d := fmt.Sprintf("conn %d", a.conn)
	if a.client != "" {
		d += " from " + a.client
	}
	if a.mx != "" && j.multiMX() {
		d += " at MX " + a.mx
	}
	if a.rcpt == nil {
		d += fmt.Sprintf(": MAIL FROM:<%s> got %s, no RCPT", a.mailFrom, fmtReply(&a.mail))
	} else {
		d += fmt.Sprintf(": RCPT TO:<%s> got %s", tr.rcpt, fmtReply(a.rcpt))
		if a.greylist != "" {
			d += fmt.Sprintf(" (greylist %s, attempt %d)", a.greylist, a.n)
		}
	}
	if a.aborted != "" && a.data == nil {
		d += ", transaction ended by " + a.aborted
	}
	out := []TimelineEntry{{At: a.at, What: WhatAttempt, Detail: d}}
	if a.data != nil {
		r := "after the final dot: " + fmtReply(a.data)
		if a.data.Dropped {
			r = "line dropped after the body was received, before any reply (RFC 1047)"
		}
		out = append(out, TimelineEntry{At: a.at, What: WhatReply, Detail: r})
	}
	return out
}

// collapseConnOnly puts failed connections on the timeline, one entry per
// run of identical failures.
func (j *judge) collapseConnOnly(as []attempt) []TimelineEntry {
	var out []TimelineEntry
	for i := 0; i < len(as); {
		k := i + 1
		key := func(a attempt) string { _, after, _ := strings.Cut(a.detail, ": "); return after }
		for k < len(as) && key(as[k]) == key(as[i]) {
			k++
		}
		d := as[i].detail
		if n := k - i; n > 1 {
			d += fmt.Sprintf(" (%d such connections until %s)", n, j.rel(as[k-1].at))
		}
		out = append(out, TimelineEntry{At: as[i].at, What: WhatAttempt, Detail: d})
		i = k
	}
	return out
}

// queueEntries puts queue sightings on the timeline from submission to the
// resolution (or any time, if unresolved): one entry per run of listings
// that agree (listed or not; when listed, deferred or not and the reason).
func (j *judge) queueEntries(tr *track, end time.Time, unresolved bool) []TimelineEntry {
	var out []TimelineEntry
	var runStart int
	var runSeen bool
	var n int
	flush := func(last time.Time) {
		if n == 0 {
			return
		}
		e := &out[runStart]
		if n > 1 {
			e.Detail += fmt.Sprintf(" (%d listings until %s)", n, j.rel(last))
		}
	}
	var prev time.Time
	var runEntry history.QueueEntry
	for _, s := range j.snaps {
		if s.At.Before(tr.sub.SubmittedAt) || (!unresolved && s.At.After(end)) {
			continue
		}
		e, ok := queueEntry(s, tr)
		// A run goes on while the listings agree: on the sighting and,
		// when listed, on why it waits (a deferral is evidence).
		if n > 0 && ok == runSeen && (!ok || e.Deferred == runEntry.Deferred && e.Reason == runEntry.Reason) {
			n++
			prev = s.At
			continue
		}
		flush(prev)
		runStart, runSeen, runEntry, n, prev = len(out), ok, e, 1, s.At
		if ok {
			d := "listed"
			if e.QueueID != "" {
				d += " as " + e.QueueID
			}
			if e.Deferred {
				d += ", deferred"
			}
			if e.Reason != "" {
				d += ": " + e.Reason
			}
			out = append(out, TimelineEntry{At: s.At, What: WhatQueueSeen, Detail: d})
		} else {
			out = append(out, TimelineEntry{At: s.At, What: WhatQueueMissing, Detail: fmt.Sprintf("not in the queue listing (%d entries)", len(s.Entries))})
		}
	}
	flush(prev)
	return out
}
