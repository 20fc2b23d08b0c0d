package ledger

import (
	"fmt"
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/fakemta/record"
	"github.com/greyharness/greyharness/harness/history"
)

// Attribution classes: what a journal transaction was about.
const (
	// ClassAttempt: a delivery attempt of a submitted message.
	ClassAttempt = "attempt"
	// ClassDSN: a DSN body (well formed or bad) about a submitted message.
	ClassDSN = "dsn"
	// ClassDSNTry: a null-sender transaction to a submitted message's
	// envelope sender that delivered no accepted body (deferred or refused
	// at MAIL, RCPT or the final dot): the relay trying to report.
	ClassDSNTry = "dsn-try"
	// ClassBadDSN: a bad DSN that names no submitted message (a
	// scenario-level finding).
	ClassBadDSN = "bad-dsn"
	// ClassForeign: traffic about no submitted message.
	ClassForeign = "foreign"
)

// Hit attributes one recipient of a transaction to a (submission, recipient).
type Hit struct {
	Sub  int    // index of the submission (as added to the Attributor)
	Rcpt string // the recipient as the submission spells it
	// RcptIndex is the index in Transaction.Rcpts, or -1 when the
	// transaction never got to RCPT for it (MAIL refused or aborted).
	RcptIndex int
	Delivered bool // 2xx RCPT and 2xx after the final dot
	Dropped   bool // 2xx RCPT, body received, line cut before the eod reply
}

// DSNHit attributes one per-recipient block of a DSN to a (submission, recipient).
type DSNHit struct {
	Sub      int
	Rcpt     string
	Action   string // lower case
	Status   string
	Accepted bool     // the fake MTA answered 2xx to its final dot
	Problems []string // why it is a bad DSN; empty when well formed
	By       string   // how it was attributed
	Named    string   // the recipient the block named
	Arrival  time.Time
}

// DSNTry is a null-sender transaction to a submission's envelope sender
// that did not get a body through: its failing reply.
type DSNTry struct {
	Sub   int
	Reply record.Reply
	Stage string // "MAIL", "RCPT", "DATA" or "aborted"
}

// SubNote is a timeline note for every recipient of a submission.
type SubNote struct {
	Sub    int
	Detail string
}

// BadDSNNote is a bad DSN no submission can own.
type BadDSNNote struct {
	Kind, Rcpt, Why string
}

// Attribution is what one journal event is about. Non-transaction events
// have an empty Class.
type Attribution struct {
	Class string
	Hits  []Hit
	DSNs  []DSNHit
	Tries []DSNTry
	Notes []SubNote
	Bad   []BadDSNNote
	// Why names foreign traffic.
	Why string
}

// Attributor attributes journal transactions to submitted messages, one
// event at a time in journal order. The ledger and the runner's waits both
// use it, so a wait and a verdict cannot disagree about which message an
// event belongs to. It is not safe for concurrent use.
type Attributor struct {
	subs      []history.Submission
	byHID     map[string][]int
	byMID     map[string][]int
	byFrom    map[string][]int
	delivered map[int]map[string]bool // per submission: normalised recipients delivered
	dsnMIDs   map[string]*dsn.Report  // null-sender bodies by Message-ID (their report, if any)
}

// NewAttributor returns an Attributor knowing no submission.
func NewAttributor() *Attributor {
	return &Attributor{byHID: map[string][]int{}, byMID: map[string][]int{}, byFrom: map[string][]int{},
		delivered: map[int]map[string]bool{}, dsnMIDs: map[string]*dsn.Report{}}
}

// Add registers a submission (before or after the relay answered it) and
// returns its index.
func (a *Attributor) Add(s history.Submission) int {
	i := len(a.subs)
	a.subs = append(a.subs, s)
	if s.HarnessID != "" {
		a.byHID[s.HarnessID] = append(a.byHID[s.HarnessID], i)
	}
	if s.MessageID != "" {
		a.byMID[normID(s.MessageID)] = append(a.byMID[normID(s.MessageID)], i)
	}
	if f := normAddr(s.MailFrom); f != "" {
		a.byFrom[f] = append(a.byFrom[f], i)
	}
	return i
}

// Update replaces submission i's record (its reply and acceptance) keeping
// its identities.
func (a *Attributor) Update(i int, s history.Submission) {
	if i < 0 || i >= len(a.subs) {
		return
	}
	s.HarnessID, s.MessageID, s.MailFrom, s.RcptTo = a.subs[i].HarnessID, a.subs[i].MessageID, a.subs[i].MailFrom, a.subs[i].RcptTo
	a.subs[i] = s
}

// Submission returns submission i.
func (a *Attributor) Submission(i int) history.Submission { return a.subs[i] }

// rcptOf returns rcpt as submission si spells it, or "".
func (a *Attributor) rcptOf(si int, rcpt string) string {
	r := normAddr(rcpt)
	for _, x := range a.subs[si].RcptTo {
		if normAddr(x) == r {
			return x
		}
	}
	return ""
}

// pick chooses among candidate submissions: prefer a matching envelope
// sender, one that lists rcpt, an accepted one, one not yet delivered, one
// submitted at or before at; ties go to the earliest submission.
func (a *Attributor) pick(cands []int, from, rcpt string, at time.Time) int {
	best, bestScore := -1, -1
	for _, si := range cands {
		s := &a.subs[si]
		score := 0
		if from != "" && normAddr(s.MailFrom) == normAddr(from) {
			score += 32
		}
		undelivered := false
		if rcpt != "" {
			if r := a.rcptOf(si, rcpt); r != "" {
				score += 16
				undelivered = !a.delivered[si][normAddr(r)]
			}
		} else {
			for _, r := range s.RcptTo {
				if !a.delivered[si][normAddr(r)] {
					undelivered = true
				}
			}
		}
		if s.Accepted {
			score += 8
		}
		if undelivered {
			score += 4
		}
		if !s.SubmittedAt.After(at) {
			score += 2
		}
		if score > bestScore || (score == bestScore && s.SubmittedAt.Before(a.subs[best].SubmittedAt)) {
			best, bestScore = si, score
		}
	}
	return best
}

func (a *Attributor) subForEnvelope(from, rcpt string, at time.Time) int {
	c := a.byFrom[normAddr(from)]
	if len(c) == 0 {
		return -1
	}
	return a.pick(c, from, rcpt, at)
}

func (a *Attributor) subForBody(m *record.Message, from string, at time.Time) int {
	if c := a.byHID[m.HarnessID]; m.HarnessID != "" && len(c) > 0 {
		return a.pick(c, from, "", at)
	}
	if c := a.byMID[normID(m.MessageID)]; m.MessageID != "" && len(c) > 0 {
		return a.pick(c, from, "", at)
	}
	return a.subForEnvelope(from, "", at)
}

// pickBySender chooses among submissions sharing an id the one whose
// envelope sender the DSN was sent to.
func (a *Attributor) pickBySender(cands []int, env []string, at time.Time) int {
	for _, e := range env {
		for _, si := range cands {
			if normAddr(a.subs[si].MailFrom) == normAddr(e) {
				return si
			}
		}
	}
	return a.pick(cands, "", "", at)
}

// Attribute says what a journal event is about and advances the
// Attributor's state (deliveries, DSN bodies seen). Feed events in journal
// (Seq) order.
func (a *Attributor) Attribute(ev record.Event) Attribution {
	t := ev.Transaction
	if ev.Kind != record.EventTransaction || t == nil {
		return Attribution{}
	}
	var at Attribution
	if normAddr(t.MailFrom) == "" {
		if t.Message != nil && t.Message.MessageID != "" {
			a.dsnMIDs[normID(t.Message.MessageID)] = t.Message.DSN
		}
		at = a.nullSender(ev)
	} else {
		at = a.attempt(ev)
	}
	switch {
	case len(at.DSNs) > 0 || len(at.Notes) > 0:
		at.Class = ClassDSN
	case len(at.Hits) > 0:
		at.Class = ClassAttempt
	case len(at.Bad) > 0:
		at.Class = ClassBadDSN
	case len(at.Tries) > 0:
		at.Class = ClassDSNTry
	default:
		at.Class = ClassForeign
		if at.Why == "" {
			at.Why = fmt.Sprintf("MAIL FROM:<%s>: no submitted message has this sender or id", t.MailFrom)
		}
	}
	return at
}

func (a *Attributor) attempt(ev record.Event) Attribution {
	t := ev.Transaction
	var at Attribution
	si := -1
	if t.Message != nil {
		si = a.subForBody(t.Message, t.MailFrom, ev.Time)
	}
	if len(t.Rcpts) == 0 {
		// MAIL refused or aborted before RCPT: an attempt for every
		// recipient of the sender's message still undelivered.
		if si < 0 {
			si = a.subForEnvelope(t.MailFrom, "", ev.Time)
		}
		if si < 0 {
			return at
		}
		for _, r := range a.subs[si].RcptTo {
			if !a.delivered[si][normAddr(r)] {
				at.Hits = append(at.Hits, Hit{Sub: si, Rcpt: r, RcptIndex: -1})
			}
		}
		if len(at.Hits) == 0 {
			at.Why = fmt.Sprintf("MAIL FROM:<%s> with no RCPT for a message already delivered to every recipient", t.MailFrom)
		}
		return at
	}
	var foreign []string
	for i := range t.Rcpts {
		ra := &t.Rcpts[i]
		s := si
		if s < 0 {
			s = a.subForEnvelope(t.MailFrom, ra.Addr, ev.Time)
		}
		r := ""
		if s >= 0 {
			r = a.rcptOf(s, ra.Addr)
		}
		if r == "" {
			foreign = append(foreign, ra.Addr)
			continue
		}
		h := Hit{Sub: s, Rcpt: r, RcptIndex: i}
		if t.Message != nil && is2xx(ra.Reply.Code) && !ra.Reply.Dropped && t.Data != nil {
			switch {
			case t.Data.Dropped:
				h.Dropped = true
			case is2xx(t.Data.Code):
				h.Delivered = true
				if a.delivered[s] == nil {
					a.delivered[s] = map[string]bool{}
				}
				a.delivered[s][normAddr(r)] = true
			}
		}
		at.Hits = append(at.Hits, h)
	}
	if len(at.Hits) == 0 {
		at.Why = fmt.Sprintf("MAIL FROM:<%s> RCPT TO:<%s>: no submitted message has this sender or id and recipient", t.MailFrom, strings.Join(foreign, ">,<"))
	}
	return at
}

// nullSender attributes a transaction from the null sender: a DSN on its
// way back to a sender.
func (a *Attributor) nullSender(ev record.Event) Attribution {
	t := ev.Transaction
	var at Attribution
	for _, ra := range t.Rcpts {
		if normAddr(ra.Addr) == "" {
			at.Bad = append(at.Bad, BadDSNNote{"null-rcpt", "", fmt.Sprintf("conn %d: the relay sent a null-sender message to the null recipient <> (a DSN about a bounce)", ev.Conn)})
			break
		}
	}
	m := t.Message
	accepted := m != nil && t.Data != nil && !t.Data.Dropped && is2xx(t.Data.Code)
	var env []string // envelope recipients: the original senders
	for _, ra := range t.Rcpts {
		if is2xx(ra.Reply.Code) && normAddr(ra.Addr) != "" {
			env = append(env, ra.Addr)
		}
	}
	if len(env) == 0 && m != nil {
		env = m.RcptTo
	}
	bySender := func(addrs []string) int {
		for _, e := range addrs {
			if si := a.subForEnvelope(e, "", ev.Time); si >= 0 {
				return si
			}
		}
		return -1
	}
	if !accepted {
		// Deferred or refused before its body was accepted: not a DSN yet,
		// but the relay trying to report to this sender.
		var addrs []string
		for _, ra := range t.Rcpts {
			addrs = append(addrs, ra.Addr)
		}
		if si := bySender(addrs); si >= 0 {
			try := DSNTry{Sub: si, Reply: t.Mail, Stage: "MAIL"}
			switch {
			case t.Mail.Code >= 400 || t.Mail.Dropped:
			case len(t.Rcpts) > 0 && !is2xx(t.Rcpts[0].Reply.Code):
				try.Reply, try.Stage = t.Rcpts[0].Reply, "RCPT"
				for _, ra := range t.Rcpts {
					if normAddr(ra.Addr) == normAddr(a.subs[si].MailFrom) {
						try.Reply = ra.Reply
					}
				}
			case t.Data != nil:
				try.Reply, try.Stage = *t.Data, "DATA"
			default:
				try.Reply, try.Stage = record.Reply{Text: "transaction ended by " + t.Aborted}, "aborted"
			}
			at.Tries = append(at.Tries, try)
			return at
		}
		if len(at.Bad) == 0 {
			at.Why = "a null-sender transaction that delivered nothing, to no submitted message's sender"
		}
		return at
	}
	rep := m.DSN
	if rep == nil {
		why := fmt.Sprintf("conn %d: a null-sender message (Message-ID <%s>) that is not a delivery-status report", ev.Conn, m.MessageID)
		if si := bySender(env); si >= 0 {
			for _, r := range a.subs[si].RcptTo {
				at.DSNs = append(at.DSNs, DSNHit{Sub: si, Rcpt: r, Accepted: true, Problems: []string{"is not a multipart/report delivery-status report"}, By: "envelope"})
			}
			return at
		}
		at.Bad = append(at.Bad, BadDSNNote{"not-dsn", strings.Join(env, ","), why})
		return at
	}
	var problems []string
	named := rep.OriginalHarnessID != "" || rep.OriginalMessageID != ""
	if !named {
		problems = append(problems, "names no original message (no X-Greyharness-Id, no Message-ID)")
	}
	var inner *dsn.Report // the DSN this one is about, if it is about a DSN
	if r, ok := a.dsnMIDs[normID(rep.OriginalMessageID)]; rep.OriginalMessageID != "" && ok {
		problems = append(problems, fmt.Sprintf("is about the DSN <%s> (a bounce of a bounce)", normID(rep.OriginalMessageID)))
		inner = r
	}
	if len(rep.Recipients) == 0 {
		problems = append(problems, "has no per-recipient block")
	}
	si, by := -1, ""
	envFrom := ""
	if len(env) > 0 {
		envFrom = env[0]
	}
	if inner != nil {
		// Attribute to the message the bounced DSN was about.
		if c := a.byHID[inner.OriginalHarnessID]; inner.OriginalHarnessID != "" && len(c) > 0 {
			si, by = a.pickBySender(c, env, ev.Time), "the harness id in the DSN it bounced"
		} else if c := a.byMID[normID(inner.OriginalMessageID)]; inner.OriginalMessageID != "" && len(c) > 0 {
			si, by = a.pickBySender(c, env, ev.Time), "the Message-ID in the DSN it bounced"
		}
	}
	switch c, c2 := a.byHID[rep.OriginalHarnessID], a.byMID[normID(rep.OriginalMessageID)]; {
	case si >= 0: // attributed through the DSN it bounced
	case rep.OriginalHarnessID != "" && len(c) > 0:
		si, by = a.pickBySender(c, env, ev.Time), "harness id"
	case rep.OriginalMessageID != "" && len(c2) > 0:
		si, by = a.pickBySender(c2, env, ev.Time), "Message-ID"
	default:
		if si = bySender(env); si >= 0 {
			by = "envelope recipient"
			if named && inner == nil {
				problems = append(problems, "names a message that was never submitted")
			}
		}
	}
	if si < 0 {
		if len(problems) > 0 {
			at.Bad = append(at.Bad, BadDSNNote{"unattributed", envFrom, fmt.Sprintf("conn %d: DSN (Message-ID <%s>) %s", ev.Conn, m.MessageID, strings.Join(problems, "; "))})
		} else if len(at.Bad) == 0 {
			at.Why = fmt.Sprintf("a DSN (Message-ID <%s>) about <%s>, which no submission used, to <%s>", m.MessageID, rep.OriginalMessageID, envFrom)
		}
		return at
	}
	blocks := rep.Recipients
	if len(blocks) == 0 {
		blocks = []dsn.Recipient{{}}
	}
	for _, b := range blocks {
		p := append([]string(nil), problems...)
		if b.FinalRecipient == "" {
			p = append(p, "has no Final-Recipient")
		}
		base := DSNHit{Sub: si, Action: strings.ToLower(b.Action), Status: b.Status, Accepted: true, Problems: p, By: by, Arrival: rep.ArrivalDate}
		var rcpts []string
		if inner != nil {
			rcpts = a.subs[si].RcptTo // it names the sender, not a recipient: the whole message
		}
		for _, r := range []string{b.FinalRecipient, b.OriginalRecipient} {
			if rcpts != nil {
				break
			}
			if r == "" {
				continue
			}
			if x := a.rcptOf(si, r); x != "" {
				rcpts, base.Named = []string{x}, r
				break
			}
		}
		if len(rcpts) == 0 {
			named := b.FinalRecipient
			if named == "" {
				named = b.OriginalRecipient
			}
			if named != "" {
				// It names a recipient the message was not sent to: note it
				// on the message; it resolves nothing.
				at.Notes = append(at.Notes, SubNote{Sub: si, Detail: fmt.Sprintf("conn %d: DSN Action: %s names recipient %s, which this message was not sent to", ev.Conn, b.Action, named)})
				continue
			}
			rcpts = a.subs[si].RcptTo // names no recipient at all: it concerns the whole message
		}
		for _, r := range rcpts {
			h := base
			h.Rcpt = r
			at.DSNs = append(at.DSNs, h)
		}
	}
	return at
}
