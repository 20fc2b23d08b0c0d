package runner

import (
	"strings"
	"sync"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// tracker follows every submitted message through the journal as events
// arrive, so waits are decided on events rather than by polling. It is a
// live, cheap view; the verdicts come from the ledger over the whole
// history. Both attribute events with the same ledger.Attributor, so a wait
// and a verdict cannot disagree about which message an event belongs to.
type tracker struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	attr     *ledger.Attributor
	msgs     []*msgState      // by submission index in attr
	expected map[string][]int // harness id → indices registered, not yet submitted
	order    []int            // accepted submissions, in order
	tarpits  int              // "tarpit" control events seen
	anyDefer bool
}

type msgState struct {
	sub   history.Submission
	rcpts map[string]*rcptState
	dsn   map[string]bool // DSN actions seen
	// delayedAt: the last accepted DSN Action: delayed about it
	delayedAt time.Time
}

type rcptState struct {
	attempts    int
	lastAttempt time.Time
	deferred    bool
	delivered   int
	// bodies: its body reached the fake MTA with a 2xx RCPT and the final
	// dot answered 2xx or dropped (RFC 1047: the relay may not know), as
	// the ledger counts copies for duplicate.
	bodies  int
	bounced bool
	// lastBody is the last such copy (time, journal seq, connection);
	// bodyHeard: the relay sent a command on that connection after the
	// copy's final reply, so the reply reached it (RFC 1047's gap closed).
	lastBody     time.Time
	lastBodySeq  uint64
	lastBodyConn uint64
	bodyHeard    bool
	// listedDeferred: a queue listing showed it deferred (Deferred, with
	// its reason), evidence that the relay tried and failed where the fake
	// MTA saw nothing (its connection refused). No attempt, and no
	// deferral of the fake MTA's: only `wait for deferred` takes it.
	listedDeferred bool
}

func newTracker() *tracker {
	return &tracker{changed: make(chan struct{}), attr: ledger.NewAttributor(), expected: map[string][]int{}}
}

func (t *tracker) signal() {
	close(t.changed)
	t.changed = make(chan struct{})
}

// wait returns a channel closed at the next change.
func (t *tracker) wait() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.changed
}

// expect registers a message before it is submitted: a relay may try
// to deliver it before the submission's 250 reaches the harness.
func (t *tracker) expect(s history.Submission) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := &msgState{sub: s, rcpts: map[string]*rcptState{}, dsn: map[string]bool{}}
	for _, r := range s.RcptTo {
		m.rcpts[strings.ToLower(r)] = &rcptState{}
	}
	i := t.attr.Add(s)
	t.msgs = append(t.msgs, m)
	t.expected[s.HarnessID] = append(t.expected[s.HarnessID], i)
}

// submitted records how the submission went. A refused message, a refused
// recipient, and a message whose final dot got no reply (the ledger judges
// it on evidence) stay known to the attribution, as they do to the ledger,
// but no wait looks at them.
func (t *tracker) submitted(s history.Submission) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.expected[s.HarnessID]
	if len(q) == 0 {
		return
	}
	i := q[0]
	if t.expected[s.HarnessID] = q[1:]; len(q) == 1 {
		delete(t.expected, s.HarnessID)
	}
	t.attr.Update(i, s)
	if !s.Accepted {
		return
	}
	m := t.msgs[i]
	m.sub = s
	for r := range m.rcpts {
		if !s.RcptAccepted(r) { // refused at RCPT: never coming
			delete(m.rcpts, r)
		}
	}
	t.order = append(t.order, i)
	t.signal()
}

func (t *tracker) observe(ev fakemta.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev.Kind {
	case fakemta.EventControl:
		if strings.HasPrefix(ev.Note, "tarpit") {
			t.tarpits++
			t.signal()
		}
		return
	case fakemta.EventCommand:
		t.heard(ev)
		return
	case fakemta.EventTransaction:
	default:
		return
	}
	tx := ev.Transaction
	if tx == nil {
		return
	}
	at := t.attr.Attribute(ev)
	for _, d := range at.DSNs {
		if !d.Accepted {
			continue
		}
		m := t.msgs[d.Sub]
		m.dsn[d.Action] = true
		if d.Action == "delayed" && ev.Time.After(m.delayedAt) {
			m.delayedAt = ev.Time
		}
		if rs := m.rcpts[strings.ToLower(d.Rcpt)]; rs != nil && d.Action == "failed" {
			rs.bounced = true
		}
	}
	for _, h := range at.Hits {
		rs := t.msgs[h.Sub].rcpts[strings.ToLower(h.Rcpt)]
		if rs == nil {
			continue
		}
		rs.attempts++
		if ev.Time.After(rs.lastAttempt) {
			rs.lastAttempt = ev.Time
		}
		deferred := tx.Mail.Code/100 == 4
		if h.RcptIndex >= 0 {
			r := tx.Rcpts[h.RcptIndex].Reply
			deferred = deferred || r.Code/100 == 4 || (r.Code/100 == 2 && tx.Data != nil && tx.Data.Code/100 == 4)
		}
		if deferred {
			rs.deferred = true
			t.anyDefer = true
		}
		if h.Delivered {
			rs.delivered++
		}
		if h.Delivered || h.Dropped {
			rs.bodies++
			if ev.Seq >= rs.lastBodySeq {
				rs.lastBody, rs.lastBodySeq, rs.lastBodyConn, rs.bodyHeard = ev.Time, ev.Seq, ev.Conn, false
			}
		}
	}
	t.signal()
}

// heard takes a command: on the connection of a recipient's last copy, and
// after it, it shows the relay had the copy's final reply. Called with mu held.
func (t *tracker) heard(ev fakemta.Event) {
	if ev.Conn == 0 {
		return
	}
	changed := false
	for _, i := range t.order {
		for _, rs := range t.msgs[i].rcpts {
			if rs.bodies > 0 && !rs.bodyHeard && rs.lastBodyConn == ev.Conn && ev.Seq > rs.lastBodySeq {
				rs.bodyHeard, changed = true, true
			}
		}
	}
	if changed {
		t.signal()
	}
}

// settled reports whether no accepted message has a copy a relay could
// send again: each recipient bounced with no body ever reaching it, or
// the relay had the final reply of its last copy (bodyHeard) and
// touched(copy's time) says no relay restart or stop came at or after it
// (one could lose the relay's record of the delivery).
func (t *tracker) settled(touched func(copyAt time.Time) bool) bool {
	return t.all("", everyRcpt(func(rs *rcptState) bool {
		if rs.bodies == 0 {
			return rs.bounced
		}
		return rs.bodyHeard && !touched(rs.lastBody)
	}))
}

// listed takes a queue listing: a recipient it shows deferred is
// listedDeferred. An entry is matched to a message as the ledger does
// (harness id, else Message-ID, else envelope sender; its recipients).
func (t *tracker) listed(snap history.QueueSnapshot) {
	if snap.Err != "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	changed := false
	for _, e := range snap.Entries {
		if !e.Deferred {
			continue
		}
		for _, i := range t.order {
			m := t.msgs[i]
			switch {
			case e.HarnessID != "":
				if e.HarnessID != m.sub.HarnessID {
					continue
				}
			case e.MessageID != "":
				if strings.Trim(e.MessageID, "<>") != strings.Trim(m.sub.MessageID, "<>") {
					continue
				}
			default:
				if !strings.EqualFold(e.Sender, m.sub.MailFrom) {
					continue
				}
			}
			for _, a := range e.Recipients {
				if rs := m.rcpts[strings.ToLower(a)]; rs != nil && !rs.listedDeferred {
					rs.listedDeferred, changed = true, true
				}
			}
		}
	}
	if changed {
		t.signal()
	}
}

// cond is a condition over the tracked messages of a group ("" = all).
type cond func(m *msgState) bool

// all reports whether every accepted message of group satisfies c (and
// there is at least one).
func (t *tracker) all(group string, c cond) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, i := range t.order {
		m := t.msgs[i]
		if group != "" && m.sub.Group != group {
			continue
		}
		n++
		if !c(m) {
			return false
		}
	}
	return n > 0
}

// pending counts messages of group not satisfying c, for progress lines.
func (t *tracker) pending(group string, c cond) (left, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, i := range t.order {
		m := t.msgs[i]
		if group != "" && m.sub.Group != group {
			continue
		}
		total++
		if !c(m) {
			left++
		}
	}
	return left, total
}

func everyRcpt(f func(*rcptState) bool) cond {
	return func(m *msgState) bool {
		for _, r := range m.rcpts {
			if !f(r) {
				return false
			}
		}
		return true
	}
}

func anyRcpt(f func(*rcptState) bool) cond {
	return func(m *msgState) bool {
		for _, r := range m.rcpts {
			if f(r) {
				return true
			}
		}
		return false
	}
}

// identities returns the envelope senders and ids (harness ids and
// Message-IDs) of the accepted messages of group, for queue listings.
func (t *tracker) identities(group string) (senders, ids map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	senders, ids = map[string]bool{}, map[string]bool{}
	for _, i := range t.order {
		m := t.msgs[i]
		if group != "" && m.sub.Group != group {
			continue
		}
		senders[strings.ToLower(m.sub.MailFrom)] = true
		ids[m.sub.HarnessID], ids[m.sub.MessageID] = true, true
	}
	delete(ids, "")
	return senders, ids
}

// submittedAny reports whether the relay accepted a message from the
// scenario.
func (t *tracker) submittedAny() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.order) > 0
}

// poke wakes whoever waits on a change (a fault was recorded).
func (t *tracker) poke() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.signal()
}

// lateCopyFrom returns from when a relay could send a copy of an accepted
// message again, for the late-duplicate watch (zero: no copy could come).
// A recipient never reached by a body and not bounced, or a copy whose final reply the relay may not have had (dropped after the
// dot, or no command after it on its connection: RFC 1047's gap) could
// come again from unheard on (the drain). One the relay had could only
// through a relay restart, stop or start at or after it that lost the
// relay's record: faultEnd gives the end of the last one (ok false: none).
func (t *tracker) lateCopyFrom(unheard time.Time, faultEnd func(copyAt time.Time) (time.Time, bool)) time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	var from time.Time
	for _, i := range t.order {
		for _, rs := range t.msgs[i].rcpts {
			if rs.bodies == 0 && rs.bounced {
				continue // no copy ever: nothing to send again
			}
			at := unheard
			if rs.bodies > 0 && rs.bodyHeard {
				end, ok := faultEnd(rs.lastBody)
				if !ok {
					continue
				}
				at = end
			}
			if at.After(from) {
				from = at
			}
		}
	}
	return from
}
