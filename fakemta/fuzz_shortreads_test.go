package fakemta

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// scriptConn is a client on a script: its reads hand the server the input
// in the sizes ops gives (0: a read timeout instead), then io.EOF; what the
// server writes is kept.
type scriptConn struct {
	mu     sync.Mutex
	in     []byte
	ops    []byte
	out    bytes.Buffer
	closed chan struct{}
	once   sync.Once
}

type scriptTimeout struct{}

func (scriptTimeout) Error() string   { return "script: i/o timeout" }
func (scriptTimeout) Timeout() bool   { return true }
func (scriptTimeout) Temporary() bool { return true }

func (c *scriptConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.ops) > 0 {
		op := c.ops[0]
		c.ops = c.ops[1:]
		if op == 0 {
			return 0, scriptTimeout{}
		}
		n = min(n, int(op))
	}
	n = copy(p[:n], c.in)
	c.in = c.in[n:]
	return n, nil
}

func (c *scriptConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	return c.out.Write(p)
}

func (c *scriptConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

func (c *scriptConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25}
}
func (c *scriptConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 40000}
}
func (c *scriptConn) SetDeadline(time.Time) error      { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error  { return nil }
func (c *scriptConn) SetWriteDeadline(time.Time) error { return nil }

// oneConnListener accepts one connection, then waits to be closed.
type oneConnListener struct {
	ch     chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 25} }

// splitWireReplies splits what the server wrote into replies, up to the first
// 220 after the greeting (TLS bytes follow a STARTTLS 220).
func splitWireReplies(out []byte) []Reply {
	var rs []Reply
	for {
		end := replyEnd(out)
		if end < 0 {
			return rs
		}
		r := parseWireReply(out[:end])
		rs = append(rs, r)
		out = out[end:]
		if r.Code == 220 && len(rs) > 1 {
			return rs
		}
	}
}

// FuzzWireTapShortReads: the client's bytes reach the tap in arbitrary
// short reads, with read timeouts anywhere (also inside DATA and BDAT
// bodies). Whatever happens: no panic, no hang, the journal's replies are
// exactly the replies on the wire, a transaction's reply to its body is
// one the wire carried, and the tap never stays in body mode (every reply
// answers a journaled command: the body's end handed back to command mode).
func FuzzWireTapShortReads(f *testing.F) {
	tx := "EHLO a.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<fresh@d.test>\r\n"
	upTo := func(s string) string { return string([]byte{byte(len(s))}) } // one read of s's length
	dataHead, bdatHead := tx+"DATA\r\nbody\r\n", tx+"BDAT 10 LAST\r\nabcd"
	for _, s := range []struct{ ops, in string }{
		{"", tx + "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"},
		{"\x05\x01\x02\x07\x03\x01\x01\x01\x01\x09", tx + "DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"},
		// A timeout inside the DATA body, then commands a stuck tap would take for body.
		{upTo(dataHead) + "\x00", dataHead + "MAIL FROM:<x@y>\r\nRCPT TO:<fresh@z>\r\nDATA\r\n.\r\nQUIT\r\n"},
		// A timeout inside a BDAT chunk.
		{upTo(bdatHead) + "\x00", bdatHead + "efghijRSET\r\nNOOP\r\nQUIT\r\n"},
		// A refused chunk with no LF, longer than a line may be.
		{"", "EHLO a.test\r\nBDAT 600\r\n" + strings.Repeat("z", 600) + "NOOP\r\nQUIT\r\n"},
		{"\x0c\xff\x00", "EHLO a.test\r\nBDAT 600\r\n" + strings.Repeat("z", 600) + "NOOP\r\nQUIT\r\n"},
		// A line too long inside DATA.
		{"", tx + "DATA\r\n" + strings.Repeat("L", 700) + "\r\n.\r\nNOOP\r\n"},
		{"\x01\x00", "EHLO a.test\r\n"},
		{"", "EHLO a.test\r\nMAIL FROM:<a@b> SIZE=99999999999\r\nSTARTTLS x\r\nSTARTTLS\r\n\x16\x03\x01"},
	} {
		f.Add([]byte(s.ops), []byte(s.in))
	}
	pol, err := ParsePolicy("wire.yaml", []byte(wirePolicy))
	if err != nil {
		f.Fatal(err)
	}
	tlsCfg, err := SelfSignedTLS()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, ops, in []byte) {
		var (
			mu     sync.Mutex
			panics []string
		)
		s, err := New(Config{Policy: pol, TLS: tlsCfg, MaxMessageBytes: 4096, MaxLineLength: 512, MaxRecipients: 5,
			ReadTimeout: time.Second, Logf: func(format string, args ...any) {
				if msg := fmt.Sprintf(format, args...); strings.Contains(msg, "panic") && !goSMTPBDATSessionPanic(msg) {
					mu.Lock()
					panics = append(panics, msg)
					mu.Unlock()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		sc := &scriptConn{in: in, ops: ops, closed: make(chan struct{})}
		l := &oneConnListener{ch: make(chan net.Conn, 1), closed: make(chan struct{})}
		l.ch <- sc
		s.Serve(l)
		select {
		case <-sc.closed:
		case <-time.After(20 * time.Second):
			s.Close()
			t.Fatalf("the server did not close the line after the script ended (ops %q, input %q)", ops, in)
		}
		s.Close() // waits for the session's end (its transaction is journaled)
		mu.Lock()
		if len(panics) > 0 {
			t.Fatalf("server panicked: %s", panics[0])
		}
		mu.Unlock()

		sc.mu.Lock()
		wire := splitWireReplies(sc.out.Bytes())
		sc.mu.Unlock()
		var journaled []Reply
		var txs []*Transaction
		commands := 0
		for _, ev := range journalEvents(t, s) {
			switch ev.Kind {
			case EventReply:
				if !ev.Reply.Dropped {
					journaled = append(journaled, *ev.Reply)
				}
			case EventCommand:
				commands++
			case EventTransaction:
				txs = append(txs, ev.Transaction)
			}
		}
		if len(journaled) > len(wire) && wire[len(wire)-1].Code == 220 && len(wire) > 1 {
			journaled = journaled[:len(wire)] // past STARTTLS the wire is TLS
		}
		if fmt.Sprint(journaled) != fmt.Sprint(wire) {
			t.Fatalf("journal and wire disagree (ops %q, input %q):\njournal %+v\nwire    %+v", ops, in, journaled, wire)
		}
		final := 0
		for _, r := range wire[min(1, len(wire)):] { // the greeting answers no command
			if r.Code != 354 {
				final++
			}
		}
		// Each command gets one final reply; one more may come unasked
		// (an idle timeout, a connection error) just before the line is cut.
		if final > commands+1 {
			t.Fatalf("%d final replies for %d journaled commands: replies to commands the journal did not see (ops %q, input %q):\n%+v", final, commands, ops, in, wire)
		}
		for _, tx := range txs {
			if tx.Data == nil || tx.Data.Dropped {
				continue
			}
			said := false
			for _, r := range wire {
				said = said || r == *tx.Data
			}
			if !said {
				t.Fatalf("transaction records %+v, which the wire never carried (ops %q, input %q):\n%+v", *tx.Data, ops, in, wire)
			}
		}
	})
}
