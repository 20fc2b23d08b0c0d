package fakemta

import (
	"strings"
	"testing"
)

// A refused BDAT chunk is consumed whole, however long its "lines": the
// session goes on.
func TestRefusedBDATChunkWithoutLFKeepsSession(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.MaxMessageBytes = 1024 })
	big := strings.Repeat("x", 3000) // no LF, longer than --max-line-length
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO b.test", 250)
	// No transaction: 502, the chunk follows anyway.
	c.write("BDAT 3000\r\n" + big)
	if code, msg, err := c.reply(); code != 502 {
		t.Fatalf("BDAT without MAIL: %d %q %v, want 502", code, msg, err)
	}
	c.must("NOOP", 250)
	// Over the size limit: 552, the chunk follows anyway.
	c.must("MAIL FROM:<a@b.test>", 250)
	c.must("RCPT TO:<r@b.test>", 250)
	c.write("BDAT 3000 LAST\r\n" + big)
	if code, msg, err := c.reply(); code != 552 {
		t.Fatalf("BDAT over the size limit: %d %q %v, want 552", code, msg, err)
	}
	c.must("NOOP", 250)
	// And a message still goes through on the same line.
	c.must("MAIL FROM:<a@b.test>", 250)
	c.must("RCPT TO:<r@b.test>", 250)
	c.write("BDAT 5 LAST\r\nhello")
	if code, msg, err := c.reply(); code != 250 {
		t.Fatalf("BDAT after the refusals: %d %q %v", code, msg, err)
	}
	c.must("QUIT", 221)
	var cmds []string
	for _, ev := range journalOfConn(t, s, lastConn(t, s)) {
		if ev.Kind == EventCommand {
			cmds = append(cmds, ev.Command)
		}
	}
	want := "EHLO b.test|BDAT 3000|NOOP|MAIL FROM:<a@b.test>|RCPT TO:<r@b.test>|BDAT 3000 LAST|NOOP|MAIL FROM:<a@b.test>|RCPT TO:<r@b.test>|BDAT 5 LAST|QUIT"
	if got := strings.Join(cmds, "|"); got != want {
		t.Fatalf("commands journaled:\n got %s\nwant %s", got, want)
	}
}

// RFC 1870: a SIZE value has up to 20 digits; one too big for the server
// is 552, not a syntax error.
func TestMailSizeBeyond32Bits(t *testing.T) {
	for _, tc := range []struct {
		max  int64
		size string
		want int
	}{
		{0, "4294967296", 552},
		{0, "99999999999999999999", 552},  // 20 digits, beyond uint64 too
		{0, "999999999999999999999", 501}, // 21 digits: syntax
		{0, "12x", 501},
		{0, "1000", 250},
		{8 << 30, "4294967296", 250},
		{8 << 30, "9999999999", 552},
	} {
		s := startServer(t, "", func(c *Config) { c.MaxMessageBytes = tc.max })
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO z.test", 250)
		line := "MAIL FROM:<a@z.test> SIZE=" + tc.size
		if code, msg, err := c.cmd(line); code != tc.want {
			t.Fatalf("max %d, %s: got %d %q %v, want %d", tc.max, line, code, msg, err, tc.want)
		}
		c.must("QUIT", 221)
		ev := waitJournal(t, s, "the MAIL command", func(ev Event) bool { return ev.Kind == EventCommand && strings.HasPrefix(ev.Command, "MAIL") })
		if ev.Command != line {
			t.Fatalf("journaled %q, client sent %q", ev.Command, line)
		}
	}
}

// RFC 3207: STARTTLS takes no parameters: 501, and the session goes on.
func TestStartTLSWithParameterIs501(t *testing.T) {
	for _, withTLS := range []bool{true, false} {
		s := startServer(t, "", func(c *Config) {
			if withTLS {
				var err error
				if c.TLS, err = SelfSignedTLS(); err != nil {
					t.Fatal(err)
				}
			}
		})
		c := dialRaw(t, s.Addr())
		c.greeting()
		c.must("EHLO s.test", 250)
		if msg := c.must("STARTTLS foo", 501); !strings.HasPrefix(msg, "5.5.4 ") {
			t.Fatalf("STARTTLS foo: %q", msg)
		}
		c.must("NOOP", 250)
		if withTLS {
			c.must("STARTTLS", 220)
			if err := c.startTLS(); err != nil {
				t.Fatal(err)
			}
			c.must("EHLO s.test", 250)
		}
		c.must("QUIT", 221)
	}
}

// With --max-line-length below 62 a too-long command is journaled as
// received, not padded with older bytes of the read buffer.
func TestTooLongCommandJournaledWithoutStaleBytes(t *testing.T) {
	s := startServer(t, "", func(c *Config) { c.MaxLineLength = 20 })
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.write(strings.Repeat("NOOP\r\n", 10)) // fills the read buffer's first 60 bytes
	for range 10 {
		if code, _, _ := c.reply(); code != 250 {
			t.Fatalf("NOOP: %d", code)
		}
	}
	long := strings.Repeat("X", 30)
	c.write(long)
	if code, msg, err := c.reply(); code != 500 {
		t.Fatalf("long line: %d %q %v", code, msg, err)
	}
	ev := waitJournal(t, s, "the long command", func(ev Event) bool { return ev.Kind == EventCommand && strings.HasPrefix(ev.Command, "X") })
	if ev.Command != long+"..." {
		t.Fatalf("journaled %q, want %q", ev.Command, long+"...")
	}
}
