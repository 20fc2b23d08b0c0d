package runner

import (
	"strings"
	"sync"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
)

// tracker follows every submitted message through the journal as events
// arrive, so waits are decided on events rather than by polling. It is a
// live, cheap view; the verdicts come from the ledger over the whole history.
type tracker struct {
	mu       sync.Mutex
	changed  chan struct{} // closed and replaced on every change
	bySender map[string]string
	byMsgID  map[string]string
	msgs     map[string]*msgState
	order    []string
	tarpits  int // "tarpit" control events seen
	anyDefer bool
}

type msgState struct {
	sub   history.Submission
	rcpts map[string]*rcptState
	dsn   map[string]bool // DSN actions seen
}

type rcptState struct {
	attempts  int
	deferred  bool
	delivered int
	bounced   bool
}

func newTracker() *tracker {
	return &tracker{changed: make(chan struct{}), bySender: map[string]string{}, byMsgID: map[string]string{}, msgs: map[string]*msgState{}}
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
	t.msgs[s.HarnessID] = m
	t.bySender[strings.ToLower(s.MailFrom)] = s.HarnessID
	t.byMsgID[s.MessageID] = s.HarnessID
}

// submitted records how the submission went; a refused message, or a
// refused recipient, is forgotten (the relay never owned it), and so is a
// message whose final dot got no reply (the ledger judges it on evidence).
func (t *tracker) submitted(s history.Submission) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m := t.msgs[s.HarnessID]
	if m == nil {
		return
	}
	if !s.Accepted {
		delete(t.msgs, s.HarnessID)
		return
	}
	m.sub = s
	for r := range m.rcpts {
		if !s.RcptAccepted(r) { // refused at RCPT: never coming
			delete(m.rcpts, r)
		}
	}
	t.order = append(t.order, s.HarnessID)
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
	case fakemta.EventTransaction:
	default:
		return
	}
	tx := ev.Transaction
	if tx == nil {
		return
	}
	if tx.MailFrom == "" && tx.Message != nil && tx.Message.DSN != nil {
		d := tx.Message.DSN
		hid := d.OriginalHarnessID
		if hid == "" {
			hid = t.byMsgID[d.OriginalMessageID]
		}
		if m := t.msgs[hid]; m != nil && tx.Message.Accepted {
			for _, r := range d.Recipients {
				m.dsn[r.Action] = true
				if rs := m.rcpts[strings.ToLower(r.FinalRecipient)]; rs != nil && r.Action == "failed" {
					rs.bounced = true
				} else if rs := m.rcpts[strings.ToLower(r.OriginalRecipient)]; rs != nil && r.Action == "failed" {
					rs.bounced = true
				}
			}
		}
		t.signal()
		return
	}
	hid := ""
	if tx.Message != nil && tx.Message.HarnessID != "" {
		hid = tx.Message.HarnessID
	} else {
		hid = t.bySender[strings.ToLower(tx.MailFrom)]
	}
	m := t.msgs[hid]
	if m == nil {
		return
	}
	delivered := tx.Data != nil && tx.Data.Code/100 == 2 && !tx.Data.Dropped
	if tx.Mail.Code/100 == 4 {
		t.anyDefer = true
		for _, rs := range m.rcpts {
			rs.attempts++
			rs.deferred = true
		}
	}
	for _, ra := range tx.Rcpts {
		rs := m.rcpts[strings.ToLower(ra.Addr)]
		if rs == nil {
			continue
		}
		rs.attempts++
		switch {
		case ra.Reply.Code/100 == 4 || (ra.Reply.Code/100 == 2 && tx.Data != nil && tx.Data.Code/100 == 4):
			rs.deferred = true
			t.anyDefer = true
		case ra.Reply.Code/100 == 2 && delivered:
			rs.delivered++
		}
	}
	t.signal()
}

// cond is a condition over the tracked messages of a group ("" = all).
type cond func(m *msgState) bool

// all reports whether every accepted message of group satisfies c (and
// there is at least one).
func (t *tracker) all(group string, c cond) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, id := range t.order {
		m := t.msgs[id]
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
	for _, id := range t.order {
		m := t.msgs[id]
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
	for _, id := range t.order {
		m := t.msgs[id]
		if group != "" && m.sub.Group != group {
			continue
		}
		senders[strings.ToLower(m.sub.MailFrom)] = true
		ids[m.sub.HarnessID], ids[m.sub.MessageID] = true, true
	}
	delete(ids, "")
	return senders, ids
}
