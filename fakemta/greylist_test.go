package fakemta

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sendFrom delivers testMsg from a chosen local address and returns the
// first failing reply (code 0 = delivered) and its error.
func sendFrom(t *testing.T, addr, localIP, from string, rcpts ...string) (int, error) {
	t.Helper()
	nc := dialFrom(t, addr, localIP)
	return transact(smtp.NewClient(nc), from, rcpts...)
}

type greyStep struct {
	advance time.Duration
	from    string // local IP, "" = 127.0.0.1
	sender  string
	rcpt    string
	want    int    // 0 = delivered
	text    string // the reply must contain it
}

func runGreySteps(t *testing.T, s *Server, clock *fakeClock, steps []greyStep) {
	t.Helper()
	for i, st := range steps {
		clock.Add(st.advance)
		sender, rcpt := st.sender, st.rcpt
		if sender == "" {
			sender = "a@client.test"
		}
		if rcpt == "" {
			rcpt = "b@remote.test"
		}
		code, err := sendFrom(t, s.Addr(), st.from, sender, rcpt)
		if code != st.want {
			t.Fatalf("step %d (+%s, %s %s→%s): got %d %v, want %d", i, st.advance, st.from, sender, rcpt, code, err, st.want)
		}
		if st.text != "" && (err == nil || !strings.Contains(err.Error(), st.text)) {
			t.Fatalf("step %d: reply %v, want it to contain %q", i, err, st.text)
		}
	}
}

func greyServer(t *testing.T, policy string) (*Server, *fakeClock) {
	clock := newClock()
	s := startServer(t, policy, func(c *Config) { c.Now = clock.Now })
	return s, clock
}

func TestGreylistDelayAndEarlyRetry(t *testing.T) {
	s, clock := greyServer(t, "greylist:\n  delay: 300s\n  auto_whitelist_after: 0\n")
	runGreySteps(t, s, clock, []greyStep{
		{want: 451, text: "try again in 300 seconds"},
		{advance: 100 * time.Second, want: 451, text: "200 seconds"}, // the clock keeps running from the first try
		{advance: 199 * time.Second, want: 451, text: "1 seconds"},
		{advance: time.Second, want: 0}, // exactly the delay: passes
		{advance: time.Second, want: 0}, // and stays passed
	})
	// Transactions are journaled as sessions end; order them by attempt.
	outcomes := make([]string, 5)
	pollUntil(t, "5 transactions", func() bool {
		n := 0
		for _, ev := range journalEvents(t, s) {
			if ev.Kind == EventTransaction {
				r := ev.Transaction.Rcpts[0]
				outcomes[r.Attempt-1] = r.Greylist
				n++
			}
		}
		return n == 5
	})
	if got := strings.Join(outcomes, ","); got != "deferred,deferred,deferred,passed,passed" {
		t.Fatalf("journaled outcomes %s", got)
	}
	es := s.Greylist()
	if len(es) != 1 || es[0].Passes != 2 || es[0].Attempts != 5 || es[0].Subnet != "127.0.0.0/24" {
		t.Fatalf("greylist entries %+v", es)
	}
}

func TestGreylistRetryWindow(t *testing.T) {
	s, clock := greyServer(t, "greylist:\n  delay: 60s\n  retry_window: 1h\n  auto_whitelist_after: 0\n")
	runGreySteps(t, s, clock, []greyStep{
		{want: 451, text: "60 seconds"},
		{advance: time.Hour + time.Second, want: 451, text: "60 seconds"}, // too late: the clock restarts
		{advance: 59 * time.Second, want: 451, text: "1 seconds"},
		{advance: time.Second, want: 0},
	})
}

func TestGreylistMaxAge(t *testing.T) {
	s, clock := greyServer(t, "greylist:\n  delay: 60s\n  max_age: 1d\n  auto_whitelist_after: 0\n")
	runGreySteps(t, s, clock, []greyStep{
		{want: 451},
		{advance: time.Minute, want: 0},
		{advance: 23 * time.Hour, want: 0}, // seen within max age: still passes
		{advance: 24*time.Hour + time.Second, want: 451, text: "60 seconds"}, // unseen for longer: greylisted again
		{advance: time.Minute, want: 0},
	})
}

func TestGreylistSubnet(t *testing.T) {
	for _, tc := range []struct {
		bits int
		want int // second client's result after the delay
	}{{24, 0}, {32, 451}} {
		t.Run("v4_"+strconv.Itoa(tc.bits), func(t *testing.T) {
			s, clock := greyServer(t, "greylist:\n  delay: 10s\n  auto_whitelist_after: 0\n  subnet_v4: "+strconv.Itoa(tc.bits)+"\n")
			runGreySteps(t, s, clock, []greyStep{
				{from: "127.0.0.2", want: 451},
				{advance: 11 * time.Second, from: "127.0.0.1", want: tc.want},
				{from: "127.0.0.2", want: 0},
			})
		})
	}
}

func TestGreylistTripletsAreCaseInsensitive(t *testing.T) {
	s, clock := greyServer(t, "greylist:\n  delay: 10s\n  auto_whitelist_after: 0\n")
	runGreySteps(t, s, clock, []greyStep{
		{sender: "Alice@Client.TEST", rcpt: "Bob@Remote.Test", want: 451},
		{advance: 10 * time.Second, sender: "alice@client.test", rcpt: "bob@remote.test", want: 0},
	})
}

func TestGreylistAutoWhitelist(t *testing.T) {
	t.Run("after2", func(t *testing.T) {
		s, clock := greyServer(t, "greylist:\n  delay: 10s\n  auto_whitelist_after: 2\n  subnet_v4: 24\n")
		runGreySteps(t, s, clock, []greyStep{
			{rcpt: "r1@remote.test", want: 451},
			{advance: 10 * time.Second, rcpt: "r1@remote.test", want: 0},
			{rcpt: "r2@remote.test", want: 451},
			{advance: 10 * time.Second, rcpt: "r2@remote.test", want: 0},
			{rcpt: "r3@remote.test", want: 0},                    // subnet has 2 passes: whitelisted
			{from: "127.0.0.9", rcpt: "r4@remote.test", want: 0}, // the same /24
		})
		waitJournal(t, s, "r3 whitelisted", func(ev Event) bool {
			return ev.Kind == EventTransaction && ev.Transaction.Rcpts[0].Addr == "r3@remote.test" && ev.Transaction.Rcpts[0].Greylist == "whitelisted"
		})
	})
	t.Run("off", func(t *testing.T) {
		s, clock := greyServer(t, "greylist:\n  delay: 10s\n  auto_whitelist_after: 0\n")
		steps := []greyStep{}
		for _, r := range []string{"r1", "r2", "r3", "r4", "r5", "r6"} {
			steps = append(steps, greyStep{rcpt: r + "@remote.test", want: 451}, greyStep{advance: 10 * time.Second, rcpt: r + "@remote.test", want: 0})
		}
		steps = append(steps, greyStep{rcpt: "new@remote.test", want: 451})
		runGreySteps(t, s, clock, steps)
	})
}

func TestGreylistAtEOD(t *testing.T) {
	s, clock := greyServer(t, "greylist:\n  delay: 10s\n  stage: eod\n  auto_whitelist_after: 0\n")
	// Two recipients: the whole message is deferred after the body.
	c := dialRaw(t, s.Addr())
	c.greeting()
	c.must("EHLO e.test", 250)
	c.must("MAIL FROM:<a@e.test>", 250)
	c.must("RCPT TO:<r1@e.test>", 250)
	c.must("RCPT TO:<r2@e.test>", 250)
	c.must("DATA", 354)
	c.write(rawBody)
	if msg := c.must(".", 451); !strings.Contains(msg, "4.7.1") || !strings.Contains(msg, "10 seconds") {
		t.Fatalf("eod greylist reply %q", msg)
	}
	c.must("QUIT", 221)
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 1 || msgs[0].Accepted {
		t.Fatalf("deferred message: %+v", msgs)
	}
	clock.Add(10 * time.Second)
	// r1 passes, r3 is new: the message is still deferred as a whole.
	if code, err := sendFrom(t, s.Addr(), "", "a@e.test", "r1@e.test", "r3@e.test"); code != 451 {
		t.Fatalf("mixed retry: %d %v", code, err)
	}
	if code, err := sendFrom(t, s.Addr(), "", "a@e.test", "r1@e.test", "r2@e.test"); code != 0 {
		t.Fatalf("retry after delay: %d %v", code, err)
	}
	msgs, _ = s.Journal().Messages()
	if len(msgs) != 3 || msgs[0].Accepted || msgs[1].Accepted || !msgs[2].Accepted {
		t.Fatalf("messages %+v", msgs)
	}
	var tx *Transaction
	waitJournal(t, s, "delivered transaction", func(e Event) bool {
		if e.Kind == EventTransaction && e.Transaction.Data != nil && e.Transaction.Data.Code == 250 {
			tx = e.Transaction
			return true
		}
		return false
	})
	if tx.Rcpts[0].Greylist != "passed" || tx.Rcpts[1].Greylist != "passed" || tx.Data.Code != 250 {
		t.Fatalf("last transaction %+v", tx)
	}
}

func TestGreylistCustomReply(t *testing.T) {
	s, _ := greyServer(t, "greylist:\n  delay: 2m\n  reply: \"450 4.2.0 come back in %s s\"\n")
	code, err := send(t, s.Addr(), "a@client.test", "b@remote.test")
	var se *smtp.SMTPError
	if code != 450 || !errors.As(err, &se) || se.EnhancedCode != (smtp.EnhancedCode{4, 2, 0}) || se.Message != "come back in 120 s" {
		t.Fatalf("custom reply: %d %+v", code, se)
	}
}

func TestAcceptRuleBypassesGreylist(t *testing.T) {
	s, _ := greyServer(t, "greylist:\n  delay: 2m\nrules:\n  - match: {rcpt: \"vip@*\"}\n    accept: true\n")
	if code, err := send(t, s.Addr(), "a@client.test", "vip@remote.test"); code != 0 {
		t.Fatalf("vip: %d %v", code, err)
	}
	if code, _ := send(t, s.Addr(), "a@client.test", "other@remote.test"); code != 451 {
		t.Fatalf("other: %d", code)
	}
}
