package fakemta

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

const rawBody = "From: a@client.test\r\nTo: b@remote.test\r\nMessage-ID: <raw@client.test>\r\nX-Greyharness-Id: gh-raw\r\nSubject: raw\r\n\r\nhello\r\n"

var allStages = []Stage{StageConnect, StageHelo, StageStartTLS, StageMail, StageRcpt, StageData, StageEOD, StageQuit}

// normalCode is the reply each stage gets when no rule acts.
var normalCode = map[Stage]int{StageConnect: 220, StageHelo: 250, StageStartTLS: 220, StageMail: 250,
	StageRcpt: 250, StageData: 354, StageEOD: 250, StageQuit: 221}

// driveTo runs the dialogue with default answers up to stage and returns
// the reply the server gave at stage.
func driveTo(t *testing.T, c *rawClient, stage Stage) (int, string, error) {
	t.Helper()
	if stage == StageConnect {
		return c.reply()
	}
	c.greeting()
	if stage == StageHelo {
		return c.cmd("EHLO client.test")
	}
	c.must("EHLO client.test", 250)
	switch stage {
	case StageStartTLS:
		return c.cmd("STARTTLS")
	case StageQuit:
		return c.cmd("QUIT")
	case StageMail:
		return c.cmd("MAIL FROM:<a@client.test>")
	}
	c.must("MAIL FROM:<a@client.test>", 250)
	if stage == StageRcpt {
		return c.cmd("RCPT TO:<b@remote.test>")
	}
	c.must("RCPT TO:<b@remote.test>", 250)
	if stage == StageData {
		return c.cmd("DATA")
	}
	c.must("DATA", 354)
	c.write(rawBody)
	return c.cmd(".")
}

type stageCase struct {
	name   string
	action string // YAML for the action
	// want is the reply code at the stage; 0 = the line is cut without a reply.
	want     func(Stage) int
	text     string // reply text must contain this (%s = stage), "" = no check
	closed   func(Stage) bool
	tlsFails bool
	check    func(t *testing.T, s *Server, stage Stage)
}

func TestEveryActionAtEveryStage(t *testing.T) {
	always := func(n int) func(Stage) int { return func(Stage) int { return n } }
	normal := func(st Stage) int { return normalCode[st] }
	closedAt := func(stages ...Stage) func(Stage) bool {
		return func(st Stage) bool {
			for _, x := range stages {
				if x == st {
					return true
				}
			}
			return false
		}
	}
	yes := func(Stage) bool { return true }
	replyJournaled := func(code int) func(t *testing.T, s *Server, st Stage) {
		return func(t *testing.T, s *Server, st Stage) {
			waitJournal(t, s, fmt.Sprintf("reply %d", code), func(ev Event) bool {
				return ev.Kind == EventReply && ev.Conn == 1 && ev.Reply.Code == code && !ev.Reply.Dropped
			})
		}
	}
	cases := []stageCase{
		{name: "reply4xx", action: `reply: "451 4.3.0 held at %s"`, want: always(451), text: "held at %s",
			closed: closedAt(StageConnect, StageQuit), check: replyJournaled(451)},
		{name: "reply5xx", action: `reply: "554 5.7.1 refused at %s"`, want: always(554), text: "refused at %s",
			closed: closedAt(StageConnect, StageQuit), check: replyJournaled(554)},
		{name: "reply2xx", action: `reply: "250 2.0.0 fine at %s"`,
			want: func(st Stage) int {
				switch st {
				case StageData, StageStartTLS:
					return normalCode[st] // DATA must go on with 354; STARTTLS with 220
				}
				return 250
			},
			closed: closedAt(StageQuit),
			check: func(t *testing.T, s *Server, st Stage) {
				switch st {
				case StageMail, StageRcpt, StageEOD, StageQuit:
					// The configured text reaches the wire, as the journal says.
					waitJournal(t, s, "custom 2xx", func(ev Event) bool {
						return ev.Kind == EventReply && ev.Reply.Code == 250 && strings.Contains(ev.Reply.Text, "fine at "+string(st))
					})
				}
			}},
		{name: "drop", action: `drop: true`, want: always(0), closed: yes,
			check: func(t *testing.T, s *Server, st Stage) {
				waitJournal(t, s, "dropped reply", func(ev Event) bool {
					return ev.Kind == EventReply && ev.Conn == 1 && ev.Reply.Dropped
				})
				waitJournal(t, s, "close", func(ev Event) bool { return ev.Kind == EventClose && ev.Conn == 1 })
				if st == StageEOD {
					ev := waitJournal(t, s, "transaction", func(ev Event) bool { return ev.Kind == EventTransaction })
					tx := ev.Transaction
					if tx.Data == nil || !tx.Data.Dropped || tx.Message == nil || tx.Message.Accepted {
						t.Fatalf("drop at eod: transaction %+v data %+v", tx, tx.Data)
					}
					msgs, err := s.Journal().Messages()
					if err != nil || len(msgs) != 1 || msgs[0].Accepted || msgs[0].HarnessID != "gh-raw" {
						t.Fatalf("drop at eod: messages %+v %v", msgs, err)
					}
				}
			}},
		{name: "close421", action: `close: 421`, want: always(421), text: "closing transmission channel", closed: yes,
			check: func(t *testing.T, s *Server, st Stage) {
				replyJournaled(421)(t, s, st)
				waitJournal(t, s, "close", func(ev Event) bool { return ev.Kind == EventClose && ev.Conn == 1 })
				if st == StageEOD {
					msgs, _ := s.Journal().Messages()
					if len(msgs) != 1 || msgs[0].Accepted {
						t.Fatalf("close at eod: messages %+v", msgs)
					}
				}
			}},
		{name: "delay", action: `delay: 30ms`, want: normal, closed: closedAt(StageQuit),
			check: func(t *testing.T, s *Server, st Stage) {
				note := fmt.Sprintf("tarpit 30ms at %s", st)
				waitJournal(t, s, note, func(ev Event) bool {
					return ev.Kind == EventControl && ev.Conn == 1 && ev.Note == note
				})
			}},
		{name: "accept", action: `accept: true`, want: normal, closed: closedAt(StageQuit),
			check: func(t *testing.T, s *Server, st Stage) { replyJournaled(normalCode[st])(t, s, st) }},
		{name: "tlsfail", action: `tls: fail`, want: always(220), closed: yes, tlsFails: true,
			check: func(t *testing.T, s *Server, st Stage) {
				waitJournal(t, s, "tls failure", func(ev Event) bool {
					return ev.Kind == EventTLS && ev.Conn == 1 && !ev.TLS && strings.HasPrefix(ev.Note, "handshake failed")
				})
			}},
	}
	tlsCfg, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		for _, st := range allStages {
			t.Run(tc.name+"/"+string(st), func(t *testing.T) {
				action := tc.action
				if strings.Contains(action, "%s") {
					action = fmt.Sprintf(action, st)
				}
				y := fmt.Sprintf("rules:\n  - match: {stage: %s}\n    %s\n", st, action)
				pol, perr := ParsePolicy("t.yaml", []byte(y))
				if tc.tlsFails && st != StageStartTLS || tc.name == "reply2xx" && st == StageConnect {
					if perr == nil {
						t.Fatalf("policy %q should not parse", y)
					}
					return
				}
				if perr != nil {
					t.Fatal(perr)
				}
				s := startServer(t, "", func(c *Config) { c.Policy = pol; c.TLS = tlsCfg })
				c := dialRaw(t, s.Addr())
				code, msg, err := driveTo(t, c, st)
				want := tc.want(st)
				if code != want {
					t.Fatalf("reply: got %d %q (%v), want %d", code, msg, err, want)
				}
				wantText := tc.text
				if strings.Contains(wantText, "%s") {
					wantText = fmt.Sprintf(wantText, st)
				}
				if !strings.Contains(msg, wantText) {
					t.Fatalf("reply text %q, want it to contain %q", msg, tc.text)
				}
				if st == StageStartTLS && code == 220 {
					herr := c.startTLS()
					if tc.tlsFails != (herr != nil) {
						t.Fatalf("handshake error %v, want failure %v", herr, tc.tlsFails)
					}
					if herr == nil {
						c.must("EHLO again.test", 250)
					}
				}
				if closed := tc.closed(st); closed {
					if !c.closedByServer() {
						t.Fatal("server kept the line open")
					}
				} else {
					if code == 354 {
						c.write(rawBody)
						c.must(".", 250)
					}
					c.must("NOOP", 250)
					c.must("QUIT", 221)
				}
				if tc.check != nil {
					tc.check(t, s, st)
				}
			})
		}
	}
}

// The "tarpit" delays the reply: the client sees nothing until the delay
// is over, which a control event records when it starts.
func TestDelayHoldsReplyUntilDone(t *testing.T) {
	s := startServer(t, "rules:\n  - match: {stage: connect}\n    delay: 1h\n", nil)
	sub, cancel := s.Journal().Subscribe()
	defer cancel()
	c := dialRaw(t, s.Addr())
	for ev := range sub {
		if ev.Kind == EventControl && ev.Note == "tarpit 1h0m0s at connect" {
			break
		}
	}
	c.nc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := c.reply(); err == nil || !isTimeout(err) {
		t.Fatalf("greeting came through the tarpit: %v", err)
	}
	// Closing the server cuts the tarpit short.
	s.Close()
}

// STARTTLS with a rule after it: commands are journaled with TLS=true and
// the rules see them.
func TestStartTLSThenRulesSeeTLSCommands(t *testing.T) {
	tlsCfg, _ := SelfSignedTLS()
	s := startServer(t, "rules:\n  - match: {stage: mail, sender: \"*@tls.test\"}\n    reply: \"550 5.7.1 no\"\n", func(c *Config) { c.TLS = tlsCfg })
	c := dialRaw(t, s.Addr())
	c.greeting()
	if msg := c.must("EHLO a.test", 250); !strings.Contains(msg, "STARTTLS") {
		t.Fatalf("STARTTLS not offered: %q", msg)
	}
	c.must("STARTTLS", 220)
	if err := c.startTLS(); err != nil {
		t.Fatal(err)
	}
	if msg := c.must("EHLO a.test", 250); strings.Contains(msg, "STARTTLS") {
		t.Fatalf("STARTTLS offered under TLS: %q", msg)
	}
	c.must("MAIL FROM:<x@tls.test>", 550)
	c.must("QUIT", 221)
	var tlsMail, tlsReply bool
	pollUntil(t, "journal", func() bool {
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventCommand && ev.TLS && ev.Command == "MAIL FROM:<x@tls.test>" {
				tlsMail = true
			}
			if ev.Kind == EventReply && ev.TLS && ev.Reply.Code == 550 {
				tlsReply = true
			}
		}
		return tlsMail && tlsReply
	})
}

// --- match fields ---------------------------------------------------------

func TestMatchAttemptRanges(t *testing.T) {
	s := startServer(t, `rules:
  - match: {stage: rcpt, attempt: "1-3"}
    reply: "451 4.7.1 early"
  - match: {stage: rcpt, attempt: "5-"}
    reply: "550 5.7.1 late"
`, nil)
	want := []int{451, 451, 451, 0, 550, 550}
	for i, w := range want {
		code, err := send(t, s.Addr(), "a@client.test", "b@remote.test")
		if code != w {
			t.Fatalf("attempt %d: got %d %v, want %d", i+1, code, err, w)
		}
	}
	// Attempts count per triplet: another recipient starts at 1.
	if code, _ := send(t, s.Addr(), "a@client.test", "other@remote.test"); code != 451 {
		t.Fatalf("other triplet attempt 1: %d", code)
	}
	// The journal numbers each recipient's attempts.
	var got []int
	pollUntil(t, "7 transactions", func() bool {
		n := 0
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventTransaction {
				n++
			}
		}
		return n == 7
	})
	for _, ev := range journalEvents(t, s) {
		if ev.Kind == EventTransaction && ev.Transaction.Rcpts[0].Addr == "b@remote.test" {
			got = append(got, ev.Transaction.Rcpts[0].Attempt)
		}
	}
	sort.Ints(got) // each transaction is journaled when its session ends, not in RCPT order
	if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Fatalf("attempts journaled: %v", got)
	}
}

func TestMatchConnection(t *testing.T) {
	s := startServer(t, "rules:\n  - match: {stage: connect, connection: \"2\"}\n    reply: \"421 4.3.2 second\"\n", nil)
	for i, want := range []int{220, 421, 220} {
		c := dialRaw(t, s.Addr())
		if code, msg, err := c.reply(); code != want {
			t.Fatalf("connection %d: %d %q %v", i+1, code, msg, err)
		}
	}
}

func TestMatchClientCIDR(t *testing.T) {
	s := startServer(t, "rules:\n  - match: {stage: connect, client: 127.0.0.2/32}\n    reply: \"554 5.7.1 not you\"\n  - match: {stage: helo, client: \"127.0.0.0/8\"}\n    reply: \"550 5.7.1 loopback helo\"\n", nil)
	c := dialRawFrom(t, s.Addr(), "127.0.0.2")
	if code, _, _ := c.reply(); code != 554 {
		t.Fatalf("127.0.0.2: %d", code)
	}
	c = dialRawFrom(t, s.Addr(), "127.0.0.1")
	c.greeting()
	c.must("EHLO x.test", 550)
}

func TestMatchGlobs(t *testing.T) {
	s := startServer(t, `rules:
  - match: {stage: helo, helo: "*.bad.test"}
    reply: "550 5.7.1 bad helo"
  - match: {stage: mail, sender: "spam*@*"}
    reply: "550 5.7.1 bad sender"
  - match: {stage: rcpt, rcpt: "?ost@*.test"}
    reply: "550 5.1.1 lost"
  - match: {stage: data, helo: "slow.test"}
    reply: "451 4.3.0 data later"
  - match: {stage: eod, rcpt: "eod@*"}
    reply: "554 5.6.0 no body"
`, nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO Host.BAD.test", 550) // globs are case-insensitive
	c.must("EHLO good.test", 250)
	c.must("MAIL FROM:<SPAMmer@x.test>", 550)
	c.must("MAIL FROM:<ok@x.test>", 250)
	c.must("RCPT TO:<Lost@remote.test>", 550)
	c.must("RCPT TO:<eod@remote.test>", 250)
	c.must("DATA", 354)
	c.write(rawBody)
	c.must(".", 554)
	c.must("EHLO slow.test", 250)
	c.must("MAIL FROM:<ok@x.test>", 250)
	c.must("RCPT TO:<b@remote.test>", 250)
	c.must("DATA", 451)
	c.must("QUIT", 221)
}

func TestMatchAfterBeforeWithInjectedClock(t *testing.T) {
	clock := newClock()
	s := startServer(t, `rules:
  - match: {stage: rcpt, after: 10m, before: 20m}
    reply: "451 4.3.2 maintenance window"
`, func(c *Config) { c.Now = clock.Now })
	for _, step := range []struct {
		advance time.Duration
		want    int
	}{{0, 0}, {10 * time.Minute, 451}, {9 * time.Minute, 451}, {time.Minute, 0}, {time.Hour, 0}} {
		clock.Add(step.advance)
		if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != step.want {
			t.Fatalf("at +%s: %d %v, want %d", clock.Now().Sub(s.Started()), code, err, step.want)
		}
	}
}

// --- pipelining, BDAT -----------------------------------------------------

func TestPipeliningRepliesInOrder(t *testing.T) {
	s := startServer(t, "rules:\n  - match: {stage: rcpt, rcpt: \"bad@*\"}\n    reply: \"550 5.1.1 bad\"\n", nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	if msg := c.must("EHLO p.test", 250); !strings.Contains(msg, "PIPELINING") {
		t.Fatalf("no PIPELINING: %q", msg)
	}
	// RFC 2920: MAIL, RCPT, RCPT, DATA in one write.
	c.write("MAIL FROM:<a@p.test>\r\nRCPT TO:<good@r.test>\r\nRCPT TO:<bad@r.test>\r\nDATA\r\n")
	for i, want := range []int{250, 250, 550, 354} {
		if code, msg, err := c.reply(); code != want {
			t.Fatalf("pipelined reply %d: %d %q %v, want %d", i, code, msg, err, want)
		}
	}
	// The body, the dot and the next transaction in one write too.
	c.write(rawBody + ".\r\nMAIL FROM:<a2@p.test>\r\nRCPT TO:<bad@r.test>\r\nRSET\r\nNOOP\r\n")
	for i, want := range []int{250, 250, 550, 250, 250} {
		if code, msg, err := c.reply(); code != want {
			t.Fatalf("second batch reply %d: %d %q %v, want %d", i, code, msg, err, want)
		}
	}
	c.must("QUIT", 221)
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 || len(msgs[0].RcptTo) != 1 || msgs[0].RcptTo[0] != "good@r.test" {
		t.Fatalf("messages: %+v", msgs)
	}
	// Every pipelined command is journaled, in order, each followed by its reply.
	var seq []string
	for _, ev := range journalOfConn(t, s, 1) {
		switch ev.Kind {
		case EventCommand:
			v, _, _ := strings.Cut(ev.Command, " ")
			seq = append(seq, v)
		case EventReply:
			seq = append(seq, fmt.Sprint(ev.Reply.Code))
		}
	}
	want := "220 EHLO 250 MAIL 250 RCPT 250 RCPT 550 DATA 354 250 MAIL 250 RCPT 550 RSET 250 NOOP 250 QUIT 221"
	if got := strings.Join(seq, " "); got != want {
		t.Fatalf("journal order:\n got %s\nwant %s", got, want)
	}
}

func TestBDATChunksPassIntact(t *testing.T) {
	s := startServer(t, "", nil)
	c := dialRaw(t, s.Addr())
	c.greeting()
	if msg := c.must("EHLO b.test", 250); !strings.Contains(msg, "CHUNKING") {
		t.Fatalf("no CHUNKING: %q", msg)
	}
	c.must("MAIL FROM:<a@b.test>", 250)
	c.must("RCPT TO:<r@b.test>", 250)
	// Chunks hold things the tap must not read as commands or an end of data.
	part1 := "From: a@b.test\r\nMessage-ID: <bdat@b.test>\r\nX-Greyharness-Id: gh-bdat\r\n\r\nQUIT\r\n.\r\nSTARTTLS\r\n"
	part2 := "DATA\r\n.\r\n\x00\xff binary\r\n"
	c.write(fmt.Sprintf("BDAT %d\r\n%s", len(part1), part1))
	if code, msg, err := c.reply(); code != 250 {
		t.Fatalf("BDAT 1: %d %q %v", code, msg, err)
	}
	// The last chunk pipelined with the next command.
	c.write(fmt.Sprintf("BDAT %d LAST\r\n%sNOOP\r\n", len(part2), part2))
	if code, msg, err := c.reply(); code != 250 || !strings.Contains(msg, "queued") {
		t.Fatalf("BDAT LAST: %d %q %v", code, msg, err)
	}
	if code, _, _ := c.reply(); code != 250 {
		t.Fatalf("NOOP after BDAT LAST: %d", code)
	}
	c.must("QUIT", 221)
	msgs, _ := s.Journal().Messages()
	sum := sha256.Sum256([]byte(part1 + part2))
	if len(msgs) != 1 || msgs[0].SHA256 != hex.EncodeToString(sum[:]) || msgs[0].Size != int64(len(part1+part2)) ||
		msgs[0].HarnessID != "gh-bdat" || !msgs[0].Accepted {
		t.Fatalf("BDAT message: %+v", msgs)
	}
	var cmds []string
	for _, ev := range journalOfConn(t, s, 1) {
		if ev.Kind == EventCommand {
			cmds = append(cmds, ev.Command)
		}
	}
	want := fmt.Sprintf("EHLO b.test|MAIL FROM:<a@b.test>|RCPT TO:<r@b.test>|BDAT %d|BDAT %d LAST|NOOP|QUIT", len(part1), len(part2))
	if got := strings.Join(cmds, "|"); got != want {
		t.Fatalf("commands journaled:\n got %s\nwant %s", got, want)
	}
}

// BDAT through go-smtp's own client (which uses CHUNKING when offered).
func TestBDATWithGoSMTPClient(t *testing.T) {
	s := startServer(t, "", nil)
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SendMail("a@b.test", []string{"r@b.test"}, strings.NewReader(testMsg)); err != nil {
		t.Fatal(err)
	}
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 || msgs[0].Size != int64(len(testMsg)) {
		t.Fatalf("messages %+v", msgs)
	}
}
