package ledger

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/history"
)

// attempt is one delivery attempt of the relay as the fake MTA saw it.
type attempt struct {
	at       time.Time
	conn     uint64
	client   string
	mailFrom string
	mail     fakemta.Reply
	rcpt     *fakemta.Reply // nil: no RCPT for this recipient (MAIL refused, aborted before RCPT)
	greylist string
	n        int
	data     *fakemta.Reply // eod reply, nil when no body
	body     bool           // the body was received in full
	aborted  string
	connOnly bool   // a failed connection without any transaction (not attributable)
	detail   string // connOnly: what went wrong
}

// dsnSeen is one DSN recipient block attributed to a (message, recipient).
type dsnSeen struct {
	at         time.Time
	conn       uint64
	action     string
	status     string
	accepted   bool     // the fake MTA answered 2xx to its final dot
	problems   []string // why it is a bad DSN; empty when it is well formed
	matchedBy  string   // how it was attributed
	rcptNamed  string
	arrivalRaw time.Time // Arrival-Date as the relay wrote it (never used for timing)
}

// tooSoon is one retry inside the greylist delay.
type tooSoon struct {
	at, ref time.Time
}

// track is the ledger's account of one (message, recipient).
type track struct {
	si        int
	sub       *history.Submission
	rcpt      string
	attempts  []attempt
	dsns      []dsnSeen
	delivered []time.Time // 2xx after the final dot with a 2xx RCPT
	dropped   []time.Time // body received, line cut before the eod reply
	tooSoon   []tooSoon
	notes     []TimelineEntry
}

// interval is a fault window during which the relay cannot deliver (or the
// fake MTA cannot receive).
type interval struct {
	start, end time.Time
	kind       history.FaultKind
	relay      bool // the relay under test was down (its queue listing is no evidence)
}

// contains is half-open: at iv.end the relay (or fake MTA) is back.
func (iv interval) contains(t time.Time) bool {
	return !t.Before(iv.start) && t.Before(iv.end)
}

type judge struct {
	h      *history.History
	bound  time.Duration
	tracks [][]*track // per submission, in RcptTo order
	byHID  map[string][]int
	byMID  map[string][]int
	byFrom map[string][]int

	outages      []interval
	snaps        []history.QueueSnapshot // usable listings, by time
	lastFaultEnd time.Time
	connOnly     []attempt

	dsnMIDs   map[string]*dsn.Report // null-sender bodies by Message-ID (their report, if any)
	badSeen   map[string]bool        // dedupe of scenario-level bad DSNs
	scenario  []Finding
	greylists map[string]*greyRun
}

type greyRun struct {
	open bool
	ref  time.Time
}

func normAddr(a string) string {
	a = strings.TrimSpace(a)
	a = strings.TrimPrefix(a, "<")
	a = strings.TrimSuffix(a, ">")
	return strings.ToLower(strings.TrimSpace(a))
}

func normID(id string) string {
	id = strings.TrimSpace(id)
	id = strings.TrimPrefix(id, "<")
	return strings.TrimSuffix(id, ">")
}

func is2xx(code int) bool { return code >= 200 && code < 300 }

func fmtReply(r *fakemta.Reply) string {
	if r == nil {
		return "no reply"
	}
	if r.Dropped {
		return "dropped without reply"
	}
	s := fmt.Sprintf("%d", r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

func newJudge(h *history.History) *judge {
	j := &judge{
		h:         h,
		bound:     RetryBound(h.Timing.RetryMax.D()),
		byHID:     map[string][]int{},
		byMID:     map[string][]int{},
		byFrom:    map[string][]int{},
		dsnMIDs:   map[string]*dsn.Report{},
		badSeen:   map[string]bool{},
		greylists: map[string]*greyRun{},
	}
	j.tracks = make([][]*track, len(h.Submissions))
	for i := range h.Submissions {
		s := &h.Submissions[i]
		for _, r := range s.RcptTo {
			j.tracks[i] = append(j.tracks[i], &track{si: i, sub: s, rcpt: r})
		}
		if s.HarnessID != "" {
			j.byHID[s.HarnessID] = append(j.byHID[s.HarnessID], i)
		}
		if s.MessageID != "" {
			j.byMID[normID(s.MessageID)] = append(j.byMID[normID(s.MessageID)], i)
		}
		if f := normAddr(s.MailFrom); f != "" {
			j.byFrom[f] = append(j.byFrom[f], i)
		}
	}
	j.collectFaults()
	j.collectSnapshots()
	return j
}

// collectFaults turns faults into outage intervals: a relay restart, or a
// relay stop until the next relay start; the same for the fake MTA.
func (j *judge) collectFaults() {
	faults := append([]history.Fault(nil), j.h.Faults...)
	sort.SliceStable(faults, func(a, b int) bool { return faults[a].Start.Before(faults[b].Start) })
	endOf := func(f history.Fault) time.Time {
		if f.End.IsZero() {
			return f.Start
		}
		return f.End
	}
	var relayStop, mtaStop *history.Fault
	for i := range faults {
		f := faults[i]
		if e := endOf(f); e.After(j.lastFaultEnd) {
			j.lastFaultEnd = e
		}
		switch f.Kind {
		case history.FaultRelayRestart:
			j.outages = append(j.outages, interval{f.Start, endOf(f), f.Kind, true})
		case history.FaultFakeMTARestart:
			j.outages = append(j.outages, interval{f.Start, endOf(f), f.Kind, false})
		case history.FaultRelayStop:
			if relayStop == nil {
				relayStop = &faults[i]
			}
		case history.FaultFakeMTAStop:
			if mtaStop == nil {
				mtaStop = &faults[i]
			}
		case history.FaultRelayStart:
			start := f.Start
			if relayStop != nil {
				start = relayStop.Start
			}
			j.outages = append(j.outages, interval{start, endOf(f), history.FaultRelayStop, true})
			relayStop = nil
		case history.FaultFakeMTAStart:
			start := f.Start
			if mtaStop != nil {
				start = mtaStop.Start
			}
			j.outages = append(j.outages, interval{start, endOf(f), history.FaultFakeMTAStop, false})
			mtaStop = nil
		}
	}
	// A stop never followed by a start lasts to the end of the scenario.
	for _, f := range []*history.Fault{relayStop, mtaStop} {
		if f == nil {
			continue
		}
		end := j.h.Ended
		if end.Before(f.Start) {
			end = f.Start
		}
		j.outages = append(j.outages, interval{f.Start, end, f.Kind, f.Kind == history.FaultRelayStop})
	}
	sort.SliceStable(j.outages, func(a, b int) bool { return j.outages[a].start.Before(j.outages[b].start) })
}

func (j *judge) inOutage(t time.Time) bool {
	for _, o := range j.outages {
		if o.contains(t) {
			return true
		}
	}
	return false
}

// collectSnapshots keeps the queue listings that are evidence: listed
// without error and not while the relay was down.
func (j *judge) collectSnapshots() {
	for _, s := range j.h.Queue {
		if s.Err != "" {
			continue
		}
		down := false
		for _, o := range j.outages {
			if o.relay && o.contains(s.At) {
				down = true
				break
			}
		}
		if !down {
			j.snaps = append(j.snaps, s)
		}
	}
	sort.SliceStable(j.snaps, func(a, b int) bool { return j.snaps[a].At.Before(j.snaps[b].At) })
}

func (j *judge) trackFor(si int, rcpt string) *track {
	r := normAddr(rcpt)
	for _, t := range j.tracks[si] {
		if normAddr(t.rcpt) == r {
			return t
		}
	}
	return nil
}

// pick chooses among candidate submissions: prefer a matching envelope
// sender, one that lists rcpt, an accepted one, one not yet delivered, one
// submitted at or before at; ties go to the earliest submission.
func (j *judge) pick(cands []int, from, rcpt string, at time.Time) int {
	best, bestScore := -1, -1
	for _, si := range cands {
		s := &j.h.Submissions[si]
		score := 0
		if from != "" && normAddr(s.MailFrom) == normAddr(from) {
			score += 32
		}
		undelivered := false
		if rcpt != "" {
			if t := j.trackFor(si, rcpt); t != nil {
				score += 16
				undelivered = len(t.delivered) == 0
			}
		} else {
			for _, t := range j.tracks[si] {
				if len(t.delivered) == 0 {
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
		if score > bestScore || (score == bestScore && s.SubmittedAt.Before(j.h.Submissions[best].SubmittedAt)) {
			best, bestScore = si, score
		}
	}
	return best
}

func (j *judge) subForEnvelope(from, rcpt string, at time.Time) int {
	c := j.byFrom[normAddr(from)]
	if len(c) == 0 {
		return -1
	}
	return j.pick(c, from, rcpt, at)
}

func (j *judge) subForBody(m *fakemta.Message, from string, at time.Time) int {
	if c := j.byHID[m.HarnessID]; m.HarnessID != "" && len(c) > 0 {
		return j.pick(c, from, "", at)
	}
	if c := j.byMID[normID(m.MessageID)]; m.MessageID != "" && len(c) > 0 {
		return j.pick(c, from, "", at)
	}
	return j.subForEnvelope(from, "", at)
}

type connState struct {
	at     time.Time
	conn   uint64
	client string
	txn    bool
	quit   bool
	fail   *fakemta.Reply
	tls    string
}

// walk reads the journal in Seq order.
func (j *judge) walk() {
	evs := append([]fakemta.Event(nil), j.h.Journal...)
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Seq < evs[b].Seq })
	for _, ev := range evs {
		if t := ev.Transaction; ev.Kind == fakemta.EventTransaction && t != nil && normAddr(t.MailFrom) == "" && t.Message != nil && t.Message.MessageID != "" {
			j.dsnMIDs[normID(t.Message.MessageID)] = t.Message.DSN
		}
	}
	conns := map[uint64]*connState{}
	get := func(ev fakemta.Event) *connState {
		cs := conns[ev.Conn]
		if cs == nil {
			cs = &connState{at: ev.Time, conn: ev.Conn, client: ev.Client}
			conns[ev.Conn] = cs
		}
		return cs
	}
	for _, ev := range evs {
		switch ev.Kind {
		case fakemta.EventConnect:
			if old := conns[ev.Conn]; old != nil {
				j.finishConn(old)
			}
			conns[ev.Conn] = &connState{at: ev.Time, conn: ev.Conn, client: ev.Client}
		case fakemta.EventCommand:
			if f := strings.Fields(ev.Command); len(f) > 0 && strings.EqualFold(f[0], "QUIT") {
				get(ev).quit = true
			}
		case fakemta.EventReply:
			if r := ev.Reply; r != nil && (r.Code >= 400 || r.Dropped) {
				rr := *r
				get(ev).fail = &rr
			}
		case fakemta.EventTLS:
			get(ev).tls = ev.Note
		case fakemta.EventTransaction:
			get(ev).txn = true
			j.transaction(ev)
		case fakemta.EventClose:
			if cs := conns[ev.Conn]; cs != nil {
				j.finishConn(cs)
				delete(conns, ev.Conn)
			}
		}
	}
	keys := make([]uint64, 0, len(conns))
	for k := range conns {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
	for _, k := range keys {
		j.finishConn(conns[k])
	}
}

// finishConn records a connection that failed before any MAIL transaction:
// the relay could not name its message, so it counts as an attempt for
// every message in flight.
func (j *judge) finishConn(cs *connState) {
	if cs.txn || (cs.fail == nil && cs.quit) {
		return
	}
	d := fmt.Sprintf("conn %d", cs.conn)
	if cs.client != "" {
		d += " from " + cs.client
	}
	switch {
	case cs.fail != nil:
		d += ": no transaction, fake MTA replied " + fmtReply(cs.fail)
	case cs.tls != "":
		d += ": no transaction, TLS: " + cs.tls
	default:
		d += ": no transaction, connection ended without QUIT"
	}
	j.connOnly = append(j.connOnly, attempt{at: cs.at, conn: cs.conn, client: cs.client, connOnly: true, detail: d})
}

func (j *judge) mkAttempt(ev fakemta.Event, ra *fakemta.RcptAttempt) attempt {
	t := ev.Transaction
	a := attempt{
		at: ev.Time, conn: ev.Conn, client: ev.Client, mailFrom: t.MailFrom, mail: t.Mail,
		data: t.Data, body: t.Message != nil, aborted: t.Aborted,
	}
	if ra != nil {
		r := ra.Reply
		a.rcpt, a.greylist, a.n = &r, ra.Greylist, ra.Attempt
	}
	return a
}

func subnet(client string) string {
	if ap, err := netip.ParseAddrPort(client); err == nil {
		return prefix(ap.Addr())
	}
	if a, err := netip.ParseAddr(client); err == nil {
		return prefix(a)
	}
	return client
}

func prefix(a netip.Addr) string {
	a = a.Unmap()
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

func (j *judge) transaction(ev fakemta.Event) {
	t := ev.Transaction
	if t == nil {
		return
	}
	if normAddr(t.MailFrom) == "" {
		j.nullSender(ev)
		return
	}
	si := -1
	if t.Message != nil {
		si = j.subForBody(t.Message, t.MailFrom, ev.Time)
	}
	if len(t.Rcpts) == 0 {
		// MAIL refused or aborted before RCPT: an attempt for every
		// recipient of the sender's message still undelivered.
		if si < 0 {
			si = j.subForEnvelope(t.MailFrom, "", ev.Time)
		}
		if si < 0 {
			return
		}
		for _, tr := range j.tracks[si] {
			if len(tr.delivered) == 0 {
				tr.attempts = append(tr.attempts, j.mkAttempt(ev, nil))
			}
		}
		return
	}
	for i := range t.Rcpts {
		ra := &t.Rcpts[i]
		s := si
		if s < 0 {
			s = j.subForEnvelope(t.MailFrom, ra.Addr, ev.Time)
		}
		var tr *track
		if s >= 0 {
			tr = j.trackFor(s, ra.Addr)
		}
		j.greylistRetry(ev, ra, tr)
		if tr == nil {
			continue
		}
		tr.attempts = append(tr.attempts, j.mkAttempt(ev, ra))
		if t.Message != nil && is2xx(ra.Reply.Code) && !ra.Reply.Dropped && t.Data != nil {
			switch {
			case t.Data.Dropped:
				tr.dropped = append(tr.dropped, ev.Time)
			case is2xx(t.Data.Code):
				tr.delivered = append(tr.delivered, ev.Time)
			}
		}
	}
}

// greylistRetry tracks greylist runs per triplet (client subnet, sender,
// recipient): a retry less than GreylistDelay after the first deferral of
// the run is too soon.
func (j *judge) greylistRetry(ev fakemta.Event, ra *fakemta.RcptAttempt, tr *track) {
	delay := j.h.GreylistDelay.D()
	if delay <= 0 {
		return
	}
	key := subnet(ev.Client) + "|" + normAddr(ev.Transaction.MailFrom) + "|" + normAddr(ra.Addr)
	g := j.greylists[key]
	if g == nil {
		g = &greyRun{}
		j.greylists[key] = g
	}
	if g.open && ev.Time.Sub(g.ref) < delay && tr != nil {
		tr.tooSoon = append(tr.tooSoon, tooSoon{at: ev.Time, ref: g.ref})
	}
	switch {
	case ra.Greylist == "deferred":
		if !g.open {
			g.open, g.ref = true, ev.Time
		}
	case ra.Greylist == "passed" || ra.Greylist == "whitelisted":
		g.open = false
	}
}

// nullSender handles a transaction from the null sender: a DSN on its way
// back to a sender.
func (j *judge) nullSender(ev fakemta.Event) {
	t := ev.Transaction
	for _, ra := range t.Rcpts {
		if normAddr(ra.Addr) == "" {
			j.scenarioBad(ev, "null-rcpt", "", fmt.Sprintf("conn %d: the relay sent a null-sender message to the null recipient <> (a DSN about a bounce)", ev.Conn))
			break
		}
	}
	m := t.Message
	if m == nil {
		return // never reached the body (e.g. greylisted at RCPT): not a DSN yet
	}
	accepted := t.Data != nil && !t.Data.Dropped && is2xx(t.Data.Code)
	var env []string // envelope recipients: the original senders
	for _, ra := range t.Rcpts {
		if is2xx(ra.Reply.Code) && normAddr(ra.Addr) != "" {
			env = append(env, ra.Addr)
		}
	}
	if len(env) == 0 {
		env = m.RcptTo
	}
	bySender := func() int {
		for _, a := range env {
			if si := j.subForEnvelope(a, "", ev.Time); si >= 0 {
				return si
			}
		}
		return -1
	}
	rep := m.DSN
	if rep == nil {
		if !accepted {
			return
		}
		why := fmt.Sprintf("conn %d: a null-sender message (Message-ID <%s>) that is not a delivery-status report", ev.Conn, m.MessageID)
		if si := bySender(); si >= 0 {
			for _, tr := range j.tracks[si] {
				tr.dsns = append(tr.dsns, dsnSeen{at: ev.Time, conn: ev.Conn, accepted: true, problems: []string{"is not a multipart/report delivery-status report"}, matchedBy: "envelope"})
			}
			return
		}
		j.scenarioBad(ev, "not-dsn", strings.Join(env, ","), why)
		return
	}
	var problems []string
	named := rep.OriginalHarnessID != "" || rep.OriginalMessageID != ""
	if !named {
		problems = append(problems, "names no original message (no X-Greyharness-Id, no Message-ID)")
	}
	var inner *dsn.Report // the DSN this one is about, if it is about a DSN
	if r, ok := j.dsnMIDs[normID(rep.OriginalMessageID)]; rep.OriginalMessageID != "" && ok {
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
		if c := j.byHID[inner.OriginalHarnessID]; inner.OriginalHarnessID != "" && len(c) > 0 {
			si, by = j.pickBySender(c, env, ev.Time), "the harness id in the DSN it bounced"
		} else if c := j.byMID[normID(inner.OriginalMessageID)]; inner.OriginalMessageID != "" && len(c) > 0 {
			si, by = j.pickBySender(c, env, ev.Time), "the Message-ID in the DSN it bounced"
		}
	}
	switch c, c2 := j.byHID[rep.OriginalHarnessID], j.byMID[normID(rep.OriginalMessageID)]; {
	case si >= 0: // attributed through the DSN it bounced
	case rep.OriginalHarnessID != "" && len(c) > 0:
		si, by = j.pickBySender(c, env, ev.Time), "harness id"
	case rep.OriginalMessageID != "" && len(c2) > 0:
		si, by = j.pickBySender(c2, env, ev.Time), "Message-ID"
	default:
		if si = bySender(); si >= 0 {
			by = "envelope recipient"
			if named && inner == nil {
				problems = append(problems, "names a message that was never submitted")
			}
		}
	}
	if si < 0 {
		if len(problems) > 0 && accepted {
			j.scenarioBad(ev, "unattributed", envFrom, fmt.Sprintf("conn %d: DSN (Message-ID <%s>) %s", ev.Conn, m.MessageID, strings.Join(problems, "; ")))
		}
		return
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
		seen := dsnSeen{
			at: ev.Time, conn: ev.Conn, action: strings.ToLower(b.Action), status: b.Status,
			accepted: accepted, problems: p, matchedBy: by, arrivalRaw: rep.ArrivalDate,
		}
		var trs []*track
		if inner != nil {
			trs = j.tracks[si] // it names the sender, not a recipient: the whole message
		}
		for _, r := range []string{b.FinalRecipient, b.OriginalRecipient} {
			if trs != nil {
				break
			}
			if r == "" {
				continue
			}
			if tr := j.trackFor(si, r); tr != nil {
				trs, seen.rcptNamed = []*track{tr}, r
				break
			}
		}
		if len(trs) == 0 {
			named := b.FinalRecipient
			if named == "" {
				named = b.OriginalRecipient
			}
			if named != "" {
				// It names a recipient the message was not sent to: note it
				// on the message; it resolves nothing.
				for _, tr := range j.tracks[si] {
					tr.notes = append(tr.notes, TimelineEntry{At: ev.Time, What: WhatDSN,
						Detail: fmt.Sprintf("conn %d: DSN Action: %s names recipient %s, which this message was not sent to", ev.Conn, b.Action, named)})
				}
				continue
			}
			trs = j.tracks[si] // names no recipient at all: it concerns the whole message
		}
		for _, tr := range trs {
			tr.dsns = append(tr.dsns, seen)
		}
	}
}

// pickBySender chooses among submissions sharing an id the one whose
// envelope sender the DSN was sent to.
func (j *judge) pickBySender(cands []int, env []string, at time.Time) int {
	for _, a := range env {
		for _, si := range cands {
			if normAddr(j.h.Submissions[si].MailFrom) == normAddr(a) {
				return si
			}
		}
	}
	return j.pick(cands, "", "", at)
}

func (j *judge) scenarioBad(ev fakemta.Event, kind, rcpt, why string) {
	key := why
	if m := ev.Transaction.Message; m != nil && m.SHA256 != "" {
		key = kind + "|" + m.SHA256 // the same DSN delivered twice is one finding
	}
	if j.badSeen[key] {
		return
	}
	j.badSeen[key] = true
	j.scenario = append(j.scenario, Finding{
		Rcpt: rcpt, Verdicts: []Verdict{BadDSN}, Primary: BadDSN, Failed: true,
		Why:      "bad DSN: " + why,
		Timeline: []TimelineEntry{{At: ev.Time, What: WhatDSN, Detail: why}},
	})
}
