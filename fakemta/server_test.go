package fakemta

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// fakeClock is an injected clock for greylist timing.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startServer runs a fake MTA on 127.0.0.1:0 with the policy YAML.
func startServer(t *testing.T, policyYAML string, mod func(*Config)) *Server {
	t.Helper()
	pol := &Policy{} // "": accept everything
	if policyYAML != "" {
		var err error
		if pol, err = ParsePolicy("test.yaml", []byte(policyYAML)); err != nil {
			t.Fatalf("policy: %v", err)
		}
	}
	cfg := Config{Policy: pol, Logf: t.Logf, ReadTimeout: 10 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Serve(l)
	t.Cleanup(func() { s.Close() })
	return s
}

const testMsg = "From: a@client.test\r\nTo: b@remote.test\r\nMessage-ID: <m1@client.test>\r\nX-Greyharness-Id: gh-1\r\nSubject: hi\r\n\r\nbody\r\n"

// send makes one SMTP transaction and returns the first error's SMTP code (0 = delivered).
func send(t *testing.T, addr, from string, rcpts ...string) (int, error) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return 0, err
	}
	return transact(c, from, rcpts...)
}

// transact runs HELO, MAIL, RCPT..., DATA with testMsg and QUIT on c (and
// closes it), returning the first failing reply's code (0 = delivered).
func transact(c *smtp.Client, from string, rcpts ...string) (int, error) {
	defer c.Close()
	if err := c.Hello("relay.client.test"); err != nil {
		return codeOf(err), err
	}
	if err := c.Mail(from, nil); err != nil {
		return codeOf(err), err
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return codeOf(err), err
		}
	}
	w, err := c.Data()
	if err != nil {
		return codeOf(err), err
	}
	if _, err := w.Write([]byte(testMsg)); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return codeOf(err), err
	}
	return 0, c.Quit()
}

func codeOf(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return -1
}

func TestMinimalPolicyGreylistThenReject(t *testing.T) {
	clock := newClock()
	s := startServer(t, "greylist:\n  delay: 2s\nrules:\n  - match: {stage: rcpt, rcpt: \"*@reject.test\"}\n    reply: \"550 5.1.1 No such user\"\n", func(c *Config) { c.Now = clock.Now })
	code, err := send(t, s.Addr(), "a@client.test", "b@remote.test")
	var se *smtp.SMTPError
	if code != 451 || !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) || !strings.Contains(err.Error(), "2 seconds") {
		t.Fatalf("first attempt: got %d %v, want 451 4.7.1 ... 2 seconds", code, err)
	}
	clock.Add(time.Second)
	if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != 451 {
		t.Fatalf("retry inside the delay: got %d %v, want 451", code, err)
	}
	clock.Add(1500 * time.Millisecond)
	if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatalf("retry after the delay: got %d %v, want delivered", code, err)
	}
	if code, err := send(t, s.Addr(), "a@client.test", "x@reject.test"); code != 550 || !strings.Contains(err.Error(), "No such user") {
		t.Fatalf("reject rule: got %d %v", code, err)
	}
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 || msgs[0].MessageID != "m1@client.test" || msgs[0].HarnessID != "gh-1" || !msgs[0].Accepted {
		t.Fatalf("messages: %+v", msgs)
	}
}

func TestStartTLSIsJournaledAndCommandsStayVisible(t *testing.T) {
	cfgTLS, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "", func(c *Config) { c.TLS = cfgTLS })
	c, err := smtp.DialStartTLS(s.Addr(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.TLSConnectionState(); !ok {
		t.Fatal("no TLS after STARTTLS")
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		t.Fatal("STARTTLS offered again after TLS")
	}
	if err := c.Mail("a@x.test", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("b@y.test", nil); err != nil {
		t.Fatal(err)
	}
	w, _ := c.Data()
	w.Write([]byte(testMsg))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	evs, _ := s.Journal().Since(0, 0)
	var sawTLS, sawMail bool
	for _, ev := range evs {
		if ev.Kind == EventTLS && ev.TLS {
			sawTLS = true
		}
		if ev.Kind == EventCommand && ev.TLS && strings.HasPrefix(ev.Command, "MAIL FROM") {
			sawMail = true
		}
	}
	if !sawTLS || !sawMail {
		t.Fatalf("tls event %v, MAIL under TLS journaled %v", sawTLS, sawMail)
	}
}
