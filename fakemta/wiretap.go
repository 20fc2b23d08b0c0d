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
	tls    bool
	helo   string
	sess   *session

	// read side
	inbuf    []byte // received, not yet processed
	out      []byte // processed, not yet handed to go-smtp
	mode     int
	dataSt   int   // end-of-data detector state
	bdatLeft int64 // bytes of the current BDAT chunk still to pass
	scratch  []byte
	cmdSeq   int            // commands read; the greeting is reply 0
	verbs    map[int]string // command number -> verb, for replies that need it
	ovr      map[int]*override

	// write side
	wbuf     []byte
	replySeq int       // final replies written, the greeting included
	next     *override // set by the session for the reply it is producing
	quitSeen bool

	closeOnce sync.Once
	closed    chan struct{}
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
	startTLS   bool // after the reply, run the TLS handshake
	tlsFail    bool // ... and make it fail
}

func (s *Server) newConn(nc net.Conn, local string) *conn {
	c := &conn{srv: s, id: s.connSeq.Add(1), raw: nc, cur: nc, client: nc.RemoteAddr().String(), local: local,
		verbs: map[int]string{}, ovr: map[int]*override{}, closed: make(chan struct{}), scratch: make([]byte, 8<<10)}
	if !s.track(c, true) {
		nc.Close()
		return nil
	}
	s.record(Event{Kind: EventConnect, Conn: c.id, Client: c.client, Local: local}, false)
	act := s.decide(c.matchCtx(StageConnect))
	if act != nil {
		switch act.Action {
		case ActionDrop:
			c.journalReply(Reply{Dropped: true})
			c.Close()
			return nil
		case ActionReply, ActionClose:
			c.ovr[0] = &override{reply: act.Reply, closeAfter: true}
		case ActionDelay:
			c.ovr[0] = &override{delay: act.Delay, delayWhy: "connect"}
		}
	}
	return c
}

func (c *conn) matchCtx(stage Stage) *matchCtx {
	m := &matchCtx{stage: stage, conn: c.id, client: c.client, helo: c.helo, elapsed: c.srv.cfg.Now().Sub(c.srv.started)}
	if c.sess != nil && c.sess.tx != nil {
		m.sender = c.sess.tx.MailFrom
		for _, r := range c.sess.tx.Rcpts {
			if r.Reply.Code/100 == 2 {
				m.rcpts = append(m.rcpts, r.Addr)
			}
		}
	}
	return m
}

// Read hands go-smtp processed input, reading from the wire when needed.
// It returns at most one command line per call, so each tap-level decision
// is taken after go-smtp has handled every earlier (pipelined) command.
func (c *conn) Read(p []byte) (int, error) {
	for len(c.out) == 0 {
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
			if len(c.out) > 0 {
				break
			}
		}
		n, err := c.cur.Read(c.scratch)
		if n > 0 {
			c.inbuf = append(c.inbuf, c.scratch[:n]...)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) && (c.mode == modeBDAT || c.mode == modeData) {
				// The client is gone inside a chunk: go-smtp reads a chunk
				// through an io.LimitReader, which would take a plain EOF for
				// the chunk's end and accept a cut BDAT LAST as a whole message.
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	if len(c.out) == 0 {
		c.out = c.out[:0:0]
	}
	return n, nil
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
		c.out = append(c.out, c.inbuf[:n]...)
		c.inbuf = c.inbuf[n:]
		c.bdatLeft -= n
		if c.bdatLeft == 0 {
			c.mode = modeCommand
		}
	case modeCommand:
		i := bytes.IndexByte(c.inbuf, '\n')
		if i < 0 {
			if len(c.inbuf) > c.srv.cfg.MaxLineLength+2 {
				// Too long to be a command: let go-smtp reject it.
				c.journalCommand(string(c.inbuf[:64]) + "...")
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

// processData passes body bytes through until the line with a lone dot.
// It finds the end exactly where go-smtp's data reader does (CRLF "." CRLF,
// RFC 5321 4.1.1.4): a "." line after a bare LF or CR is body, and what
// follows it must not be taken for commands.
func (c *conn) processData() {
	const (
		lineStart = iota // after CRLF (or right after the 354)
		dot
		dotCR
		cr
		midLine
	)
	for i, b := range c.inbuf {
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
				c.out = append(c.out, c.inbuf[:i+1]...)
				c.inbuf = c.inbuf[i+1:]
				c.mode, c.dataSt = modeHold, lineStart // the final reply comes next
				return
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
	c.out = append(c.out, c.inbuf...)
	c.inbuf = c.inbuf[:0]
}

// command journals one command line and applies tap-level policy.
func (c *conn) command(line []byte) {
	text := strings.TrimRight(string(line), "\r\n")
	c.cmdSeq++
	n := c.cmdSeq
	c.journalCommand(text)
	verb, arg, _ := strings.Cut(text, " ")
	verb = strings.ToUpper(verb)
	c.verbs[n] = verb
	if len(c.verbs) > 64 {
		for k := range c.verbs {
			if k < n-32 {
				delete(c.verbs, k)
			}
		}
	}
	var stage Stage
	switch verb {
	case "EHLO", "HELO", "LHLO":
		stage = StageHelo
		c.helo = strings.TrimSpace(arg)
	case "STARTTLS":
		stage = StageStartTLS
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
	mc := c.matchCtx(stage)
	if stage == StageData && c.sess != nil {
		mc.attempts = c.sess.countStage(StageData, mc.rcpts)
	}
	act := c.srv.decide(mc)
	noop := []byte("NOOP\r\n")
	tlsOn := c.srv.cfg.TLS != nil && !c.tls
	if act != nil {
		switch act.Action {
		case ActionReply:
			if stage == StageStartTLS && act.Reply.Code == 220 && tlsOn {
				c.ovr[n] = &override{reply: act.Reply, startTLS: true}
				c.out = append(c.out, noop...)
				c.mode = modeHold
				return
			}
			if act.Reply.Code/100 == 2 && stage != StageQuit {
				break // a 2xx reply is go-smtp's own answer; let the command through
			}
			c.ovr[n] = &override{reply: act.Reply, closeAfter: stage == StageQuit}
			c.out = append(c.out, noop...)
			return
		case ActionClose:
			c.ovr[n] = &override{reply: act.Reply, closeAfter: true}
			c.out = append(c.out, noop...)
			return
		case ActionDrop:
			c.ovr[n] = &override{drop: true}
			c.out = append(c.out, noop...)
			return
		case ActionDelay:
			c.ovr[n] = &override{delay: act.Delay, delayWhy: string(stage)}
		case ActionTLS:
			if tlsOn {
				c.ovr[n] = &override{reply: &Reply{Code: 220, Enhanced: "2.0.0", Text: "Ready to start TLS"}, startTLS: true, tlsFail: true}
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
				c.ovr[n] = o
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

// Write collects go-smtp's reply lines and sends each complete reply,
// after applying any override.
func (c *conn) Write(p []byte) (int, error) {
	c.wbuf = append(c.wbuf, p...)
	for {
		// A reply ends with a line whose 4th byte is a space ("250 ok").
		end := -1
		for start := 0; start < len(c.wbuf); {
			i := bytes.IndexByte(c.wbuf[start:], '\n')
			if i < 0 {
				break
			}
			line := c.wbuf[start : start+i+1]
			start += i + 1
			if len(line) < 4 || line[3] != '-' {
				end = start
				break
			}
		}
		if end < 0 {
			return len(p), nil
		}
		reply := append([]byte(nil), c.wbuf[:end]...)
		c.wbuf = c.wbuf[end:]
		if err := c.sendReply(reply); err != nil {
			return 0, err
		}
	}
}

// sendReply applies the override for this reply and writes it.
func (c *conn) sendReply(wire []byte) error {
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
		o = &override{delay: o.delay, delayWhy: o.delayWhy}
		delete(c.ovr, c.replySeq)
	} else {
		o = nil
	}
	if o != nil && o.delay > 0 {
		c.srv.record(Event{Kind: EventControl, Conn: c.id, Client: c.client, Note: fmt.Sprintf("tarpit %s at %s", o.delay, o.delayWhy)}, false)
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
	if n > 0 && (c.verbs[n] == "EHLO" || c.verbs[n] == "LHLO") && code == 250 && (o == nil || o.reply == nil) {
		wire = c.ehloCapabilities(wire)
	}
	if code == 354 {
		c.mode, c.dataSt = modeData, 0
	} else if c.mode == modeHold && !(o != nil && o.startTLS) {
		c.mode = modeCommand
	}
	c.journalReply(parseWireReply(wire))
	if _, err := c.cur.Write(wire); err != nil {
		return err
	}
	if o != nil && o.startTLS {
		return c.upgrade(o.tlsFail)
	}
	if o != nil && o.closeAfter {
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
		c.inbuf = nil
	}
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
	c.srv.record(Event{Kind: EventReply, Conn: c.id, Client: c.client, TLS: c.tls, Reply: &r}, false)
}

// formatReply writes r as one SMTP reply line.
func formatReply(r Reply) []byte {
	if r.Enhanced != "" {
		return []byte(fmt.Sprintf("%d %s %s\r\n", r.Code, r.Enhanced, r.Text))
	}
	return []byte(fmt.Sprintf("%d %s\r\n", r.Code, r.Text))
}

// parseWireReply reads a (possibly multi-line) reply as written.
func parseWireReply(wire []byte) Reply {
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
