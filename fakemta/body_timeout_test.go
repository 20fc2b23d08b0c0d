package fakemta

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// lastConn returns the id of the newest connection in the journal.
func lastConn(t *testing.T, s *Server) uint64 {
	t.Helper()
	var id uint64
	for _, ev := range journalEvents(t, s) {
		if ev.Kind == EventConnect {
			id = ev.Conn
		}
	}
	return id
}

// connRecord waits until connection id is closed and returns its
// journaled replies (what the tap said on the wire, drops left out) and
// its transactions.
func connRecord(t *testing.T, s *Server, id uint64) (replies []Reply, txs []*Transaction) {
	t.Helper()
	waitJournal(t, s, "close of the connection", func(ev Event) bool { return ev.Kind == EventClose && ev.Conn == id })
	waitJournal(t, s, "transaction of the connection", func(ev Event) bool { return ev.Kind == EventTransaction && ev.Conn == id })
	for _, ev := range journalOfConn(t, s, id) {
		switch ev.Kind {
		case EventReply:
			if !ev.Reply.Dropped {
				replies = append(replies, *ev.Reply)
			}
		case EventTransaction:
			txs = append(txs, ev.Transaction)
		}
	}
	return replies, txs
}

// wantBodyTimeout checks a body cut by the idle timeout: the wire says 421
// 4.4.2 and closes, the journal's last reply is that reply, and the
// transaction records the same reply and no message.
func wantBodyTimeout(t *testing.T, s *Server, c *rawClient) {
	t.Helper()
	code, msg, err := c.reply()
	if code != 421 || !strings.HasPrefix(msg, "4.4.2 ") {
		t.Fatalf("stalled body: got %d %q %v, want 421 4.4.2", code, msg, err)
	}
	if !c.closedByServer() {
		t.Fatal("line kept open after the body timed out")
	}
	replies, txs := connRecord(t, s, lastConn(t, s))
	last := replies[len(replies)-1]
	if last.Code != 421 || last.Enhanced+" "+last.Text != msg {
		t.Fatalf("journal's last reply %+v, wire said %d %q", last, code, msg)
	}
	tx := txs[len(txs)-1]
	if tx.Data == nil || *tx.Data != last || tx.Message != nil {
		t.Fatalf("transaction journaled as %+v (data %+v), wire said %d %q", tx, tx.Data, code, msg)
	}
}

func TestDATABodyStalledGets421AndCloses(t *testing.T) {
	slow(t, "waits out a 1s read timeout")
	s := startServer(t, "", func(c *Config) { c.ReadTimeout = time.Second })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO t.test", 250)
	c.must("MAIL FROM:<a@t.test>", 250)
	c.must("RCPT TO:<b@t.test>", 250)
	c.must("DATA", 354)
	c.write("Subject: stalled\r\n\r\nfirst line\r\n") // and then nothing
	wantBodyTimeout(t, s, c)
}

func TestBDATChunkCutShortGets421AndCloses(t *testing.T) {
	slow(t, "waits out a 1s read timeout twice")
	s := startServer(t, "", func(c *Config) { c.ReadTimeout = time.Second })
	for _, last := range []string{"", " LAST"} {
		t.Run("BDAT"+last, func(t *testing.T) {
			c := dialRaw(t, s.Addr())
			c.greeting()
			c.must("EHLO t.test", 250)
			c.must("MAIL FROM:<a@t.test>", 250)
			c.must("RCPT TO:<b@t.test>", 250)
			c.write("BDAT 100" + last + "\r\nonly 20 of 100 byte") // and then nothing
			wantBodyTimeout(t, s, c)
		})
	}
}

// --read-timeout is an idle timeout inside a body: a client sending a line
// every quarter of it keeps going for several timeouts in total.
func TestBodyReadTimeoutIsIdleNotTotal(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several read timeouts; make test (go test without -short) runs it")
	}
	const timeout = time.Second
	s := startServer(t, "", func(c *Config) { c.ReadTimeout = timeout })
	trickle := func(c *rawClient, lines int) {
		tick := time.NewTicker(timeout / 4)
		defer tick.Stop()
		for i := range lines {
			<-tick.C
			c.write(fmt.Sprintf("line %02d\r\n", i))
		}
	}
	const lines = 14 // 3.5 timeouts in total
	t.Run("DATA", func(t *testing.T) {
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO t.test", 250)
		c.must("MAIL FROM:<a@t.test>", 250)
		c.must("RCPT TO:<b@t.test>", 250)
		c.must("DATA", 354)
		c.write("Subject: slow\r\n\r\n")
		trickle(c, lines)
		c.must(".", 250)
		c.must("QUIT", 221)
	})
	t.Run("BDAT", func(t *testing.T) {
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO t.test", 250)
		c.must("MAIL FROM:<a@t.test>", 250)
		c.must("RCPT TO:<b@t.test>", 250)
		c.write(fmt.Sprintf("BDAT %d LAST\r\n", lines*len("line 00\r\n")))
		trickle(c, lines)
		if code, msg, err := c.reply(); code != 250 {
			t.Fatalf("slow chunk: %d %q %v", code, msg, err)
		}
		c.must("QUIT", 221)
	})
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 2 {
		t.Fatalf("want both slow messages recorded, got %d", len(msgs))
	}
}

// A line longer than --max-line-length inside DATA: the journal records
// the very reply the wire carried, and nothing is said after it.
func TestLongLineInDataJournalMatchesWire(t *testing.T) {
	s := startServer(t, "", nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO t.test", 250)
	c.must("MAIL FROM:<a@t.test>", 250)
	c.must("RCPT TO:<b@t.test>", 250)
	c.must("DATA", 354)
	go c.nc.Write([]byte("Subject: long\r\n\r\n" + strings.Repeat("x", 1<<20) + "\r\n.\r\n"))
	code, msg, err := c.reply()
	if code != 500 {
		t.Fatalf("1 MB line: got %d %q %v, want 500", code, msg, err)
	}
	if !c.closedByServer() {
		t.Fatal("line kept open after a too-long line in the body")
	}
	replies, txs := connRecord(t, s, lastConn(t, s))
	if n := len(replies); n < 2 || replies[n-2].Code != 354 {
		t.Fatalf("replies after DATA: %+v (the wire said one: %d %q)", replies, code, msg)
	}
	last := replies[len(replies)-1]
	if last.Code != code || last.Enhanced+" "+last.Text != msg {
		t.Fatalf("journal's last reply %+v, wire said %d %q", last, code, msg)
	}
	if tx := txs[len(txs)-1]; tx.Data == nil || *tx.Data != last || tx.Message != nil {
		t.Fatalf("transaction journaled as %+v, wire said %d %q", tx, code, msg)
	}
}

// After a body the server refused without cutting the line (too big for
// DATA, a refused BDAT chunk), the tap is back in command mode: the next
// transaction's commands are journaled and a data-stage rule applies.
func TestAfterARefusedBodyCommandsAndDataRulesApply(t *testing.T) {
	s := startServer(t, `rules:
  - match: {stage: data, sender: "second@*"}
    reply: "554 5.7.1 no data for you"
`, func(c *Config) { c.MaxMessageBytes = 1024 })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO t.test", 250)
	c.must("MAIL FROM:<first@t.test>", 250)
	c.must("RCPT TO:<b@t.test>", 250)
	c.must("DATA", 354)
	c.write(strings.Repeat(strings.Repeat("x", 70)+"\r\n", 40))
	c.must(".", 552)
	c.write("BDAT 2000 LAST\r\n" + strings.Repeat("y", 2000)) // no transaction: 502, chunk dropped
	if code, msg, err := c.reply(); code != 502 {
		t.Fatalf("BDAT without a transaction: %d %q %v", code, msg, err)
	}
	c.must("MAIL FROM:<second@t.test>", 250)
	c.must("RCPT TO:<b@t.test>", 250)
	c.must("DATA", 554)
	c.must("QUIT", 221)
	var cmds []string
	for _, ev := range journalOfConn(t, s, lastConn(t, s)) {
		if ev.Kind == EventCommand {
			cmds = append(cmds, ev.Command)
		}
	}
	want := "EHLO t.test|MAIL FROM:<first@t.test>|RCPT TO:<b@t.test>|DATA|BDAT 2000 LAST|MAIL FROM:<second@t.test>|RCPT TO:<b@t.test>|DATA|QUIT"
	if got := strings.Join(cmds, "|"); got != want {
		t.Fatalf("commands journaled:\n got %s\nwant %s", got, want)
	}
}
