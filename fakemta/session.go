package fakemta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/greyharness/greyharness/fakemta/dsn"
)

// maxDSNBytes bounds how much of a null-sender message is kept in memory
// to parse it as a DSN; larger ones are journaled but not parsed.
const maxDSNBytes = 4 << 20

// session is one SMTP session (from EHLO to QUIT) on a tapped connection.
type session struct {
	srv *Server
	c   *conn
	// mu guards tx. Data holds it for its whole run: with BDAT, go-smtp runs
	// Data in a goroutine of its own and may call Reset or Logout (RSET,
	// EHLO, QUIT, a cut line) while it runs; they first close the chunk
	// pipe, so Data ends soon and they wait for it.
	mu sync.Mutex
	tx *Transaction
	// scope is the open transaction's tenant: its sender's, else its first
	// tenant recipient's; nil for none (the server's own policy).
	scope *tenant
	// bodyHead is the start of the last body after its header, as much as
	// a greylist body key hashes (rspamd's max_data_len).
	bodyHead []byte
}

var _ smtp.Session = (*session)(nil)

func (s *Server) newSession(sc *smtp.Conn) (smtp.Session, error) {
	c, ok := sc.Conn().(*conn)
	if !ok {
		return nil, errors.New("fakemta: connection is not tapped")
	}
	c.helo = sc.Hostname()
	sess := &session{srv: s, c: c}
	c.sess = sess
	return sess, nil
}

func smtpError(r *Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text}
	if r.Enhanced != "" {
		parts := strings.Split(r.Enhanced, ".")
		for i := range 3 {
			e.EnhancedCode[i], _ = strconv.Atoi(parts[i])
		}
	} else {
		e.EnhancedCode = smtp.NoEnhancedCode
	}
	return e
}

// act carries out a rule at a backend stage: it returns the reply to give
// (nil: go on with the default) and the error go-smtp should answer with.
func (se *session) act(rule *Rule, t *tenant) (*Reply, error) {
	if rule == nil {
		return nil, nil
	}
	switch rule.Action {
	case ActionAccept:
		return &Reply{Code: 250, Enhanced: "2.0.0", Text: "OK"}, nil
	case ActionReply:
		if rule.Reply.Code/100 == 2 {
			return rule.Reply, nil
		}
		return rule.Reply, smtpError(rule.Reply)
	case ActionClose:
		se.c.next = &override{closeAfter: true}
		return rule.Reply, smtpError(rule.Reply)
	case ActionDrop:
		se.c.next = &override{drop: true}
		r := &Reply{Dropped: true}
		return r, smtpError(&Reply{Code: 421, Enhanced: "4.4.2", Text: "dropped"})
	case ActionDelay:
		se.srv.record(Event{Kind: EventControl, Conn: se.c.id, Client: se.c.client, Tenant: t.name, Note: "tarpit " + rule.Delay.String() + " at " + string(rule.Match.Stage)}, false)
		t := time.NewTimer(rule.Delay)
		select {
		case <-t.C:
		case <-se.c.closed:
			t.Stop()
			return &Reply{Dropped: true}, smtpError(&Reply{Code: 421, Enhanced: "4.4.2", Text: "closed"})
		}
	}
	return nil, nil
}

func (se *session) greylist(t *tenant) *Greylist { return t.policy.Load().Greylist }

// key is rcpt's attempt-counter triplet in t (addresses without t's label).
func (se *session) key(t *tenant, rcpt string) tripletKey {
	v4, v6 := 24, 64
	if gl := se.greylist(t); gl != nil {
		v4, v6 = gl.SubnetV4, gl.SubnetV6
	}
	from := ""
	if se.tx != nil {
		from = strip(t, se.tx.MailFrom)
	}
	return tripletKey{subnetOf(se.c.client, v4, v6), lower(from), lower(strip(t, rcpt))}
}

// mx is the MX host the session's greylist keys belong to: its listener
// address when MX hosts keep split state (t's policy says, unless the
// server's configuration does), else "" (one greylist).
func (se *session) mx(t *tenant) string {
	state := se.srv.cfg.MXState
	if m := t.policy.Load().MX; state == "" && m != nil {
		state = m.State
	}
	if state == MXSplit {
		return se.c.local
	}
	return ""
}

// greyInput is the key input of the open transaction.
func (se *session) greyInput(t *tenant) greyInput {
	in := greyInput{mx: se.mx(t), client: se.c.client, helo: se.c.helo}
	if se.tx != nil {
		in.sender = strip(t, se.tx.MailFrom)
	}
	return in
}

// storeFailReply answers when the greylist store cannot: never a 250
// without a record of the decision.
var storeFailReply = Reply{Code: 451, Enhanced: "4.3.0", Text: "Greylist store unavailable, try again later"}

// greyCheck asks the store; a store failure is journaled (a control event
// "greylist-store: ERR") and comes back as the outcome "error".
func (se *session) greyCheck(t *tenant, gl *Greylist, k greyKey, now time.Time) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), greyStoreTimeout)
	defer cancel()
	outcome, left, err := t.store.check(ctx, gl, k, now)
	if err != nil {
		se.srv.record(Event{Kind: EventControl, Conn: se.c.id, Client: se.c.client, Tenant: t.name, Note: "greylist-store: " + err.Error()}, false)
		return greyError, 0, err
	}
	return outcome, left, nil
}

// setGrey records a greylist outcome and its keys on a recipient.
func setGrey(ra *RcptAttempt, outcome string, k greyKey) {
	ra.Greylist, ra.Key, ra.BodyKey, ra.WhitelistKey = outcome, k.ID, k.Body, k.Whitelist
}

// countStage bumps and returns the per-recipient counters for stage.
func (se *session) countStage(t *tenant, stage Stage, rcpts []string) []int {
	now := se.srv.cfg.Now()
	out := make([]int, len(rcpts))
	for i, r := range rcpts {
		out[i] = t.grey.count(se.key(t, r), stage, now)
	}
	return out
}

// Mail starts a transaction.
func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	se.mu.Lock()
	defer se.mu.Unlock()
	se.finish("rset")
	se.tx = &Transaction{Helo: se.c.helo, MailFrom: from, MX: se.c.local}
	se.scope = se.srv.tenantOf(from)
	t := se.srv.scope(se.scope)
	m := se.c.matchCtx(StageMail, t)
	m.sender = strip(t, from)
	reply, err := se.act(se.srv.decide(&m), t)
	if reply == nil {
		reply = &Reply{Code: 250, Enhanced: "2.1.0", Text: "Sender OK"}
	}
	se.tx.Mail = *reply
	if err != nil {
		se.finish("")
		return err
	}
	se.say(reply)
	return nil
}

// say makes go-smtp's success reply carry the text the journal records
// (go-smtp writes its own words for a nil error).
func (se *session) say(r *Reply) {
	if se.c.next == nil {
		se.c.next = &override{reply: r}
	}
}

// Rcpt decides one recipient: rules first, then the greylist.
func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.tx == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	now := se.srv.cfg.Now()
	// Each recipient is decided by its own tenant; the transaction is
	// its sender's tenant's, else its first tenant recipient's.
	rt := se.srv.tenantOf(to)
	if rt == nil {
		rt = se.scope
	} else if se.scope == nil {
		se.scope = rt
	}
	t := se.srv.scope(rt)
	k := se.key(t, to)
	attempt := t.grey.count(k, StageRcpt, now)
	m := se.c.matchCtx(StageRcpt, t)
	m.rcpts, m.attempts = []string{strip(t, to)}, []int{attempt}
	ra := RcptAttempt{Addr: to, Attempt: attempt}
	rule := se.srv.decide(&m)
	reply, err := se.act(rule, t)
	if reply == nil && (rule == nil || rule.Action == ActionDelay) {
		if gl := se.greylist(t); gl != nil && gl.Stage != StageEOD {
			in := se.greyInput(t)
			in.rcpt = strip(t, to)
			gk := gl.buildKey(in)
			outcome, left, serr := se.greyCheck(t, gl, gk, now)
			setGrey(&ra, outcome, gk)
			switch {
			case serr != nil:
				reply, err = &storeFailReply, smtpError(&storeFailReply)
			case outcome == greyDeferred:
				r := greylistReply(gl, left, to)
				reply, err = &r, smtpError(&r)
			}
		}
	}
	if reply == nil {
		reply = &Reply{Code: 250, Enhanced: "2.1.5", Text: "Recipient OK"}
	}
	ra.Reply = *reply
	se.tx.Rcpts = append(se.tx.Rcpts, ra)
	if err == nil {
		se.say(reply)
	}
	return err
}

// accepted lists the recipients that got a 2xx at RCPT.
func (se *session) accepted() []string {
	var out []string
	for _, r := range se.tx.Rcpts {
		if r.Reply.Code/100 == 2 {
			out = append(out, r.Addr)
		}
	}
	return out
}

// Data receives the body, journals the message durably, then decides the
// reply to the final dot (rules at eod, then an eod-stage greylist).
func (se *session) Data(r io.Reader) error {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.tx == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL first"}
	}
	now := se.srv.cfg.Now
	msg, bodyErr, readErr := se.receive(r)
	rcpts := se.accepted()
	if readErr != nil {
		if errors.Is(readErr, smtp.ErrDataReset) {
			f := se.c.takeBodyFail()
			if f == nil {
				// BDAT cut short by RSET, EHLO, QUIT or a lost line: no reply
				// is given to it; Reset or Logout ends the transaction.
				return readErr
			}
			// A chunk the tap could not read: go-smtp has answered it
			// with the tap's reply (failBody) and closed the pipe.
			readErr = f
		}
		e := bodyError(readErr)
		if e != readErr {
			// Only the DATA path (Data on go-smtp's own goroutine) gets here.
			se.c.next = &override{closeAfter: true}
		}
		// The journal records the very reply go-smtp writes for e.
		rep := Reply{Code: e.Code, Enhanced: enhancedString(e.EnhancedCode), Text: e.Message}
		se.tx.Data = &rep
		se.finish("")
		return e
	}
	t := se.srv.scope(se.scope)
	m := se.c.matchCtx(StageEOD, t)
	m.rcpts, m.attempts = stripAll(t, rcpts), se.countStage(t, StageEOD, rcpts)
	rule := se.srv.decide(&m)
	reply, err := se.act(rule, t)
	if reply == nil && (rule == nil || rule.Action == ActionDelay) {
		if gl := se.greylist(t); gl != nil && gl.Stage == StageEOD && len(rcpts) > 0 {
			var worst time.Duration
			deferredRcpt, failed := "", false
			apply := func(rcpt string, outcome string, k greyKey, left time.Duration) {
				for j := range se.tx.Rcpts {
					if se.tx.Rcpts[j].Addr == rcpt && se.tx.Rcpts[j].Reply.Code/100 == 2 {
						setGrey(&se.tx.Rcpts[j], outcome, k)
					}
				}
				if outcome == greyDeferred && (deferredRcpt == "" || left > worst) {
					deferredRcpt, worst = rcpt, max(worst, left)
				}
			}
			in := se.greyInput(t)
			if gl.perMessage() {
				// One record for the whole message (rspamd, Exim).
				in.rcpts, in.messageID, in.body = stripAll(t, rcpts), msg.MessageID, se.bodyHead
				k := gl.buildKey(in)
				outcome, left, serr := se.greyCheck(t, gl, k, now())
				failed = failed || serr != nil
				for _, rc := range rcpts {
					apply(rc, outcome, k, left)
				}
			} else {
				for _, rc := range rcpts {
					in.rcpt = strip(t, rc)
					k := gl.buildKey(in)
					outcome, left, serr := se.greyCheck(t, gl, k, now())
					failed = failed || serr != nil
					apply(rc, outcome, k, left)
				}
			}
			switch {
			case failed:
				reply, err = &storeFailReply, smtpError(&storeFailReply)
			case deferredRcpt != "":
				r := greylistReply(gl, worst, deferredRcpt)
				reply, err = &r, smtpError(&r)
			}
		}
	}
	if reply == nil {
		reply = &Reply{Code: 250, Enhanced: "2.0.0", Text: "OK: queued as " + msg.ID}
	}
	if bodyErr != nil && reply.Code/100 == 2 {
		// The body is part of the record: not kept, not accepted.
		r := recordFailure(bodyErr)
		reply, err = &r, smtpError(&r)
		se.srv.metrics.recordFailed("body")
	}
	msg.Accepted = reply.Code/100 == 2 && !reply.Dropped
	se.tx.Data = reply
	se.tx.Message = msg
	// Durable before the reply leaves: after 250 the message must not
	// vanish. If it cannot be recorded the client is told so instead.
	if derr := se.finishDurable(""); derr != nil && reply.Code/100 == 2 && !reply.Dropped {
		if msg.BodyPath != "" {
			os.Remove(msg.BodyPath) // refused: the relay sends it again
		}
		r := recordFailure(derr)
		return smtpError(&r)
	}
	if err == nil {
		se.say(reply)
	}
	return err
}

// bodyError is the reply to a body that could not be read: err itself when
// it is one already (the size limit, the tap's failBody), else a new one
// (go-smtp would answer a plain error with a permanent 554, which the
// journal could not know).
func bodyError(err error) *smtp.SMTPError {
	var e *smtp.SMTPError
	switch {
	case errors.As(err, &e):
		return e
	case errors.Is(err, smtp.ErrTooLongLine):
		// go-smtp's words for a too-long command line; it cuts the line too.
		return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 4, 0}, Message: "Too long line, closing connection"}
	default:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Error reading the message, closing connection"}
	}
}

func enhancedString(e smtp.EnhancedCode) string {
	if e == smtp.NoEnhancedCode || e == (smtp.EnhancedCode{}) {
		return ""
	}
	return strconv.Itoa(e[0]) + "." + strconv.Itoa(e[1]) + "." + strconv.Itoa(e[2])
}

// receive reads the body: hash, size, identifying headers, the body to
// disk with --keep-bodies, and a DSN parse for null-sender messages.
// bodyErr says --keep-bodies could not keep the body (the file is removed).
func (se *session) receive(r io.Reader) (msg *Message, bodyErr error, readErr error) {
	id := "m" + strconv.FormatUint(se.srv.msgSeq.Add(1), 36) + "-" + strconv.FormatInt(se.srv.cfg.Now().UnixNano()%1e9, 36)
	msg = &Message{ID: id, MailFrom: se.tx.MailFrom, RcptTo: se.accepted(), MX: se.c.local}
	h := sha256.New()
	rb := recvBufs.Get().(*recvBuf)
	defer rb.put()
	head := &rb.head // header block, bounded
	var dsnBuf *bytes.Buffer
	if se.tx.MailFrom == "" {
		dsnBuf = &bytes.Buffer{}
	}
	w, path, err := se.srv.keepBody(id)
	if err != nil {
		bodyErr = err
	}
	msg.BodyPath = path
	// The body key (rspamd) hashes the start of the body after the header.
	bodyWant := 0
	if gl := se.greylist(se.srv.scope(se.scope)); gl != nil {
		bodyWant = gl.BodyKey
	}
	bh := bodyHead{want: bodyWant}
	defer func() { se.bodyHead = bh.body }()
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	inHead := true
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			chunk := buf[:n]
			h.Write(chunk)
			msg.Size += int64(n)
			if bodyWant > 0 {
				bh.write(chunk)
			}
			if inHead && head.Len() < 256<<10 {
				head.Write(chunk)
				if bytes.Contains(head.Bytes(), []byte("\r\n\r\n")) || bytes.Contains(head.Bytes(), []byte("\n\n")) {
					inHead = false
				}
			}
			if dsnBuf != nil {
				if dsnBuf.Len()+n <= maxDSNBytes {
					dsnBuf.Write(chunk)
				} else {
					dsnBuf = nil
				}
			}
			if w != nil {
				if _, werr := w.Write(chunk); werr != nil {
					bodyErr = werr
					w.Close()
					w = nil
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if w != nil {
				w.Close()
			}
			return msg, nil, rerr
		}
	}
	if w != nil {
		if f, ok := w.(interface{ Sync() error }); ok {
			bodyErr = f.Sync()
		}
		if cerr := w.Close(); bodyErr == nil {
			bodyErr = cerr
		}
	}
	if path != "" {
		if bodyErr != nil {
			se.srv.cfg.Logf("keep body: %v", bodyErr)
			os.Remove(path) // a partial body must not pass for the message
			msg.BodyPath = ""
		}
		se.srv.journal.noteBody(bodyErr)
	} else if bodyErr != nil {
		se.srv.cfg.Logf("keep body: %v", bodyErr)
		se.srv.journal.noteBody(bodyErr)
	}
	msg.SHA256 = hex.EncodeToString(h.Sum(nil))
	msg.ReceivedAt = se.srv.cfg.Now()
	head.WriteString("\r\n\r\n") // ends a header block cut short
	rb.rd.Reset(head.Bytes())
	rb.br.Reset(&rb.rd)
	if hdr, err := mail.ReadMessage(rb.br); err == nil {
		msg.MessageID = strings.Trim(strings.TrimSpace(hdr.Header.Get("Message-Id")), "<>")
		msg.HarnessID = strings.TrimSpace(hdr.Header.Get("X-Greyharness-Id"))
		msg.Subject = hdr.Header.Get("Subject")
	}
	if dsnBuf != nil {
		if rep, err := dsn.Parse(bytes.NewReader(dsnBuf.Bytes())); err == nil {
			msg.DSN = rep
		}
	}
	return msg, bodyErr, nil
}

// bodyHead collects the first want bytes after the header block; pre
// keeps the message's start until the blank line is found (a header over
// 256 KiB counts as body).
type bodyHead struct {
	want  int
	pre   []byte
	found bool
	body  []byte
}

func (c *bodyHead) write(chunk []byte) {
	if c.found {
		if n := c.want - len(c.body); n > 0 {
			c.body = append(c.body, chunk[:min(n, len(chunk))]...)
		}
		return
	}
	c.pre = append(c.pre, chunk...)
	i, sep := bytes.Index(c.pre, []byte("\r\n\r\n")), 4
	if j := bytes.Index(c.pre, []byte("\n\n")); j >= 0 && (i < 0 || j < i) {
		i, sep = j, 2
	}
	switch {
	case i >= 0:
		rest := c.pre[i+sep:]
		c.body = append(c.body, rest[:min(c.want, len(rest))]...)
	case len(c.pre) > 256<<10:
		c.body = append(c.body, c.pre[:c.want]...)
	default:
		return
	}
	c.found, c.pre = true, nil
}

// bodyBufs recycles the buffers bodies are read through (one per message).
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// recvBuf is the rest of receive's per-message scratch: the header block
// and the reader its headers are parsed through.
type recvBuf struct {
	head bytes.Buffer
	rd   bytes.Reader
	br   *bufio.Reader
}

var recvBufs = sync.Pool{New: func() any { return &recvBuf{br: bufio.NewReader(nil)} }}

func (rb *recvBuf) put() {
	if rb.head.Cap() > 512<<10 {
		return // an unusual header block: let it go
	}
	rb.head.Reset()
	rb.rd.Reset(nil)
	rb.br.Reset(nil)
	recvBufs.Put(rb)
}

// finish ends the open transaction (if any) and journals it.
func (se *session) finish(aborted string) { se.end(aborted, false) }

// finishDurable journals the transaction durably; the error says it could
// not be recorded (the journal then holds it with the failure reply).
func (se *session) finishDurable(aborted string) error { return se.end(aborted, true) }

func (se *session) end(aborted string, durable bool) error {
	tx := se.tx
	if tx == nil {
		return nil
	}
	t := se.srv.scope(se.scope)
	se.tx, se.scope = nil, nil
	if tx.Data == nil && aborted != "" {
		tx.Aborted = aborted
	}
	ev := Event{Kind: EventTransaction, Conn: se.c.id, Client: se.c.client, TLS: se.c.tls, Tenant: t.name, Transaction: tx}
	if tx.Message != nil {
		se.c.budget.reset() // a message: the connection's bounds start again
	}
	if durable {
		_, err := se.srv.recordDurable(ev)
		return err
	}
	se.srv.record(ev, false)
	return nil
}

// Reset ends an open transaction (RSET, a new EHLO, or after DATA).
func (se *session) Reset() {
	se.mu.Lock()
	defer se.mu.Unlock()
	se.finish("rset")
}

// Logout ends an open transaction when the connection goes.
func (se *session) Logout() error {
	se.mu.Lock()
	defer se.mu.Unlock()
	if se.c.quitSeen {
		se.finish("quit")
	} else {
		se.finish("disconnect")
	}
	return nil
}
