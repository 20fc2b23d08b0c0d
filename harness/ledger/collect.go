package ledger

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta/record"
	"github.com/greyharness/greyharness/harness/history"
)

// attempt is one delivery attempt of the relay as the fake MTA saw it.
type attempt struct {
	at       time.Time // when the transaction ended (its journal event)
	start    time.Time // when it began: its connection opened, or the previous transaction on it ended
	conn     uint64
	client   string
	mailFrom string
	mail     record.Reply
	rcpt     *record.Reply // nil: no RCPT for this recipient (MAIL refused, aborted before RCPT)
	greylist string
	n        int
	data     *record.Reply // eod reply, nil when no body
	body     bool          // the body was received in full
	received time.Time     // when it was
	// replied is when the reply to the final dot was written (the journal
	// event after the transaction's on its connection): the fake MTA
	// journals the transaction durably first, so under load the reply
	// comes milliseconds after it. Zero when no reply was written.
	replied  time.Time
	aborted  string
	mx       string // the MX host (fake MTA listener) that answered
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
	tries     []dsnTry // DSN transactions to its sender that got no body through
}

// dsnTry is a null-sender transaction to a message's unique sender that was
// deferred or refused before its body was accepted.
type dsnTry struct {
	at    time.Time
	conn  uint64
	reply record.Reply
	stage string
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
	attr   *Attributor

	outages []interval
	// downSince is when the relay went down for good by a neighbour's
	// doing (History.RelayDown): its failed restart, the harness's attempt
	// to bring it back failing too. Zero when it did not.
	downSince    time.Time
	snaps        []history.QueueSnapshot // usable listings, by time
	lastFaultEnd time.Time
	connOnly     []attempt
	// eodReply is when the reply to each transaction's final dot was
	// written, by the transaction's Seq (attempt.replied).
	eodReply map[uint64]time.Time

	badSeen   map[string]bool // dedupe of scenario-level bad DSNs
	scenario  []Finding
	greylists map[string]*greyRun
	// mxs is how many MX hosts (fake MTA listeners) answered: the timeline
	// names each attempt's MX only when there were several. -1: not counted yet.
	mxs int

	// Conservation: how every journal transaction was accounted for.
	classes map[uint64]string // transaction Seq → attribution class
	foreign []Foreign
	harness []string // harness errors (conservation violations)
}

type greyRun struct {
	open bool
	ref  time.Time
	mxs  []string // MX hosts tried since the run opened
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

// submittedDetail is the timeline's "submitted" line for rcpt: the envelope
// and the relay's reply (and a refused second EHLO of a double handshake).
func submittedDetail(s *history.Submission, rcpt string, reply *record.Reply) string {
	d := fmt.Sprintf("MAIL FROM:<%s> RCPT TO:<%s>, relay replied %s", s.MailFrom, rcpt, fmtReply(reply))
	if s.SecondEHLO != "" {
		d += "; second EHLO refused: " + s.SecondEHLO
	}
	return d
}

func fmtReply(r *record.Reply) string {
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
		attr:      NewAttributor(),
		classes:   map[uint64]string{},
		badSeen:   map[string]bool{},
		greylists: map[string]*greyRun{},
		mxs:       -1,
	}
	j.tracks = make([][]*track, len(h.Submissions))
	for i := range h.Submissions {
		s := &h.Submissions[i]
		seen := map[string]bool{}
		for _, r := range s.RcptTo {
			if seen[normAddr(r)] {
				continue // the same recipient twice is one (message, recipient)
			}
			seen[normAddr(r)] = true
			j.tracks[i] = append(j.tracks[i], &track{si: i, sub: s, rcpt: r})
		}
		j.attr.Add(*s)
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
	// Down for good (History.RelayDown): from the first of the failed
	// restarts no successful one followed, to the end of the scenario.
	if j.h.RelayDown != "" {
		for _, f := range faults {
			switch {
			case f.Kind != history.FaultRelayRestart && f.Kind != history.FaultRelayStart:
			case f.Err == "":
				j.downSince = time.Time{}
			case j.downSince.IsZero():
				j.downSince = f.Start
			}
		}
		if !j.downSince.IsZero() {
			j.outages = append(j.outages, interval{j.downSince, later(j.h.Ended, j.downSince), history.FaultRelayStop, true})
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

// outageTime is how much of [from, to) an outage covers (overlapping
// outages counted once).
func (j *judge) outageTime(from, to time.Time) time.Duration {
	var total time.Duration
	cur := from
	for _, o := range j.outages { // sorted by start
		s, e := o.start, o.end
		if s.Before(cur) {
			s = cur
		}
		if e.After(to) {
			e = to
		}
		if e.After(s) {
			total += e.Sub(s)
			cur = e
		}
	}
	return total
}

// relayDown reports whether the relay under test was being restarted or
// stopped at any moment from from to to (at t: relayDown(t, t)).
func (j *judge) relayDown(from, to time.Time) bool {
	if to.Before(from) {
		from = to
	}
	for _, o := range j.outages {
		if o.relay && !o.start.After(to) && o.end.After(from) {
			return true
		}
	}
	return false
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
	if si < 0 || si >= len(j.tracks) {
		return nil
	}
	r := normAddr(rcpt)
	for _, t := range j.tracks[si] {
		if normAddr(t.rcpt) == r {
			return t
		}
	}
	return nil
}

type connState struct {
	at     time.Time
	conn   uint64
	client string
	txn    bool
	quit   bool
	fail   *record.Reply
	tls    string
	last   time.Time // end of the previous transaction on this connection
	mail   time.Time // MAIL of the transaction in progress
}

// txnStart is when a transaction ending at end began: its MAIL command; or,
// when its connection was open through the start of an outage before that
// (a delivery process that survived a restart), when the connection opened
// or its previous transaction ended. An idle cached connection does not
// stretch an attempt otherwise.
func (j *judge) txnStart(cs *connState, end time.Time) time.Time {
	start := cs.mail
	if start.IsZero() || start.After(end) {
		start = end
	}
	base := cs.at
	if cs.last.After(base) {
		base = cs.last
	}
	for _, o := range j.outages {
		if !o.start.Before(base) && o.start.Before(start) {
			return base
		}
	}
	return start
}

// walk reads the journal in Seq order.
func (j *judge) walk() {
	evs := append([]record.Event(nil), j.h.Journal...)
	sort.SliceStable(evs, func(a, b int) bool { return evs[a].Seq < evs[b].Seq })
	j.eodReply = eodReplies(evs)
	conns := map[uint64]*connState{}
	get := func(ev record.Event) *connState {
		cs := conns[ev.Conn]
		if cs == nil {
			cs = &connState{at: ev.Time, conn: ev.Conn, client: ev.Client}
			conns[ev.Conn] = cs
		}
		return cs
	}
	for _, ev := range evs {
		switch ev.Kind {
		case record.EventConnect:
			if old := conns[ev.Conn]; old != nil {
				j.finishConn(old)
			}
			conns[ev.Conn] = &connState{at: ev.Time, conn: ev.Conn, client: ev.Client}
		case record.EventCommand:
			f := strings.Fields(ev.Command)
			switch {
			case len(f) > 0 && strings.EqualFold(f[0], "QUIT"):
				get(ev).quit = true
			case len(f) > 0 && strings.HasPrefix(strings.ToUpper(f[0]), "MAIL"):
				if cs := get(ev); cs.mail.IsZero() {
					cs.mail = ev.Time
				}
			}
		case record.EventReply:
			if r := ev.Reply; r != nil && (r.Code >= 400 || r.Dropped) {
				rr := *r
				get(ev).fail = &rr
			}
		case record.EventTLS:
			get(ev).tls = ev.Note
		case record.EventTransaction:
			cs := get(ev)
			cs.txn = true
			j.transaction(ev, j.txnStart(cs, ev.Time))
			cs.last, cs.mail = ev.Time, time.Time{}
		case record.EventClose:
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

// eodReplies finds, for each transaction with a body, the reply written
// next on its connection: the reply to its final dot.
func eodReplies(evs []record.Event) map[uint64]time.Time {
	out := map[uint64]time.Time{}
	waiting := map[uint64]uint64{} // conn → Seq of its transaction awaiting its reply
	for _, ev := range evs {
		switch ev.Kind {
		case record.EventTransaction:
			delete(waiting, ev.Conn)
			if t := ev.Transaction; t != nil && t.Data != nil && t.Message != nil {
				waiting[ev.Conn] = ev.Seq
			}
		case record.EventReply:
			if seq, ok := waiting[ev.Conn]; ok {
				out[seq] = ev.Time
				delete(waiting, ev.Conn)
			}
		case record.EventConnect, record.EventClose:
			delete(waiting, ev.Conn)
		}
	}
	return out
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

func (j *judge) mkAttempt(ev record.Event, ra *record.RcptAttempt) attempt {
	t := ev.Transaction
	a := attempt{
		at: ev.Time, start: ev.Time, conn: ev.Conn, client: ev.Client, mx: t.MX, mailFrom: t.MailFrom, mail: t.Mail,
		data: t.Data, body: t.Message != nil, aborted: t.Aborted,
	}
	if t.Message != nil {
		a.received = t.Message.ReceivedAt
		a.replied = j.eodReply[ev.Seq]
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

// transaction applies the Attributor's verdict on one transaction to the
// tracks it names.
func (j *judge) transaction(ev record.Event, start time.Time) {
	t := ev.Transaction
	if t == nil {
		return
	}
	at := j.attr.Attribute(ev)
	j.classes[ev.Seq] = at.Class
	byIndex := map[int]*track{}
	for _, h := range at.Hits {
		tr := j.trackFor(h.Sub, h.Rcpt)
		if tr == nil {
			j.harnessErr("journal seq %d: attributed to submission %d recipient %s, which the ledger does not track", ev.Seq, h.Sub, h.Rcpt)
			continue
		}
		var ra *record.RcptAttempt
		if h.RcptIndex >= 0 {
			ra = &t.Rcpts[h.RcptIndex]
			byIndex[h.RcptIndex] = tr
		}
		a := j.mkAttempt(ev, ra)
		if start.Before(a.at) {
			a.start = start
		}
		tr.attempts = append(tr.attempts, a)
		switch {
		case h.Delivered:
			tr.delivered = append(tr.delivered, ev.Time)
		case h.Dropped:
			tr.dropped = append(tr.dropped, ev.Time)
		}
	}
	if normAddr(t.MailFrom) != "" {
		for i := range t.Rcpts {
			j.greylistRetry(ev, &t.Rcpts[i], byIndex[i])
		}
	}
	for _, d := range at.DSNs {
		tr := j.trackFor(d.Sub, d.Rcpt)
		if tr == nil {
			j.harnessErr("journal seq %d: DSN attributed to submission %d recipient %s, which the ledger does not track", ev.Seq, d.Sub, d.Rcpt)
			continue
		}
		tr.dsns = append(tr.dsns, dsnSeen{at: ev.Time, conn: ev.Conn, action: d.Action, status: d.Status,
			accepted: d.Accepted, problems: d.Problems, matchedBy: d.By, rcptNamed: d.Named, arrivalRaw: d.Arrival})
	}
	for _, n := range at.Notes {
		for _, tr := range j.tracks[n.Sub] {
			tr.notes = append(tr.notes, TimelineEntry{At: ev.Time, What: WhatDSN, Detail: n.Detail})
		}
	}
	for _, d := range at.Tries {
		for _, tr := range j.tracks[d.Sub] {
			tr.tries = append(tr.tries, dsnTry{at: ev.Time, conn: ev.Conn, reply: d.Reply, stage: d.Stage})
		}
	}
	for _, b := range at.Bad {
		j.scenarioBad(ev, b.Kind, b.Rcpt, b.Why)
	}
	if at.Class == ClassForeign {
		j.foreign = append(j.foreign, Foreign{Seq: ev.Seq, At: ev.Time, Conn: ev.Conn, MailFrom: t.MailFrom, Why: at.Why})
	}
}

func (j *judge) harnessErr(format string, args ...any) {
	j.harness = append(j.harness, fmt.Sprintf(format, args...))
}

// greylistRetry tracks greylist runs per triplet (client subnet, sender,
// recipient): a retry less than GreylistDelay after the first deferral of
// the run is too soon.
func (j *judge) greylistRetry(ev record.Event, ra *record.RcptAttempt, tr *track) {
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
	// Trying the next MX host after a deferral is RFC 5321 §5.1's failover,
	// not a retry: only a return to an MX host of the run counts.
	mx := ev.Transaction.MX
	failover := g.open && mx != "" && !slices.Contains(g.mxs, mx)
	if g.open && !failover && ev.Time.Sub(g.ref) < delay && tr != nil {
		tr.tooSoon = append(tr.tooSoon, tooSoon{at: ev.Time, ref: g.ref})
	}
	switch {
	case ra.Greylist == "deferred":
		if !g.open {
			g.open, g.ref, g.mxs = true, ev.Time, nil
		}
		if mx != "" && !slices.Contains(g.mxs, mx) {
			g.mxs = append(g.mxs, mx)
		}
	case ra.Greylist == "passed" || ra.Greylist == "whitelisted":
		g.open = false
	}
}

func (j *judge) scenarioBad(ev record.Event, kind, rcpt, why string) {
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

// multiMX reports whether more than one MX host (fake MTA listener) took
// part in the history's transactions.
func (j *judge) multiMX() bool {
	if j.mxs < 0 {
		seen := map[string]bool{}
		for _, ev := range j.h.Journal {
			if ev.Transaction != nil && ev.Transaction.MX != "" {
				seen[ev.Transaction.MX] = true
			}
		}
		j.mxs = len(seen)
	}
	return j.mxs > 1
}

// later is the later of a and b.
func later(a, b time.Time) time.Time {
	if a.Before(b) {
		return b
	}
	return a
}
