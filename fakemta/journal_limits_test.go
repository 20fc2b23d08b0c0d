package fakemta

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestConnectionBoundedWhenClientNeverReads: a client that pipelines
// errors or endless commands and never reads a reply is cut with 421 after
// a bounded number of them, so one connection cannot make the journal grow
// without end (issue 11 item 6). A normal session that delivers messages
// is not affected (the counts start again after each message).
func TestConnectionBoundedWhenClientNeverReads(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		max        int
	}{
		{"errors", "MAIL FROM:<broken", maxConnErrors},
		{"commands", "NOOP", maxConnCommands},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, "", func(c *Config) { c.Logf = func(string, ...any) {} })
			nc, err := net.Dial("tcp", s.Addrs()[0].String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// Never read; write far more than the bound, until the server cuts.
			go func() {
				nc.SetWriteDeadline(time.Now().Add(60 * time.Second))
				chunk := strings.Repeat(tc.line+"\r\n", 1000)
				io.WriteString(nc, "EHLO client.test\r\n")
				for range 100 {
					if _, err := io.WriteString(nc, chunk); err != nil {
						return
					}
				}
			}()
			closeEv := waitJournal(t, s, "the connection to be cut", func(ev Event) bool { return ev.Kind == EventClose })
			cmds, got421 := 0, false
			for _, ev := range journalOfConn(t, s, closeEv.Conn) {
				switch {
				case ev.Kind == EventCommand:
					cmds++
				case ev.Kind == EventReply && ev.Reply.Code == 421 && ev.Reply.Enhanced == "4.7.0":
					got421 = true
				}
			}
			if !got421 || cmds > tc.max+2 {
				t.Fatalf("cut after %d commands (bound %d), 421 journaled: %v", cmds, tc.max, got421)
			}
		})
	}
}

// TestConnectionBudgetStartsAgainAfterEachMessage: many messages on one
// connection, each with a few refused commands, stay under the bound.
func TestConnectionBudgetStartsAgainAfterEachMessage(t *testing.T) {
	s := startServer(t, "", nil)
	c := dialRaw(t, s.Addrs()[0].String())
	c.nc.SetDeadline(time.Now().Add(2 * time.Minute))
	c.greeting()
	c.must("EHLO client.test", 250)
	for range 3 * maxConnErrors / 10 {
		for range 10 {
			c.must("MAIL FROM:<broken", 501)
		}
		c.must("MAIL FROM:<a@client.test>", 250)
		c.must("RCPT TO:<b@fakemta.test>", 250)
		c.must("DATA", 354)
		c.must(testMsg+".", 250)
	}
	c.must("QUIT", 221)
}
