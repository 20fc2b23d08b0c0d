package fakemta

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// conn is the wire tap: it sits between the socket and go-smtp, journals
// every command and reply, and carries out the policy at the stages go-smtp
// does not hand to a backend (connect, helo, starttls, data, quit) by
// rewriting the command to NOOP and replacing NOOP's reply. It also owns
// STARTTLS, so commands stay visible to the journal after the upgrade.
//
// go-smtp serves one connection from one goroutine (read a command, handle
// it, write the reply), so read and write state needs no lock; only Close
// may come from elsewhere.
type conn struct {
	srv    *Server
	id     uint64
	raw    net.Conn
	cur    net.Conn // raw, or the TLS connection after STARTTLS
	client string
	local  string
	mx     int // the listener's ordinal, from 1 (match key mx)
	lane   int // the lane it came on (Config.Lanes, from 1), 0 for none
	tls    bool
	helo   string
	sess   *session

	// read side
	inbuf    []byte // received, not yet processed (a window of ibase)
	ibase    []byte // inbuf's whole buffer, reused from its start
	out      []byte // processed; out[outOff:] is not yet handed to go-smtp
	outOff   int
	ready    int // body bytes at the front of inbuf, processed, not yet handed to go-smtp
	mode     int
	dataSt   int               // end-of-data detector state
	bdatLeft int64             // bytes of the current BDAT chunk still to pass
	cmdSeq   int               // commands read; the greeting is reply 0
	verbs    map[int]string    // command number -> verb, for the replies that need it (EHLO, LHLO); made on first use
	ovr      map[int]*override // made on first use
	// bodyErr, once a body read has failed, is what every read returns
	// until the reply to that DATA or BDAT is written (go-smtp drains the
	// body before replying: the drain must end at once).
	bodyErr error
	// bodyFail is that failure as the reply go-smtp gives it, for the
	// session's record of a BDAT transaction (whose Data only sees the
	// chunk pipe close). Set on the handler goroutine before go-smtp closes
	// the pipe; read by Data after.
	bodyFail *smtp.SMTPError
	// skipChunk: go-smtp refused a BDAT command before reading its chunk;
	// the tap drops the chunk itself (go-smtp's discard would count it as
	// one command line and cut the line past --max-line-length).
	skipChunk bool

	// write side
	wbuf     []byte
	replySeq int       // final replies written, the greeting included
	next     *override // set by the session for the reply it is producing
	quitSeen bool

	// nums are the connection's numbers for the tenants it served.
	numMu sync.Mutex
	nums  map[*tenant]uint64

	closeOnce sync.Once
	closed    chan struct{}
	budget    connBudget // journal_limits.go
}

const (
	modeCommand = iota
	modeData
	modeBDAT
	modeHold // stop processing input until the pending reply is written (DATA, STARTTLS)
)

// override changes one reply.
type override struct {
	reply      *Reply
	drop       bool // send nothing, cut the line
	closeAfter bool
	delay      time.Duration
	delayWhy   string
	tenant     string // whose rule set the delay: its tarpit event names it
	startTLS   bool   // after the reply, run the TLS handshake
	tlsFail    bool   // ... and make it fail
}

func (s *Server) newConn(nc net.Conn, local string, mx, lane int) *conn {
	c := &conn{srv: s, id: s.connSeq.Add(1), raw: nc, cur: nc, client: nc.RemoteAddr().String(), local: local, mx: mx, lane: lane,
		closed: make(chan struct{})}
	if !s.track(c, true) {
		nc.Close()
		return nil
	}
	s.record(Event{Kind: EventConnect, Conn: c.id, Client: c.client, Local: local}, false)
	mc := c.matchCtx(StageConnect, s.connScope(c.lane))
	act := s.decide(&mc)
	if act != nil {
		switch act.Action {
		case ActionDrop:
			c.journalReply(Reply{Dropped: true})
			c.Close()
			return nil
		case ActionReply, ActionClose:
			c.setOverride(0, &override{reply: act.Reply, closeAfter: true})
		case ActionDelay:
			c.setOverride(0, &override{delay: act.Delay, delayWhy: "connect"})
		}
	}
	return c
}

func (c *conn) setOverride(n int, o *override) {
	if c.ovr == nil {
		c.ovr = map[int]*override{}
	}
	c.ovr[n] = o
}

// Read buffer sizes: a connection starts small (commands are short) and
// grows while reads fill the buffer (bodies).
const (
	minReadBuf = 2 << 10
	maxReadBuf = 64 << 10
)

// readMore reads from the wire into inbuf's free space.
func (c *conn) readMore() (int, error) {
	if len(c.inbuf) == 0 {
		c.inbuf = c.ibase[:0]
	}
	if cap(c.inbuf)-len(c.inbuf) < minReadBuf/2 {
		// Move what is left to the front, or into a bigger buffer.
		size := max(cap(c.ibase), minReadBuf)
		if len(c.inbuf) > size/2 {
			size = min(2*size, max(maxReadBuf, 2*len(c.inbuf)))
		}
		if size > cap(c.ibase) {
			c.ibase = make([]byte, 0, size)
		}
		c.inbuf = append(c.ibase[:0], c.inbuf...) // copy handles the overlap
	}
	free := c.inbuf[len(c.inbuf):cap(c.inbuf)]
	if c.mode == modeData || c.mode == modeBDAT {
		// Inside a body --read-timeout is an idle timeout: each read gets
		// the whole of it (go-smtp sets one deadline per command line, which
		// would bound the whole body).
		if d := c.srv.cfg.ReadTimeout; d > 0 {
			c.cur.SetReadDeadline(time.Now().Add(d))
		}
	}
	n, err := c.cur.Read(free)
	if n == len(free) && cap(c.ibase) < maxReadBuf {
		// A full read: the next one gets a bigger buffer.
		nb := make([]byte, len(c.inbuf)+n, min(2*cap(c.ibase), maxReadBuf))
		copy(nb, c.inbuf[:len(c.inbuf)+n])
		c.ibase, c.inbuf = nb[:0], nb
		return n, err
	}
	c.inbuf = c.inbuf[:len(c.inbuf)+n]
	return n, err
}

// matchCtx is what a rule of scope t sees at stage: addresses without
// t's label, t's connection number and t's clock.
func (c *conn) matchCtx(stage Stage, t *tenant) matchCtx {
	t = c.srv.scope(t)
	m := matchCtx{scope: t, stage: stage, conn: c.number(t), mx: c.mx, client: c.client, helo: c.helo, elapsed: c.srv.cfg.Now().Sub(t.started)}
	if c.sess != nil && c.sess.tx != nil {
		m.sender = strip(t, c.sess.tx.MailFrom)
		for _, r := range c.sess.tx.Rcpts {
			if r.Reply.Code/100 == 2 {
				m.rcpts = append(m.rcpts, strip(t, r.Addr))
			}
		}
	}
	return m
}

// number is the connection's number for t: the server's for its own
// scope, else the count of connections t has been seen on, this one
// included (the owner of connection-level stages sees every one).
func (c *conn) number(t *tenant) uint64 {
	if t == c.srv.def {
		return c.id
	}
	c.numMu.Lock()
	defer c.numMu.Unlock()
	n, ok := c.nums[t]
	if !ok {
		if c.nums == nil {
			c.nums = map[*tenant]uint64{}
		}
		n = t.conns.Add(1)
		c.nums[t] = n
	}
	return n
}

// Read hands go-smtp processed input, reading from the wire when needed.
// It returns at most one command line per call, so each tap-level decision
// is taken after go-smtp has handled every earlier (pipelined) command.
func (c *conn) Read(p []byte) (int, error) {
	if c.bodyErr != nil {
		return 0, c.bodyErr
	}
	if c.skipChunk {
		return 0, c.dropChunk()
	}
	for len(c.out) == c.outOff && c.ready == 0 {
		if c.isClosed() {
			return 0, io.EOF
		}
		if len(c.inbuf) > 0 {
			if c.mode == modeHold {
				// go-smtp wants input while a reply is held back: it has
				// answered otherwise than expected; go on with commands.
				c.mode = modeCommand
			}
			c.process()
			if len(c.out) > c.outOff || c.ready > 0 {
				break
			}
		}
		n, err := c.readMore()
		if n > 0 {
			continue
		}
		if err != nil {
			if c.mode == modeBDAT || c.mode == modeData {
				return 0, c.failBody(err)
			}
			return 0, err
		}
	}
	if len(c.out) == c.outOff {
		// Body bytes go to go-smtp straight from inbuf.
		n := copy(p, c.inbuf[:c.ready])
		c.inbuf, c.ready = c.inbuf[n:], c.ready-n
		return n, nil
	}
	n := copy(p, c.out[c.outOff:])
	c.outOff += n
	if c.outOff == len(c.out) {
		c.out, c.outOff = c.out[:0], 0
	}
	return n, nil
}

// failBody turns a failed read inside a body into the reply go-smtp is to
// give (it answers a plain error with a permanent 554) and leaves body
// mode: the body is over, whatever the client sends next. The reply closes
// the line (where the client is in its body is unknown). Never a plain EOF:
// go-smtp reads a chunk through an io.LimitReader, which would take it for
// the chunk's end and accept a cut BDAT LAST as a whole message.
func (c *conn) failBody(err error) error {
	e := &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "Connection error inside the message, closing connection"}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		e = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2},
			Message: fmt.Sprintf("No data for %s inside the message, closing connection", c.srv.cfg.ReadTimeout)}
	}
	c.mode, c.dataSt, c.bdatLeft, c.ready = modeCommand, lineStart, 0, 0
	c.bodyErr, c.bodyFail = e, e
	return e
}

// takeBodyFail returns (once) the reply a failed body read got.
func (c *conn) takeBodyFail() *smtp.SMTPError {
	e := c.bodyFail
	c.bodyFail = nil
	return e
}

// dropChunk reads and drops the rest of a refused BDAT chunk, then ends
// go-smtp's discard of it with io.EOF.
func (c *conn) dropChunk() error {
	for {
		k := int(min(int64(len(c.inbuf)), c.bdatLeft))
		c.inbuf, c.bdatLeft = c.inbuf[k:], c.bdatLeft-int64(k)
		if c.bdatLeft == 0 {
			c.skipChunk, c.mode = false, modeCommand
			return io.EOF
		}
		if n, err := c.readMore(); n == 0 && err != nil {
			// The refusal is said already: go-smtp's next read of a
			// command gets the error (and answers a timeout with 421).
			c.skipChunk, c.mode, c.bdatLeft = false, modeCommand, 0
			c.bodyErr = err
			return err
		}
	}
}

// process moves input from inbuf to out according to the mode: one
// command line, or the body bytes at hand.
func (c *conn) process() {
	switch c.mode {
	case modeData:
		c.processData()
	case modeBDAT:
		n := int64(len(c.inbuf))
		if n > c.bdatLeft {
			n = c.bdatLeft
		}
		c.ready = int(n)
		c.bdatLeft -= n
		if c.bdatLeft == 0 {
			c.mode = modeCommand
		}
	case modeCommand:
		i := bytes.IndexByte(c.inbuf, '\n')
		if i < 0 {
			if len(c.inbuf) > c.srv.cfg.MaxLineLength+2 {
				// Too long to be a command: let go-smtp reject it.
				c.journalCommand(string(c.inbuf[:min(64, len(c.inbuf))]) + "...")
				c.out = append(c.out, c.inbuf...)
				c.inbuf = c.inbuf[:0]
			}
			return
		}
		line := c.inbuf[:i+1]
		c.inbuf = c.inbuf[i+1:]
		c.command(line)
	}
}

// End-of-data detector states.
const (
	lineStart = iota // after CRLF (or right after the 354)
	dot
	dotCR
	cr
	midLine
)

// processData passes body bytes through until the line with a lone dot.
// It finds the end exactly where go-smtp's data reader does (CRLF "." CRLF,
// RFC 5321 4.1.1.4): a "." line after a bare LF or CR is body, and what
// follows it must not be taken for commands.
func (c *conn) processData() {
	if end := c.scanData(c.inbuf); end >= 0 {
		c.ready = end
		c.mode, c.dataSt = modeHold, lineStart // the final reply comes next
		return
	}
	c.ready = len(c.inbuf)
}

// scanData runs the end-of-data detector over b and returns the length up
// to and including the final dot line, or -1 (b is all body so far).
func (c *conn) scanData(b []byte) int {
	for i, b := range b {
		switch c.dataSt {
		case lineStart:
			switch b {
			case '.':
				c.dataSt = dot
			case '\r':
				c.dataSt = cr
			default:
				c.dataSt = midLine
			}
		case dot:
			if b == '\r' {
				c.dataSt = dotCR
			} else {
				c.dataSt = midLine
			}
		case dotCR:
			if b == '\n' {
				return i + 1
			}
			c.dataSt = midLine
		case cr:
			if b == '\n' {
				c.dataSt = lineStart
			} else {
				c.dataSt = midLine
			}
		default:
			if b == '\r' {
				c.dataSt = cr
			}
		}
	}
	return -1
}

// command journals one command line and applies tap-level policy.
func (c *conn) command(line []byte) {
	text := strings.TrimRight(string(line), "\r\n")
	c.cmdSeq++
	n := c.cmdSeq
	c.journalCommand(text)
	if c.budget.command(len(line)) {
		c.setOverride(n, &override{reply: &overBudgetReply, closeAfter: true})
		c.out = append(c.out, "NOOP\r\n"...)
		return
	}
	verb, arg, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	if verb == "EHLO" || verb == "LHLO" {
		if c.verbs == nil {
			c.verbs = map[int]string{}
		}
		c.verbs[n] = verb
		if len(c.verbs) > 64 {
			for k := range c.verbs {
				if k < n-32 {
					delete(c.verbs, k)
				}
			}
		}
	}
	var stage Stage
	switch verb {
	case "EHLO", "HELO", "LHLO":
		stage = StageHelo
		c.helo = strings.TrimSpace(arg)
	case "STARTTLS":
		if strings.TrimSpace(arg) != "" {
			// RFC 3207: no parameters (go-smtp ignores them and starts TLS).
			c.setOverride(n, &override{reply: &Reply{Code: 501, Enhanced: "5.5.4", Text: "Syntax error (no parameters allowed)"}})
			c.out = append(c.out, "NOOP\r\n"...)
			return
		}
		stage = StageStartTLS
	case "MAIL":
		line = c.mailSize(line, n)
	case "DATA":
		stage = StageData
	case "QUIT":
		stage = StageQuit
		c.quitSeen = true
	case "BDAT":
		// A chunk follows only when go-smtp will read it: it refuses
		// other argument forms without reading anything.
		f := strings.Fields(arg)
		if len(f) == 1 || len(f) == 2 && strings.EqualFold(f[1], "LAST") {
			if size, err := strconv.ParseUint(f[0], 10, 32); err == nil {
				c.out = append(c.out, line...)
				c.bdatLeft = int64(size)
				if size > 0 {
					c.mode = modeBDAT
				}
				return
			}
		}
	}
	if stage == "" {
		c.out = append(c.out, line...)
		return
	}
	// A stage inside a transaction is its tenant's; the others are the
	// connection's (see tenant.go).
	scope := c.srv.connScope(c.lane)
	if c.sess != nil && c.sess.tx != nil && (stage == StageData || stage == StageQuit) {
		scope = c.srv.scope(c.sess.scope)
	}
	mc := c.matchCtx(stage, scope)
	if stage == StageData && c.sess != nil && c.sess.tx != nil {
		mc.attempts = c.sess.countStage(scope, StageData, c.sess.accepted())
	}
	act := c.srv.decide(&mc)
	noop := []byte("NOOP\r\n")
	tlsOn := c.srv.cfg.TLS != nil && !c.tls
	if act != nil {
		switch act.Action {
		case ActionReply:
			if stage == StageStartTLS && act.Reply.Code == 220 && tlsOn {
				c.setOverride(n, &override{reply: act.Reply, startTLS: true})
				c.out = append(c.out, noop...)
				c.mode = modeHold
				return
			}
			if act.Reply.Code/100 == 2 && stage != StageQuit {
				break // a 2xx reply is go-smtp's own answer; let the command through
			}
			c.setOverride(n, &override{reply: act.Reply, closeAfter: stage == StageQuit})
			c.out = append(c.out, noop...)
			return
		case ActionClose:
			c.setOverride(n, &override{reply: act.Reply, closeAfter: true})
			c.out = append(c.out, noop...)
			return
		case ActionDrop:
			c.setOverride(n, &override{drop: true})
			c.out = append(c.out, noop...)
			return
		case ActionDelay:
			c.setOverride(n, &override{delay: act.Delay, delayWhy: string(stage), tenant: scope.name})
		case ActionTLS:
			if tlsOn {
				c.setOverride(n, &override{reply: &Reply{Code: 220, Enhanced: "2.0.0", Text: "Ready to start TLS"}, startTLS: true, tlsFail: true})
				c.out = append(c.out, noop...)
				c.mode = modeHold
				return
			}
		}
	}
	switch stage {
	case StageStartTLS:
		if tlsOn {
			o := c.ovr[n]
			if o == nil {
				o = &override{}
				c.setOverride(n, o)
			}
			o.reply, o.startTLS = &Reply{Code: 220, Enhanced: "2.0.0", Text: "Ready to start TLS"}, true
			c.out = append(c.out, noop...)
			c.mode = modeHold
			return
		}
	case StageData:
		c.mode = modeHold // body bytes wait for the 354
	}
	c.out = append(c.out, line...)
}

// maxSizeDigits is the longest SIZE value RFC 1870 allows.
const maxSizeDigits = 20

// mailSize makes go-smtp answer a MAIL whose SIZE= has 11 to 20 digits as
// RFC 1870 wants: go-smtp parses the value as a 32-bit number and calls a
// larger one a syntax error (501), where it is a message too big (552) or,
// under a --max-message-size beyond 4 GiB, fine. It returns the line go-smtp
// gets; the journal keeps the client's.
func (c *conn) mailSize(line []byte, n int) []byte {
	const maxUint32 = 1<<32 - 1
	start := sizeParam(line)
	if start < 0 {
		return line
	}
	end := start
	for end < len(line) && line[end] >= '0' && line[end] <= '9' {
		end++
	}
	digits := line[start:end]
	if len(digits) == 0 || len(digits) > maxSizeDigits || end < len(line) && !bytes.ContainsRune([]byte(" \r\n"), rune(line[end])) {
		return line // go-smtp's 501 is right
	}
	size, err := strconv.ParseUint(string(digits), 10, 64)
	if err == nil && size <= maxUint32 {
		return line // go-smtp gets it right
	}
	limit := c.srv.cfg.MaxMessageBytes
	if (err != nil || limit > 0 && size > uint64(limit)) && limit >= maxUint32 {
		// Too big, and go-smtp cannot say so (it compares 32-bit values).
		c.setOverride(n, &override{reply: &Reply{Code: 552, Enhanced: "5.3.4", Text: "Max message size exceeded"}})
		return []byte("NOOP\r\n")
	}
	// go-smtp needs a value it can parse: its largest does, as it answers
	// 552 for it below a 4 GiB limit and does not use it otherwise.
	return append(append(append([]byte{}, line[:start]...), "4294967295"...), line[end:]...)
}

// sizeParam returns where the value of a " SIZE=" parameter starts in
// line (any case), or -1.
func sizeParam(line []byte) int {
	const key = " SIZE="
	for i := 0; ; {
		j := bytes.IndexByte(line[i:], '=')
		if j < 0 {
			return -1
		}
		i += j + 1
		if i >= len(key) && bytes.EqualFold(line[i-len(key):i], []byte(key)) {
			return i
		}
	}
}

// Write collects go-smtp's reply lines and sends each complete reply,
// after applying any override.
func (c *conn) Write(p []byte) (int, error) {
	// Usually p is one whole reply: it is used in place, not copied.
	buf := p
	if len(c.wbuf) > 0 {
		c.wbuf = append(c.wbuf, p...)
		buf = c.wbuf
	}
	for {
		end := replyEnd(buf)
		if end < 0 {
			break
		}
		reply := buf[:end]
		buf = buf[end:]
		if err := c.sendReply(reply); err != nil {
			c.wbuf = append(c.wbuf[:0], buf...)
			return 0, err
		}
	}
	c.wbuf = append(c.wbuf[:0], buf...) // an incomplete reply waits for the rest
	return len(p), nil
}

// replyEnd returns the length of the first complete reply in b, -1 if none:
// a reply ends with a line whose 4th byte is not '-' ("250 ok").
func replyEnd(b []byte) int {
	for start := 0; start < len(b); {
		i := bytes.IndexByte(b[start:], '\n')
		if i < 0 {
			return -1
		}
		line := b[start : start+i+1]
		start += i + 1
		if len(line) < 4 || line[3] != '-' {
			return start
		}
	}
	return -1
}

// sendReply applies the override for this reply and writes it.
func (c *conn) sendReply(wire []byte) error {
	if c.isClosed() {
		// Nothing more is said on a cut line (go-smtp may still try,
		// e.g. after a too-long line that already closed it).
		return net.ErrClosed
	}
	code, _ := strconv.Atoi(string(wire[:min(3, len(wire))]))
	n := c.replySeq
	if code != 354 {
		c.replySeq++
	} else {
		n = -1 // intermediate: belongs to DATA, whose final reply comes later
	}
	var o *override
	if n >= 0 {
		o = c.ovr[n]
		delete(c.ovr, n)
		if c.next != nil {
			if o == nil {
				o = c.next
			} else {
				o.closeAfter, o.drop = o.closeAfter || c.next.closeAfter, o.drop || c.next.drop
			}
			c.next = nil
		}
	} else if o = c.ovr[c.replySeq]; o != nil && o.delay > 0 {
		// A data-stage delay holds the 354 (the tarpit the relay sees).
		o = &override{delay: o.delay, delayWhy: o.delayWhy, tenant: o.tenant}
		delete(c.ovr, c.replySeq)
	} else {
		o = nil
	}
	if o != nil && o.delay > 0 {
		c.srv.record(Event{Kind: EventControl, Conn: c.id, Client: c.client, Tenant: o.tenant, Note: fmt.Sprintf("tarpit %s at %s", o.delay, o.delayWhy)}, false)
		t := time.NewTimer(o.delay)
		select {
		case <-t.C:
		case <-c.closed:
			t.Stop()
			return net.ErrClosed
		}
	}
	if o != nil && o.drop {
		c.journalReply(Reply{Dropped: true})
		c.Close()
		return nil
	}
	if o != nil && o.reply != nil {
		wire = formatReply(*o.reply)
	}
	verb := ""
	if n > 0 && c.verbs != nil {
		verb = c.verbs[n]
		delete(c.verbs, n) // each reply number comes once
	}
	if (verb == "EHLO" || verb == "LHLO") && code == 250 && (o == nil || o.reply == nil) {
		wire = c.ehloCapabilities(wire)
	}
	closeAfter := o != nil && o.closeAfter
	switch {
	case code == 354:
		c.mode, c.dataSt = modeData, 0
	case c.mode == modeHold && !(o != nil && o.startTLS):
		c.mode = modeCommand
	case n >= 0 && c.mode == modeBDAT:
		// A final reply before go-smtp read any of the chunk: the BDAT
		// is refused (502, 552), go-smtp goes on to discard the chunk.
		c.skipChunk = true
	case n >= 0 && c.mode == modeData:
		// go-smtp gave up reading the body (a too-long line): so does the tap.
		c.mode = modeCommand
	}
	if n >= 0 && c.bodyErr != nil {
		// The reply to a body that could not be read: the client's place
		// in its stream is lost, the line is cut.
		c.bodyErr, closeAfter = nil, true
	}
	c.journalReply(parseWireReply(wire))
	if _, err := c.cur.Write(wire); err != nil {
		return err
	}
	if o != nil && o.startTLS {
		return c.upgrade(o.tlsFail)
	}
	if closeAfter {
		c.Close()
	}
	return nil
}

// ehloCapabilities adds STARTTLS when it is on offer (go-smtp does not
// see our TLS) and keeps it out once TLS is running.
func (c *conn) ehloCapabilities(wire []byte) []byte {
	if c.srv.cfg.TLS == nil || c.tls {
		return wire
	}
	lines := strings.SplitAfter(string(wire), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 1 {
		// "250 Hello x" becomes "250-Hello x" + "250 STARTTLS"
		return []byte("250-" + lines[0][4:] + "250 STARTTLS\r\n")
	}
	out := append([]string{}, lines[:len(lines)-1]...)
	out = append(out, "250-STARTTLS\r\n", lines[len(lines)-1])
	return []byte(strings.Join(out, ""))
}

// upgrade runs the server side of the TLS handshake after a 220.
func (c *conn) upgrade(fail bool) error {
	cfg := c.srv.cfg.TLS
	if fail {
		cfg = cfg.Clone()
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return nil, errors.New("policy: tls fail")
		}
	}
	under := net.Conn(c.raw)
	if len(c.inbuf) > 0 {
		under = &prefixConn{Conn: c.raw, prefix: c.inbuf}
		c.ibase = nil // the prefix keeps it
	}
	c.inbuf = nil
	tc := tls.Server(under, cfg)
	if d := c.srv.cfg.ReadTimeout; d > 0 {
		tc.SetDeadline(time.Now().Add(d))
	}
	err := tc.Handshake()
	tc.SetDeadline(time.Time{})
	if err != nil {
		c.srv.record(Event{Kind: EventTLS, Conn: c.id, Client: c.client, Note: "handshake failed: " + err.Error()}, false)
		c.Close()
		return nil
	}
	st := tc.ConnectionState()
	c.cur, c.tls, c.mode, c.helo = tc, true, modeCommand, ""
	c.srv.record(Event{Kind: EventTLS, Conn: c.id, Client: c.client, TLS: true, Note: tls.VersionName(st.Version) + " " + tls.CipherSuiteName(st.CipherSuite)}, false)
	return nil
}

func (c *conn) journalCommand(text string) {
	c.srv.record(Event{Kind: EventCommand, Conn: c.id, Client: c.client, TLS: c.tls, Command: text}, false)
}

func (c *conn) journalReply(r Reply) {
	c.budget.reply(&r)
	c.srv.record(Event{Kind: EventReply, Conn: c.id, Client: c.client, TLS: c.tls, Reply: &r}, false)
}

// formatReply writes r as one SMTP reply line.
func formatReply(r Reply) []byte {
	b := make([]byte, 0, 8+len(r.Enhanced)+len(r.Text))
	b = strconv.AppendInt(b, int64(r.Code), 10)
	b = append(b, ' ')
	if r.Enhanced != "" {
		b = append(b, r.Enhanced...)
		b = append(b, ' ')
	}
	b = append(b, r.Text...)
	return append(b, '\r', '\n')
}

// parseWireReply reads a (possibly multi-line) reply as written.
func parseWireReply(wire []byte) Reply {
	// One line (the usual case): no splitting and joining.
	if r, ok := parseOneLineReply(wire); ok {
		return r
	}
	return parseMultiLineReply(wire)
}

// parseMultiLineReply reads any reply, one line or several: the general
// case, and the reference parseOneLineReply must agree with.
func parseMultiLineReply(wire []byte) Reply {
	var r Reply
	var texts []string
	for _, line := range strings.Split(strings.TrimRight(string(wire), "\r\n"), "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 3 {
			continue
		}
		r.Code, _ = strconv.Atoi(line[:3])
		t := ""
		if len(line) > 4 {
			t = line[4:]
		}
		texts = append(texts, t)
	}
	if len(texts) > 0 {
		last := texts[len(texts)-1]
		if first, rest, ok := strings.Cut(last, " "); ok && isEnhanced(first) {
			r.Enhanced, texts[len(texts)-1] = first, rest
		} else if isEnhanced(last) {
			r.Enhanced, texts[len(texts)-1] = last, ""
		}
	}
	r.Text = strings.Join(texts, "\n")
	return r
}

// parseOneLineReply is parseWireReply for a reply without an inner
// newline; false when wire has one.
func parseOneLineReply(wire []byte) (Reply, bool) {
	w := bytes.TrimRight(wire, "\r\n")
	if bytes.IndexByte(w, '\n') >= 0 {
		return Reply{}, false
	}
	var r Reply
	line := bytes.TrimRight(w, "\r")
	if len(line) < 3 {
		return r, true
	}
	s := string(line)
	r.Code, _ = strconv.Atoi(s[:3])
	t := ""
	if len(s) > 4 {
		t = s[4:]
	}
	if first, rest, ok := strings.Cut(t, " "); ok && isEnhanced(first) {
		r.Enhanced, t = first, rest
	} else if isEnhanced(t) {
		r.Enhanced, t = t, ""
	}
	r.Text = t
	return r, true
}

func (c *conn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// Close cuts the connection (once) and journals it.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		close(c.closed)
		err = c.cur.Close()
		if c.cur != c.raw {
			c.raw.Close()
		}
		c.srv.track(c, false)
		c.srv.record(Event{Kind: EventClose, Conn: c.id, Client: c.client}, false)
	})
	return err
}

func (c *conn) LocalAddr() net.Addr                { return c.raw.LocalAddr() }
func (c *conn) RemoteAddr() net.Addr               { return c.raw.RemoteAddr() }
func (c *conn) SetDeadline(t time.Time) error      { return c.cur.SetDeadline(t) }
func (c *conn) SetReadDeadline(t time.Time) error  { return c.cur.SetReadDeadline(t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.cur.SetWriteDeadline(t) }

// prefixConn replays bytes already read before reading the socket again.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.prefix) > 0 {
		n := copy(b, p.prefix)
		p.prefix = p.prefix[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}
