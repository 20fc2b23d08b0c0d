// Package traffic submits the harness's messages to the relay under test.
// Every message carries a unique Message-ID and X-Greyharness-Id header, and
// by default a unique envelope sender (local+gh-ID@domain) so the ledger can
// follow attempts that never reach DATA.
package traffic

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
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

// Send submits m in one SMTP conversation and reports what the relay said.
func (s *Submitter) Send(m *Message) history.Submission {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	sub := history.Submission{HarnessID: m.HarnessID, MessageID: m.MessageID, Group: m.Group, MailFrom: m.From,
		RcptTo: append([]string(nil), m.To...), SubmittedAt: now()}
	err := s.send(m, now)
	sub.Reply = replyOf(err)
	sub.Accepted = err == nil
	if err == nil {
		sub.Reply = fakemta.Reply{Code: 250, Text: "accepted"}
	}
	return sub
}

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

func (s *Submitter) send(m *Message, now func() time.Time) error {
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	nc, err := net.DialTimeout("tcp", s.Submit.Addr, timeout)
	if err != nil {
		return err
	}
	nc.SetDeadline(time.Now().Add(timeout))
	if m.EHLOTwice {
		nc = &doubleEHLOConn{Conn: nc}
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
	defer c.Close()
	helo := s.Submit.Helo
	if helo == "" {
		helo = "harness.greyharness.test"
	}
	if err := c.Hello(helo); err != nil {
		return err
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
	for _, r := range m.To {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(m.Build(now())); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// SendAll submits msgs with up to concurrency conversations at once, in
// order of msgs within each worker; results come back in msgs' order.
func (s *Submitter) SendAll(msgs []*Message, concurrency int) []history.Submission {
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
				out[i] = s.Send(msgs[i])
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
