package fakemta

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/textproto"
	"testing"
	"time"
)

// rawClient is a bare SMTP client that shows exactly what the server said
// (or that it said nothing and cut the line).
type rawClient struct {
	t  *testing.T
	nc net.Conn
	tp *textproto.Conn
}

func dialRaw(t *testing.T, addr string) *rawClient {
	t.Helper()
	return dialRawFrom(t, addr, "")
}

// dialFrom dials addr from a given local IP ("" = any; every loopback
// address works on Linux) with a 30s deadline on the connection.
func dialFrom(t *testing.T, addr, localIP string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 10 * time.Second}
	if localIP != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(localIP)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return nc
}

// dialRawFrom dials from a given local IP (any loopback address works on Linux).
func dialRawFrom(t *testing.T, addr, localIP string) *rawClient {
	t.Helper()
	nc := dialFrom(t, addr, localIP)
	c := &rawClient{t: t, nc: nc, tp: textproto.NewConn(nc)}
	t.Cleanup(func() { nc.Close() })
	return c
}

// reply reads one (possibly multi-line) reply; code 0 with an error means
// the line was cut.
func (c *rawClient) reply() (int, string, error) {
	code, msg, err := c.tp.ReadResponse(0)
	var te *textproto.Error
	if errors.As(err, &te) {
		return code, msg, nil
	}
	if err != nil {
		return 0, "", err
	}
	return code, msg, nil
}

// cmd sends one line and reads the reply.
func (c *rawClient) cmd(line string) (int, string, error) {
	if err := c.tp.PrintfLine("%s", line); err != nil {
		return 0, "", err
	}
	return c.reply()
}

// must sends a line and fails unless the reply has the code.
func (c *rawClient) must(line string, want int) string {
	c.t.Helper()
	code, msg, err := c.cmd(line)
	if err != nil || code != want {
		c.t.Fatalf("%q: got %d %q %v, want %d", line, code, msg, err, want)
	}
	return msg
}

// greeting reads the greeting and fails unless it is 220.
func (c *rawClient) greeting() {
	c.t.Helper()
	if code, msg, err := c.reply(); code != 220 {
		c.t.Fatalf("greeting: %d %q %v", code, msg, err)
	}
}

// write sends raw bytes.
func (c *rawClient) write(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatal(err)
	}
}

// startTLS upgrades the client side after a 220 to STARTTLS.
func (c *rawClient) startTLS() error {
	tc := tls.Client(c.nc, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.nc = tc
	c.tp = textproto.NewConn(tc)
	return nil
}

// closedByServer reports whether the server cut the line (reading gives EOF or a reset).
func (c *rawClient) closedByServer() bool {
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b [1]byte
	_, err := c.tp.R.Read(b[:])
	return err != nil && !isTimeout(err)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// waitFor polls cond until it holds or the deadline passes.
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// events returns every journal event.
func journalEvents(t *testing.T, s *Server) []Event {
	t.Helper()
	evs, err := s.Journal().Since(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// waitEvent waits for a journal event matching pred and returns it.
func waitJournal(t *testing.T, s *Server, what string, pred func(Event) bool) Event {
	t.Helper()
	var found Event
	pollUntil(t, what, func() bool {
		for _, ev := range journalEvents(t, s) {
			if pred(ev) {
				found = ev
				return true
			}
		}
		return false
	})
	return found
}

// connEvents returns the events of one connection.
func journalOfConn(t *testing.T, s *Server, conn uint64) []Event {
	var out []Event
	for _, ev := range journalEvents(t, s) {
		if ev.Conn == conn {
			out = append(out, ev)
		}
	}
	return out
}

func parseTestPolicy(t testing.TB, y string) *Policy {
	t.Helper()
	p, err := ParsePolicy("test.yaml", []byte(y))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, y)
	}
	return p
}
