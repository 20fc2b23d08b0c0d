package fakemta

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMessageSizeLimit(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.MaxMessageBytes = 1024 })
	c := dialRaw(t, s.Addr())
	c.greeting()
	if msg := c.must("EHLO s.test", 250); !strings.Contains(msg, "SIZE 1024") {
		t.Fatalf("SIZE not announced: %q", msg)
	}
	// Declared too big: refused at MAIL.
	c.must("MAIL FROM:<a@s.test> SIZE=5000", 552)
	// Not declared: refused after the body, and the session goes on.
	c.must("MAIL FROM:<a@s.test>", 250)
	c.must("RCPT TO:<b@s.test>", 250)
	c.must("DATA", 354)
	c.write("Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 40))
	if msg := c.must(".", 552); !strings.Contains(msg, "5.3.4") {
		t.Fatalf("size reply %q", msg)
	}
	c.must("NOOP", 250)
	c.must("QUIT", 221)
	ev := waitJournal(t, s, "transaction", func(ev Event) bool { return ev.Kind == EventTransaction && ev.Transaction.Data != nil })
	if ev.Transaction.Data.Code != 552 || ev.Transaction.Message != nil {
		t.Fatalf("oversized transaction journaled as %+v", ev.Transaction)
	}
	if msgs, _ := s.Journal().Messages(); len(msgs) != 0 {
		t.Fatalf("an oversized message was recorded as received: %+v", msgs)
	}
}

func TestLineLengthLimit(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.MaxLineLength = 200 })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO l.test", 250)
	c.must("MAIL FROM:<"+strings.Repeat("a", 150)+"@l.test>", 250)
	if msg := c.must("RCPT TO:<"+strings.Repeat("b", 300)+"@l.test>", 500); !strings.Contains(msg, "Too long line") {
		t.Fatalf("long line reply %q", msg)
	}
	if !c.closedByServer() {
		t.Fatal("line kept open after a too-long line")
	}
	// A long line without any newline is cut too (the tap must not buffer it forever).
	c = dialRaw(t, s.Addr())
	c.greeting()
	c.write(strings.Repeat("N", 5000))
	if code, msg, err := c.reply(); code != 500 {
		t.Fatalf("endless line: %d %q %v", code, msg, err)
	}
}

func TestRecipientLimit(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.MaxRecipients = 3 })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO r.test", 250)
	c.must("MAIL FROM:<a@r.test>", 250)
	for i := range 3 {
		c.must(fmt.Sprintf("RCPT TO:<r%d@r.test>", i), 250)
	}
	if msg := c.must("RCPT TO:<r4@r.test>", 452); !strings.Contains(msg, "4.5.3") {
		t.Fatalf("limit reply %q", msg)
	}
	c.must("DATA", 354)
	c.write(rawBody)
	c.must(".", 250)
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 || len(msgs[0].RcptTo) != 3 {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestReadTimeout(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.ReadTimeout = 100 * time.Millisecond })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO t.test", 250)
	code, msg, err := c.reply() // the client says nothing more
	if code != 421 || !strings.Contains(msg, "4.4.2") {
		t.Fatalf("idle: %d %q %v", code, msg, err)
	}
	if !c.closedByServer() {
		t.Fatal("line open after the idle timeout")
	}
	waitJournal(t, s, "421 journaled", func(ev Event) bool { return ev.Kind == EventReply && ev.Reply.Code == 421 })
}

func TestThousandIdleConnectionsDoNotBlockDelivery(t *testing.T) {
	const idle = 1000
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 3*idle {
		rl.Cur = min(rl.Max, 4*idle)
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl)
		if rl.Cur < 2*idle+100 {
			t.Skipf("RLIMIT_NOFILE %d is too low", rl.Cur)
		}
	}
	s := startServer(t, "", nil)
	conns := make([]net.Conn, 0, idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range idle {
		nc, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, nc)
	}
	// Every idle client got its greeting (the server holds them all open).
	buf := make([]byte, 512)
	for i, nc := range conns {
		nc.SetReadDeadline(time.Now().Add(20 * time.Second))
		if n, err := nc.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "220 ") {
			t.Fatalf("idle client %d: %q %v", i, buf[:n], err)
		}
	}
	if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatalf("delivery with %d idle connections: %d %v", idle, code, err)
	}
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 {
		t.Fatalf("messages %+v", msgs)
	}
}

// --- the tap and go-smtp must agree on where a body ends -----------------

func TestBareLFDotIsBodyNotEndOfData(t *testing.T) {
	// A quit rule would rewrite a "QUIT" line the tap mistook for a command.
	s := startServer(t, "rules:\n  - match: {stage: quit}\n    reply: \"221 2.0.0 custom bye\"\n  - match: {stage: helo, helo: after.test}\n    reply: \"550 5.7.1 after\"\n", nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO x.test", 250)
	c.must("MAIL FROM:<a@x.test>", 250)
	c.must("RCPT TO:<b@x.test>", 250)
	c.must("DATA", 354)
	// go-smtp (like RFC 5321) ends data only at CRLF "." CRLF: ".\r\n" after
	// a bare LF or a lone CR is body.
	body := "Subject: lf\r\n\r\nline\n.\r\nQUIT\r\nx\r\r\n.\r\nSTARTTLS\r\n"
	c.write(body)
	c.must(".", 250)
	c.must("EHLO after.test", 550)
	if msg := c.must("QUIT", 221); msg != "2.0.0 custom bye" {
		t.Fatalf("quit reply %q", msg)
	}
	msgs, _ := s.Journal().Messages()
	sum := sha256.Sum256([]byte(body))
	if len(msgs) != 1 || msgs[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("body changed on the way: %+v", msgs)
	}
	var cmds []string
	for _, ev := range journalEvents(t, s) {
		if ev.Kind == EventCommand {
			cmds = append(cmds, ev.Command)
		}
	}
	if got := strings.Join(cmds, "|"); got != "EHLO x.test|MAIL FROM:<a@x.test>|RCPT TO:<b@x.test>|DATA|EHLO after.test|QUIT" {
		t.Fatalf("commands journaled: %s", got)
	}
}

func TestBDATRejectedArgumentsDoNotSwallowCommands(t *testing.T) {
	s := startServer(t, "", nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO x.test", 250)
	c.must("MAIL FROM:<a@x.test>", 250)
	c.must("RCPT TO:<b@x.test>", 250)
	// go-smtp refuses these without reading a chunk: what follows are commands.
	c.must("BDAT 6 NOTLAST", 501)
	c.must("BDAT 99999999999", 501)
	c.must("BDAT 1 LAST extra", 501)
	c.must("NOOP", 250)
	c.must("QUIT", 221)
	var cmds []string
	for _, ev := range journalEvents(t, s) {
		if ev.Kind == EventCommand {
			cmds = append(cmds, ev.Command)
		}
	}
	if got := strings.Join(cmds, "|"); !strings.HasSuffix(got, "|NOOP|QUIT") {
		t.Fatalf("commands journaled: %s", got)
	}
}

// RSET or QUIT in the middle of a BDAT message end the transaction while
// go-smtp's Data goroutine still reads the chunk pipe (run with -race).
func TestBDATAbortedMidMessage(t *testing.T) {
	s := startServer(t, "", nil)
	for _, abort := range []string{"RSET", "QUIT", ""} {
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO x.test", 250)
		c.must("MAIL FROM:<a@x.test>", 250)
		c.must("RCPT TO:<b@x.test>", 250)
		c.write("BDAT 5\r\nhello")
		if code, _, _ := c.reply(); code != 250 {
			t.Fatalf("chunk: %d", code)
		}
		switch abort {
		case "":
			c.nc.Close()
		case "QUIT":
			c.must(abort, 221)
		default:
			c.must(abort, 250)
			c.must("QUIT", 221)
		}
	}
	pollUntil(t, "three transactions", func() bool {
		n := 0
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventTransaction {
				if ev.Transaction.Message != nil {
					t.Fatalf("aborted BDAT recorded as a message: %+v", ev.Transaction)
				}
				n++
			}
		}
		return n == 3
	})
}

// A client gone right after "BDAT n" (no chunk byte) leaves a clean
// journal: the transaction ends as a disconnect, no message.
func TestBDATClientGoneBeforeChunk(t *testing.T) {
	s := startServer(t, "", nil)
	for _, bdat := range []string{"BDAT 0\r\n", "BDAT 10\r\n", "BDAT 10 LAST\r\n"} {
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO x.test", 250)
		c.must("MAIL FROM:<a@x.test>", 250)
		c.must("RCPT TO:<b@x.test>", 250)
		c.write(bdat)
		c.nc.Close()
	}
	pollUntil(t, "three transactions", func() bool {
		n := 0
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventTransaction {
				if ev.Transaction.Message != nil || ev.Transaction.Data != nil && ev.Transaction.Data.Code/100 == 2 {
					t.Fatalf("cut BDAT journaled as %+v", ev.Transaction)
				}
				n++
			}
		}
		return n == 3
	})
	if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatal(code, err)
	}
}
