// Package traffic submits the harness's messages to the relay under test.
// Every message carries a unique Message-ID and X-Greyharness-Id header, and
// by default a unique envelope sender (local+gh-ID@domain) so the ledger can
// follow attempts that never reach DATA.
package traffic

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

// Message is one message to submit.
type Message struct {
	HarnessID string
	MessageID string
	Group     string
	From      string // envelope sender
	To        []string
	Size      int
	Headers   map[string]string
	// Submission-side double handshake variants.
	EHLOTwice      bool
	RsetBeforeMail bool
}

// Submitter submits messages to a relay's submission address.
type Submitter struct {
	Submit  profile.Submit
	Now     func() time.Time
	Timeout time.Duration // per SMTP conversation (default 30s)
}

// NewID returns a fresh harness id ("gh-" + 12 hex digits).
func NewID() string {
	var b [6]byte
	rand.Read(b[:])
	return "gh-" + hex.EncodeToString(b[:])
}

// TagSender makes addr unique to a message: local+ID@domain.
func TagSender(addr, id string) string {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		return addr
	}
	return local + "+" + id + "@" + domain
}

// Build returns the RFC 5322 message text.
func (m *Message) Build(now time.Time) []byte {
	var b strings.Builder
	hdr := map[string]string{
		"From":             "<" + m.From + ">",
		"To":               strings.Join(m.To, ", "),
		"Subject":          "greyharness " + m.Group + " " + m.HarnessID,
		"Date":             now.Format(time.RFC1123Z),
		"Message-ID":       "<" + m.MessageID + ">",
		"X-Greyharness-Id": m.HarnessID,
		"MIME-Version":     "1.0",
		"Content-Type":     "text/plain; charset=us-ascii",
	}
	for k, v := range m.Headers {
		hdr[k] = v
	}
	keys := make([]string, 0, len(hdr))
	for k := range hdr {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "%s: %s\r\n", k, hdr[k])
	}
	b.WriteString("\r\n")
	line := "greyharness test message " + m.HarnessID + " abcdefghijklmnopqrstuvwxyz0123456789\r\n"
	size := m.Size
	if size <= 0 {
		size = 1024
	}
	for b.Len() < size {
		b.WriteString(line)
	}
	return []byte(b.String())
}

// Send submits m in one SMTP conversation and records what the relay said:
// its reply to each RCPT and to the final dot. The message goes to the
// recipients the relay accepted; it is accepted when the final dot gets 2xx,
// whatever QUIT does afterwards (RFC 5321 §6.1). A line that drops after
// the final dot without a reply leaves the outcome unknown (RFC 1047).
//
// When ctx ends the conversation is cut (the connection is closed), so a
// relay that never answers cannot hold a spec past its timeout; the
// submission then records the network error, or Unknown after the dot.
func (s *Submitter) Send(ctx context.Context, m *Message) history.Submission {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sub := history.Submission{HarnessID: m.HarnessID, MessageID: m.MessageID, Group: m.Group, MailFrom: m.From,
		RcptTo: append([]string(nil), m.To...), SubmittedAt: now()}
	if err := s.send(ctx, m, now, &sub); err != nil {
		sub.Reply = replyOf(err)
	}
	return sub
}

// replyOf turns an error of the go-smtp client into the reply it carries,
// or, for a network or protocol error, Code 0 with the error's text.
func replyOf(err error) fakemta.Reply {
	if err == nil {
		return fakemta.Reply{}
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		r := fakemta.Reply{Code: se.Code, Text: se.Message}
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
			r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return r
	}
	return fakemta.Reply{Code: 0, Text: err.Error()}
}

// isReply reports whether err is a reply of the relay (not a network or
// protocol failure).
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se)
}

// splitEnhanced splits "2.0.0 Ok: queued as X" into the enhanced code
// and the text (RFC 3463); text without one is returned whole.
func splitEnhanced(text string) (enhanced, rest string) {
	first, after, ok := strings.Cut(text, " ")
	if !ok {
		first, after = text, ""
	}
	parts := strings.Split(first, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || strings.IndexByte("245", parts[0][0]) < 0 {
		return "", text
	}
	for _, p := range parts[1:] {
		if p == "" || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return "", text
		}
	}
	return first, after
}

// replyTap records the relay's reply lines to one command from the
// client's debug stream (which carries both directions, after STARTTLS
// too): go-smtp returns no text for a 2xx RCPT reply.
type replyTap struct {
	on  bool
	buf bytes.Buffer
}

func (t *replyTap) Write(p []byte) (int, error) {
	if t.on {
		t.buf.Write(p)
	}
	return len(p), nil
}

func (t *replyTap) start() { t.buf.Reset(); t.on = true }

// reply stops recording and parses the reply lines recorded ("250-..",
// "250 .."); the client's own command lines are skipped.
func (t *replyTap) reply() (fakemta.Reply, bool) {
	t.on = false
	var r fakemta.Reply
	var texts []string
	found := false
	for _, l := range strings.Split(t.buf.String(), "\n") {
		l = strings.TrimRight(l, "\r")
		if len(l) < 3 || strings.Trim(l[:3], "0123456789") != "" || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			continue
		}
		r.Code = int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
		found = true
		if len(l) > 4 {
			texts = append(texts, l[4:])
		}
	}
	r.Text = strings.Join(texts, "\n")
	if enh, rest := splitEnhanced(r.Text); enh != "" {
		r.Enhanced, r.Text = enh, strings.ReplaceAll(rest, "\n"+enh+" ", "\n")
	}
	return r, found
}

// send runs the conversation and fills sub. It returns the error that
// ended a submission that was not accepted (sub.Reply is then its reply);
// an accepted or unknown outcome has sub.Reply set and returns nil.
func (s *Submitter) send(ctx context.Context, m *Message, now func() time.Time, sub *history.Submission) (err error) {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	defer func() {
		if err != nil && !isReply(err) && ctx.Err() != nil {
			err = fmt.Errorf("submission aborted (%w): %w", context.Cause(ctx), err)
		}
	}()
	nc, err := (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", s.Submit.Addr)
	if err != nil {
		return err
	}
	// Closing the connection unblocks whatever go-smtp waits on.
	defer context.AfterFunc(ctx, func() { nc.Close() })()
	nc.SetDeadline(time.Now().Add(timeout))
	var double *doubleEHLOConn
	if m.EHLOTwice || m.RsetBeforeMail {
		double = &doubleEHLOConn{Conn: nc, twice: m.EHLOTwice}
		nc = double
	}
	var c *smtp.Client
	if s.Submit.StartTLS {
		c, err = smtp.NewClientStartTLS(nc, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			nc.Close()
			return err
		}
	} else {
		c = smtp.NewClient(nc)
	}
	// go-smtp sets a deadline per command (CommandTimeout); keep ours.
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	tap := &replyTap{}
	c.DebugWriter = tap
	defer c.Close()
	helo := s.Submit.Helo
	if helo == "" {
		helo = "harness.greyharness.test"
	}
	if err := c.Hello(helo); err != nil {
		return err
	}
	if double != nil {
		sub.SecondEHLO = double.refused
	}
	if s.Submit.Username != "" {
		if err := c.Auth(sasl.NewPlainClient("", s.Submit.Username, s.Submit.Password)); err != nil {
			return err
		}
	}
	if m.RsetBeforeMail {
		if err := c.Reset(); err != nil {
			return err
		}
	}
	if err := c.Mail(m.From, nil); err != nil {
		return err
	}
	var refusal error
	accepted := 0
	for _, r := range m.To {
		tap.start()
		err := c.Rcpt(r, nil)
		rep, ok := tap.reply()
		switch {
		case err == nil:
			if !ok {
				rep = fakemta.Reply{Code: 250} // (no debug stream: cannot happen with go-smtp v0.25)
			}
			accepted++
		case isReply(err):
			rep = replyOf(err)
			if refusal == nil {
				refusal = err
			}
		default:
			return err // the line dropped: nothing more to say
		}
		sub.Rcpts = append(sub.Rcpts, history.RcptReply{Addr: r, Reply: rep})
	}
	if accepted == 0 {
		c.Quit()
		return refusal
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	nc.SetDeadline(time.Now().Add(timeout)) // go-smtp clears its deadline after each command
	if _, err := w.Write(m.Build(now())); err != nil {
		return err
	}
	resp, err := w.CloseWithResponse()
	switch {
	case err == nil:
		sub.Accepted = true
		sub.Reply = fakemta.Reply{Code: 250}
		sub.Reply.Enhanced, sub.Reply.Text = splitEnhanced(resp.StatusText)
	case isReply(err) && replyOf(err).Code/100 == 2: // 251..259: go-smtp expects exactly 250
		sub.Accepted, sub.Reply = true, replyOf(err)
	case isReply(err):
		return err
	default:
		// The body went out but no reply to the final dot came back: the
		// relay may or may not own the message. Record that, never guess.
		if ctx.Err() != nil {
			err = fmt.Errorf("submission aborted (%w): %w", context.Cause(ctx), err)
		}
		sub.Unknown = true
		sub.Reply = fakemta.Reply{Dropped: true, Text: "no reply to the final dot: " + err.Error()}
		var pe textproto.ProtocolError
		if errors.As(err, &pe) {
			sub.Reply = fakemta.Reply{Text: "unreadable reply to the final dot: " + err.Error()}
		}
		return nil
	}
	// Accepted: QUIT is courtesy. A relay that drops the line or answers
	// badly now still owns the message; note it, nothing more.
	if err := c.Quit(); err != nil {
		r := replyOf(err)
		sub.Quit = strings.TrimSpace(fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text))
		if r.Code == 0 {
			sub.Quit = "QUIT: " + r.Text
		} else {
			sub.Quit = "QUIT: " + sub.Quit
		}
	}
	return nil
}

// SendAll submits msgs with up to concurrency conversations at once, in
// order of msgs within each worker; results come back in msgs' order.
// A ctx that ends aborts the conversations under way and the ones not
// yet begun fail at once, each recorded with its error.
func (s *Submitter) SendAll(ctx context.Context, msgs []*Message, concurrency int) []history.Submission {
	if concurrency < 1 {
		concurrency = 1
	}
	out := make([]history.Submission, len(msgs))
	var wg sync.WaitGroup
	next := make(chan int)
	for range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = s.Send(ctx, msgs[i])
			}
		}()
	}
	for i := range msgs {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}
