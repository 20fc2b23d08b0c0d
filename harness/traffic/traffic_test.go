package traffic

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

// script is how the scripted relay below behaves after the final dot, per
// recipient, and around EHLO.
type script struct {
	rcpt  map[string]string // RCPT reply per address (default "250 2.1.5 Ok")
	dot   string            // reply to the final dot; "" closes the line without a reply
	quit  string            // reply to QUIT; "" closes the line without a reply
	ehlo2 string            // reply to every EHLO after the first (default: the 250 of the first)
}

// seen is what the scripted relay received.
type seen struct {
	mu        sync.Mutex
	commands  []string
	rcptsData []string // recipients accepted when DATA came
	body      bool
	// pipelinedEHLO: the first EHLO was followed by bytes the client sent
	// before it could have read the reply (RFC 2920: EHLO ends a group).
	pipelinedEHLO bool
	done          chan struct{}
}

func (s *seen) add(c string) {
	s.mu.Lock()
	s.commands = append(s.commands, c)
	s.mu.Unlock()
}

// scriptedRelay serves one SMTP conversation on 127.0.0.1:0 by sc. It is a
// raw line script, not go-smtp's server, so it can misbehave exactly.
func scriptedRelay(t *testing.T, sc script) (string, *seen) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &seen{done: make(chan struct{})}
	go func() {
		defer close(s.done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		say := func(l string) { c.Write([]byte(l + "\r\n")) }
		say("220 scripted ESMTP")
		ehlos := 0
		var rcpts []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			s.add(line)
			verb := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
			switch verb {
			case "EHLO", "HELO":
				ehlos++
				if ehlos == 1 && r.Buffered() > 0 {
					s.mu.Lock()
					s.pipelinedEHLO = true
					s.mu.Unlock()
				}
				if ehlos > 1 && sc.ehlo2 != "" {
					say(sc.ehlo2)
					continue
				}
				say("250-scripted hello")
				say("250 8BITMIME")
			case "MAIL":
				rcpts = nil
				say("250 2.1.0 Ok")
			case "RCPT":
				addr := strings.Trim(strings.TrimPrefix(strings.TrimPrefix(line, "RCPT TO:"), "rcpt to:"), "<> ")
				rep := sc.rcpt[addr]
				if rep == "" {
					rep = "250 2.1.5 Ok"
				}
				if rep[0] == '2' {
					rcpts = append(rcpts, addr)
				}
				say(rep)
			case "RSET":
				rcpts = nil
				say("250 2.0.0 Ok")
			case "DATA":
				s.mu.Lock()
				s.rcptsData = append([]string(nil), rcpts...)
				s.mu.Unlock()
				say("354 End data with <CR><LF>.<CR><LF>")
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
				}
				s.mu.Lock()
				s.body = true
				s.mu.Unlock()
				if sc.dot == "" {
					return // the line drops after the dot: no reply at all
				}
				say(sc.dot)
			case "QUIT":
				if sc.quit != "" {
					say(sc.quit)
				}
				return
			default:
				say("502 5.5.2 unknown")
			}
		}
	}()
	return ln.Addr().String(), s
}

func submitter(addr string) *Submitter {
	return &Submitter{Submit: profile.Submit{Addr: addr}, Timeout: 10 * time.Second}
}

func testMessage(to ...string) *Message {
	id := NewID()
	return &Message{HarnessID: id, MessageID: id + "@test", Group: "g", From: TagSender("s@client.test", id), To: to}
}

func wantReply(t *testing.T, got fakemta.Reply, code int, enhanced, text string) {
	t.Helper()
	if got.Code != code || got.Enhanced != enhanced || got.Text != text || got.Dropped {
		t.Errorf("reply = %+v, want %d %s %s", got, code, enhanced, text)
	}
}

// A 250 to the final dot transfers responsibility (RFC 5321 §6.1): what
// QUIT does afterwards changes nothing, and the relay's real reply (with
// its queue id) is recorded.
func TestAcceptedThenQuitFails(t *testing.T) {
	for _, tc := range []struct{ name, quit string }{
		{"line drops instead of 221", ""},
		{"garbage reply to QUIT", "hello there, not a reply"},
		{"QUIT refused", "500 5.5.1 what"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, s := scriptedRelay(t, script{dot: "250 2.0.0 Ok: queued as 4Xyz123", quit: tc.quit})
			sub := submitter(addr)
			m := testMessage("alice@rcpt.test")
			got := sub.Send(context.Background(), m)
			<-s.done
			if !got.Accepted || got.Unknown {
				t.Fatalf("accepted=%v unknown=%v reply %+v: a 250 to the final dot is acceptance whatever QUIT does", got.Accepted, got.Unknown, got.Reply)
			}
			wantReply(t, got.Reply, 250, "2.0.0", "Ok: queued as 4Xyz123")
			if got.Quit == "" {
				t.Errorf("the failed QUIT is not noted")
			}
			if !got.RcptAccepted("alice@rcpt.test") {
				t.Errorf("alice not accepted: %+v", got.Rcpts)
			}
		})
	}
}

// A clean conversation records the relay's own reply to the dot, not an
// invented one, and no QUIT note.
func TestAcceptedRecordsRealReply(t *testing.T) {
	addr, s := scriptedRelay(t, script{dot: "250 Message accepted for delivery id=AB12", quit: "221 2.0.0 Bye"})
	got := submitter(addr).Send(context.Background(), testMessage("alice@rcpt.test"))
	<-s.done
	if !got.Accepted || got.Quit != "" {
		t.Fatalf("accepted=%v quit=%q", got.Accepted, got.Quit)
	}
	wantReply(t, got.Reply, 250, "", "Message accepted for delivery id=AB12")
}

// The line drops after the final dot before any reply: the relay may or
// may not own the message (RFC 1047). The submission is not accepted, but
// its outcome is recorded as unknown, never guessed.
func TestDroppedAfterDotIsUnknown(t *testing.T) {
	addr, s := scriptedRelay(t, script{dot: ""})
	got := submitter(addr).Send(context.Background(), testMessage("alice@rcpt.test"))
	<-s.done
	if got.Accepted || !got.Unknown {
		t.Fatalf("accepted=%v unknown=%v: want the unknown outcome", got.Accepted, got.Unknown)
	}
	if !got.Reply.Dropped {
		t.Errorf("reply %+v: want Dropped", got.Reply)
	}
	if got.RcptAccepted("alice@rcpt.test") {
		t.Errorf("an unknown outcome is not acceptance")
	}
}

// A reply to the final dot that is no SMTP reply: unknown too.
func TestGarbageAfterDotIsUnknown(t *testing.T) {
	addr, s := scriptedRelay(t, script{dot: "Ok thanks", quit: "221 bye"})
	got := submitter(addr).Send(context.Background(), testMessage("alice@rcpt.test"))
	<-s.done
	if got.Accepted || !got.Unknown || got.Reply.Dropped || !strings.Contains(got.Reply.Text, "Ok thanks") {
		t.Fatalf("accepted=%v unknown=%v reply %+v: want unknown, with what came", got.Accepted, got.Unknown, got.Reply)
	}
}

// A relay that refuses one RCPT of two: the message goes to the other, each
// recipient's reply is recorded, and the submission is accepted for alice.
func TestPartialAcceptance(t *testing.T) {
	const alice, bob = "alice@rcpt.test", "bob@rcpt.test"
	addr, s := scriptedRelay(t, script{rcpt: map[string]string{bob: "550 5.1.1 <bob@rcpt.test>: Recipient address rejected"},
		dot: "250 2.0.0 Ok: queued as Q1", quit: "221 2.0.0 Bye"})
	got := submitter(addr).Send(context.Background(), testMessage(alice, bob))
	<-s.done
	if !got.Accepted {
		t.Fatalf("not accepted: %+v", got.Reply)
	}
	wantReply(t, got.Reply, 250, "2.0.0", "Ok: queued as Q1")
	if !s.body || strings.Join(s.rcptsData, ",") != alice {
		t.Errorf("relay got body=%v for %v; want the body for alice only", s.body, s.rcptsData)
	}
	if len(got.RcptTo) != 2 || len(got.Rcpts) != 2 {
		t.Fatalf("rcpt_to %v rcpts %+v: want both recipients recorded", got.RcptTo, got.Rcpts)
	}
	if !got.RcptAccepted(alice) || got.RcptAccepted(bob) {
		t.Errorf("alice accepted %v, bob accepted %v", got.RcptAccepted(alice), got.RcptAccepted(bob))
	}
	r, ok := got.RcptReply(bob)
	if !ok {
		t.Fatal("no reply recorded for bob")
	}
	wantReply(t, r, 550, "5.1.1", "<bob@rcpt.test>: Recipient address rejected")
	if r, _ := got.RcptReply(alice); r.Code != 250 {
		t.Errorf("alice's RCPT reply %+v", r)
	}
}

// Every recipient refused: no DATA, not accepted, the refusal recorded.
func TestAllRecipientsRefused(t *testing.T) {
	addr, s := scriptedRelay(t, script{rcpt: map[string]string{"alice@rcpt.test": "450 4.2.0 greylisted", "bob@rcpt.test": "550 5.1.1 no"},
		dot: "250 ok", quit: "221 bye"})
	got := submitter(addr).Send(context.Background(), testMessage("alice@rcpt.test", "bob@rcpt.test"))
	<-s.done
	if got.Accepted || got.Unknown {
		t.Fatalf("accepted=%v unknown=%v", got.Accepted, got.Unknown)
	}
	if s.body {
		t.Error("DATA sent with no accepted recipient")
	}
	wantReply(t, got.Reply, 450, "4.2.0", "greylisted")
	if len(got.Rcpts) != 2 || got.Rcpts[1].Reply.Code != 550 {
		t.Errorf("rcpts %+v", got.Rcpts)
	}
}

// RFC 2920: EHLO may only end a pipelined group, so the second EHLO of the
// submission-side double handshake goes out after the first reply.
func TestEHLOTwiceWaitsForTheFirstReply(t *testing.T) {
	_, s := sendScripted(t, script{dot: "250 2.0.0 Ok: queued as Q2", quit: "221 bye"}, true, false)
	if s.pipelinedEHLO {
		t.Error("the second EHLO was sent before the relay answered the first (pipelined EHLO)")
	}
	ehlos := 0
	for _, c := range s.commands {
		if strings.HasPrefix(c, "EHLO ") {
			ehlos++
		}
	}
	if ehlos != 2 {
		t.Errorf("%d EHLO commands, want 2: %q", ehlos, s.commands)
	}
}

// RFC 5321 §4.1.4 lets a server refuse a later EHLO ("if ... the EHLO
// command is acceptable to the SMTP server"); OpenSMTPD 6.8 answers the
// second "503 5.5.1 Invalid command: Already identified". The session is
// then still in the state of the first EHLO: the submission goes on, and the
// refusal is recorded.
func TestEHLOTwiceSecondRefused(t *testing.T) {
	got, s := sendScripted(t, script{ehlo2: "503 5.5.1 Invalid command: Already identified",
		dot: "250 2.0.0 Ok: queued as Q3", quit: "221 bye"}, true, false)
	wantReply(t, got.Reply, 250, "2.0.0", "Ok: queued as Q3")
	if got.SecondEHLO != "503 5.5.1 Invalid command: Already identified" {
		t.Errorf("second_ehlo %q: want the relay's refusal", got.SecondEHLO)
	}
	ehlos := 0
	for _, c := range s.commands {
		if strings.HasPrefix(c, "EHLO ") {
			ehlos++
		}
	}
	if ehlos != 2 || !s.body {
		t.Errorf("%d EHLO, body %v: %q", ehlos, s.body, s.commands)
	}
}

// The scenario's double handshake with RSET before MAIL is EHLO, EHLO, RSET,
// MAIL: go-smtp's Reset forgets the hello and would say EHLO a third time
// before MAIL (which OpenSMTPD refuses like the second); the harness does
// not send it.
func TestEHLOTwiceRsetBeforeMail(t *testing.T) {
	_, s := sendScripted(t, script{ehlo2: "503 5.5.1 Invalid command: Already identified",
		dot: "250 2.0.0 Ok: queued as Q4", quit: "221 bye"}, true, true)
	wantVerbs(t, s, "EHLO EHLO RSET MAIL RCPT DATA")
}

// sendScripted submits one message to alice@rcpt.test through a scripted
// relay (EHLO twice, RSET before MAIL as asked) and wants it accepted.
func sendScripted(t *testing.T, sc script, ehloTwice, rsetBeforeMail bool) (history.Submission, *seen) {
	t.Helper()
	addr, s := scriptedRelay(t, sc)
	m := testMessage("alice@rcpt.test")
	m.EHLOTwice, m.RsetBeforeMail = ehloTwice, rsetBeforeMail
	got := submitter(addr).Send(context.Background(), m)
	<-s.done
	if !got.Accepted {
		t.Fatalf("not accepted: %+v", got.Reply)
	}
	return got, s
}

// wantVerbs checks that the relay's conversation began with these verbs.
func wantVerbs(t *testing.T, s *seen, want string) {
	t.Helper()
	var verbs []string
	for _, c := range s.commands {
		verbs = append(verbs, strings.SplitN(c, " ", 2)[0])
	}
	if got := strings.Join(verbs, " "); !strings.HasPrefix(got, want) {
		t.Errorf("commands %q: want %s ...", got, want)
	}
}

// RSET before MAIL alone: one EHLO, RSET, MAIL (no second hello).
func TestRsetBeforeMailSaysEHLOOnce(t *testing.T) {
	_, s := sendScripted(t, script{dot: "250 2.0.0 Ok: queued as Q5", quit: "221 bye"}, false, true)
	wantVerbs(t, s, "EHLO RSET MAIL RCPT DATA")
}

// A refused first EHLO reaches the client: the second is not sent blind.
func TestEHLOTwiceFirstRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmds := make(chan []string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			cmds <- nil
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		c.Write([]byte("220 hi\r\n"))
		var got []string
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			got = append(got, strings.TrimSpace(l))
			if strings.HasPrefix(l, "QUIT") {
				c.Write([]byte("221 bye\r\n"))
				break
			}
			c.Write([]byte("554 5.7.1 go away\r\n"))
		}
		cmds <- got
	}()
	m := testMessage("alice@rcpt.test")
	m.EHLOTwice = true
	got := submitter(ln.Addr().String()).Send(context.Background(), m)
	if got.Accepted || got.Reply.Code != 554 {
		t.Errorf("reply %+v, want the 554 to the first EHLO", got.Reply)
	}
	for _, c := range <-cmds {
		if strings.HasPrefix(c, "MAIL") {
			t.Errorf("MAIL sent after a refused EHLO: %q", c)
		}
	}
}

// Against the real fake MTA over STARTTLS: each RCPT's reply is recorded
// with its text (go-smtp's client returns none for a 2xx), and the dot's.
func TestRepliesOverSTARTTLS(t *testing.T) {
	pol, err := fakemta.ParsePolicy("test.yaml", []byte(`rules:
  - match: {stage: rcpt, rcpt: bob@rcpt.test}
    reply: "550 5.1.1 no such user here"
`))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := fakemta.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fakemta.New(fakemta.Config{Listen: []string{"127.0.0.1:0"}, Policy: pol, TLS: cfg, Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	sub := submitter(srv.Addr())
	sub.Submit.StartTLS = true
	got := sub.Send(context.Background(), testMessage("alice@rcpt.test", "bob@rcpt.test"))
	if !got.Accepted || got.Reply.Code != 250 || got.Reply.Text == "" {
		t.Fatalf("accepted %v reply %+v", got.Accepted, got.Reply)
	}
	a, _ := got.RcptReply("alice@rcpt.test")
	b, _ := got.RcptReply("bob@rcpt.test")
	if a.Code/100 != 2 || a.Text == "" || b.Code != 550 || b.Enhanced != "5.1.1" || b.Text != "no such user here" {
		t.Errorf("alice %+v bob %+v", a, b)
	}
	t.Logf("alice %+v, dot %+v", a, got.Reply)
}

// silentServer accepts connections and never says a word: a relay stuck
// before its greeting. It counts the connections that were closed by the
// client.
func silentServer(t *testing.T) (addr string, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [64]byte
				for {
					if _, err := c.Read(b[:]); err != nil {
						ch <- struct{}{} // the client hung up
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// TestSendCtxCancelAbortsStuckSubmission: a relay that accepts and never
// answers cannot hold Send past its ctx (the conversation timeout is long).
func TestSendCtxCancelAbortsStuckSubmission(t *testing.T) {
	addr, closed := silentServer(t)
	sub := submitter(addr)
	sub.Timeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var got struct {
		accepted, unknown bool
		code              int
		text              string
	}
	go func() {
		defer close(done)
		s := sub.Send(ctx, testMessage("alice@rcpt.test"))
		got.accepted, got.unknown, got.code, got.text = s.Accepted, s.Unknown, s.Reply.Code, s.Reply.Text
	}()
	select {
	case <-done:
		t.Fatal("Send returned before ctx ended, against a server that never answers")
	case <-time.After(50 * time.Millisecond):
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Send still blocked 10s after its ctx ended")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed")
	}
	if got.accepted || got.unknown || got.code != 0 || !strings.Contains(got.text, "submission aborted (context canceled)") {
		t.Errorf("got accepted=%v unknown=%v code=%d text=%q; want a not-accepted submission saying it was aborted", got.accepted, got.unknown, got.code, got.text)
	}
}

// TestSendAllCtxDeadline: SendAll returns at its ctx's deadline with every
// message recorded (none accepted), not after the conversation timeout.
func TestSendAllCtxDeadline(t *testing.T) {
	addr, _ := silentServer(t)
	sub := submitter(addr)
	sub.Timeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	msgs := []*Message{testMessage("a@rcpt.test"), testMessage("b@rcpt.test"), testMessage("c@rcpt.test")}
	start := time.Now()
	res := sub.SendAll(ctx, msgs, 2)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("SendAll took %s with a 200ms ctx", d)
	}
	if len(res) != len(msgs) {
		t.Fatalf("%d results for %d messages", len(res), len(msgs))
	}
	for i, s := range res {
		if s.HarnessID != msgs[i].HarnessID || s.Accepted || s.Reply.Code != 0 || !strings.Contains(s.Reply.Text, "deadline exceeded") {
			t.Errorf("result %d: id %s accepted=%v reply %+v; want %s not accepted, deadline exceeded", i, s.HarnessID, s.Accepted, s.Reply, msgs[i].HarnessID)
		}
	}
}
