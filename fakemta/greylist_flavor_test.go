package fakemta

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// msgSpec is one message for deliver.
type msgSpec struct {
	from   string // local IP, "" = 127.0.0.1
	helo   string // "" = relay.client.test
	sender string
	rcpts  []string
	msgID  string // Message-ID without brackets
	body   string
}

// deliver sends m to addr and returns the first failing reply (code 0 = delivered).
func deliver(t *testing.T, addr string, m msgSpec) (int, error) {
	t.Helper()
	c := smtp.NewClient(dialFrom(t, addr, m.from))
	defer c.Close()
	helo := m.helo
	if helo == "" {
		helo = "relay.client.test"
	}
	if err := c.Hello(helo); err != nil {
		return codeOf(err), err
	}
	if err := c.Mail(m.sender, nil); err != nil {
		return codeOf(err), err
	}
	for _, r := range m.rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return codeOf(err), err
		}
	}
	w, err := c.Data()
	if err != nil {
		return codeOf(err), err
	}
	msg := "From: " + m.sender + "\r\nTo: " + strings.Join(m.rcpts, ", ") + "\r\nMessage-ID: <" + m.msgID + ">\r\nSubject: t\r\n\r\n" + m.body
	if _, err := w.Write([]byte(msg)); err != nil {
		return 0, err
	}
	if err := w.Close(); err != nil {
		return codeOf(err), err
	}
	return 0, c.Quit()
}

type mailStep struct {
	advance time.Duration
	m       msgSpec
	want    int
	text    string // the reply must contain it
	enh     string // the reply's enhanced code, when set
}

func runMailSteps(t *testing.T, s *Server, clock *fakeClock, base msgSpec, steps []mailStep) {
	t.Helper()
	for i, st := range steps {
		clock.Add(st.advance)
		m := base
		if st.m.from != "" {
			m.from = st.m.from
		}
		if st.m.helo != "" {
			m.helo = st.m.helo
		}
		if st.m.sender != "" {
			m.sender = st.m.sender
		}
		if st.m.rcpts != nil {
			m.rcpts = st.m.rcpts
		}
		if st.m.msgID != "" {
			m.msgID = st.m.msgID
		}
		if st.m.body != "" {
			m.body = st.m.body
		}
		code, err := deliver(t, s.Addr(), m)
		if code != st.want {
			t.Fatalf("step %d (+%s, %+v): got %d %v, want %d", i, st.advance, m, code, err, st.want)
		}
		if st.text != "" && (err == nil || !strings.Contains(err.Error(), st.text)) {
			t.Fatalf("step %d: reply %v, want it to contain %q", i, err, st.text)
		}
		var se *smtp.SMTPError
		if st.enh != "" && (!errors.As(err, &se) || enhancedString(se.EnhancedCode) != st.enh) {
			t.Fatalf("step %d: reply %v, want enhanced code %s", i, err, st.enh)
		}
	}
}

var flavorBase = msgSpec{sender: "a@client.test", rcpts: []string{"b@remote.test"}, msgID: "m1@client.test", body: "hello\r\n"}

func TestPostgreySenderNormalisation(t *testing.T) {
	for in, want := range map[string]string{
		"list+bounce-123-4567@lists.example": "list@lists.example",
		"bounce-123-4567@lists.example":      "bounce-#-#@lists.example",
		"user123@example.test":               "user123@example.test", // no word boundary before the digits
		"123.456@example.test":               "#.#@example.test",
		"a-1@ex4mple-1.test":                 "a-#@ex4mple-1.test", // the domain is left alone
		"prvs=0123456789=user@example.test":  "user@example.test",  // BATV tag first
		"prvs=user=0123456789@example.test":  "user@example.test",  // tag last
		"nobody":                             "nobody",
	} {
		if got := postgreySender(in); got != want {
			t.Errorf("postgreySender(%q) = %q, want %q", in, got, want)
		}
	}
}

func flavorPostgrey(t *testing.T, mod func(*Config)) {
	s, clock := greyServerWith(t, mod, "greylist:\n  flavor: postgrey\n")
	base := flavorBase
	base.sender = "news-1234@client.test"
	runMailSteps(t, s, clock, base, []mailStep{
		{want: 450, enh: "4.2.0", text: "<b@remote.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/remote.test.html"},
		// VERP and +extension variants are the same sender to postgrey.
		{advance: 299 * time.Second, m: msgSpec{sender: "news-99+x@client.test"}, want: 450},
		// the same /24 counts as the same client
		{advance: time.Second, m: msgSpec{from: "127.0.0.2", sender: "news-7@client.test"}, want: 0},
		{m: msgSpec{from: "127.0.1.1"}, want: 450}, // another /24
	})
	// Passes whitelist the full client address, counted once an hour:
	// a and b pass within one hour (one count), c to f an hour apart.
	pass := func(from, rcpt string, gap time.Duration) {
		runMailSteps(t, s, clock, base, []mailStep{
			{advance: gap, m: msgSpec{from: from, rcpts: []string{rcpt}}, want: 450},
			{advance: 300 * time.Second, m: msgSpec{from: from, rcpts: []string{rcpt}}, want: 0},
		})
	}
	pass("127.0.5.1", "a@remote.test", time.Hour)
	pass("127.0.5.1", "b@remote.test", 0)
	for _, r := range []string{"c", "d", "e"} {
		pass("127.0.5.1", r+"@remote.test", time.Hour)
	}
	runMailSteps(t, s, clock, base, []mailStep{{m: msgSpec{from: "127.0.5.1", rcpts: []string{"x@remote.test"}}, want: 450}})
	pass("127.0.5.1", "f@remote.test", time.Hour)
	runMailSteps(t, s, clock, base, []mailStep{
		{m: msgSpec{from: "127.0.5.1", rcpts: []string{"y@remote.test"}}, want: 0},   // whitelisted
		{m: msgSpec{from: "127.0.5.2", rcpts: []string{"y@remote.test"}}, want: 450}, // same /24, other address
	})
}

func flavorMilterGreylist(t *testing.T, mod func(*Config)) {
	s, clock := greyServerWith(t, mod, "greylist:\n  flavor: milter-greylist\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{want: 451, enh: "4.7.1", text: "Greylisting in action, please come back in 00:30:00"},
		{advance: 29*time.Minute + 59*time.Second, want: 451, text: "come back in 00:00:01"},
		{m: msgSpec{from: "127.0.0.2"}, want: 451, text: "00:30:00"}, // the full address is the key
		{advance: time.Second, want: 0},
		{advance: 23 * time.Hour, want: 0},   // auto-whitelisted for a day after its last use
		{advance: 25 * time.Hour, want: 451}, // then greylisted afresh
	})
	// A pending tuple is kept five days (TIMEOUT), not postgrey's two.
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{m: msgSpec{rcpts: []string{"late@remote.test"}}, want: 451},
		{advance: 4 * 24 * time.Hour, m: msgSpec{rcpts: []string{"late@remote.test"}}, want: 0},
	})
}

func flavorRspamd(t *testing.T, mod func(*Config)) {
	s, clock := greyServerWith(t, mod, "greylist:\n  flavor: rspamd\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		// after the final dot, with rspamd's milter reply
		{want: 451, enh: "4.7.1", text: "Try again later"},
		// the same body from a new /19 before it matured: deferred, no new record
		{advance: 100 * time.Second, m: msgSpec{from: "127.0.64.1"}, want: 451},
		// a big sender retries from another address once the body matured: it passes
		{advance: 200 * time.Second, m: msgSpec{from: "127.0.128.1", rcpts: []string{"c@remote.test", "b@remote.test"}}, want: 0},
		// another body from a new address is new
		{m: msgSpec{from: "127.0.160.1", body: "other\r\n"}, want: 451},
		// the first envelope (client /19, sender, recipients) matured too: any body passes
		{m: msgSpec{from: "127.0.31.9", body: "third\r\n"}, want: 0},
	})
	msgs, _ := s.Journal().Messages()
	if len(msgs) != 5 || msgs[0].Accepted || !msgs[2].Accepted {
		t.Fatalf("messages: %+v", msgs)
	}
	// Records expire a day after their last use.
	runMailSteps(t, s, clock, flavorBase, []mailStep{{advance: 24*time.Hour + time.Second, want: 451}})
}

func flavorRspamdBodyKeySurvivesRestart(t *testing.T, mod func(*Config)) {
	dir := t.TempDir()
	clock := newClock()
	restartable := func(c *Config) { c.Now, c.StateDir = clock.Now, dir; mod(c) }
	s := startServer(t, "greylist:\n  flavor: rspamd\n", restartable)
	runMailSteps(t, s, clock, flavorBase, []mailStep{{want: 451}})
	s.Close()
	s = startServer(t, "greylist:\n  flavor: rspamd\n", restartable)
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{advance: 100 * time.Second, m: msgSpec{from: "127.0.64.1"}, want: 451},
		{advance: 200 * time.Second, m: msgSpec{from: "127.0.128.1"}, want: 0},
	})
}

func flavorExim(t *testing.T, mod func(*Config)) {
	s, clock := greyServerWith(t, mod, "greylist:\n  flavor: exim\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{want: 451, text: "You should wait another 300 seconds"},
		// no client address in the identity: the retry may come from anywhere
		{advance: 300 * time.Second, m: msgSpec{from: "127.0.64.1", helo: "backup.client.test"}, want: 0},
		// a new Message-ID is a new mail, from the retrying host
		{m: msgSpec{from: "127.0.64.1", helo: "backup.client.test", msgID: "m2@client.test"}, want: 451},
		// the host that first sent the retried mail is a known resender
		{m: msgSpec{msgID: "m3@client.test"}, want: 0},
		// by address and HELO
		{m: msgSpec{helo: "other.client.test", msgID: "m4@client.test"}, want: 451},
	})
	var tx *Transaction
	waitJournal(t, s, "whitelisted transaction", func(e Event) bool {
		if e.Kind == EventTransaction && e.Transaction.Message != nil && e.Transaction.Message.MessageID == "m3@client.test" {
			tx = e.Transaction
			return true
		}
		return false
	})
	if r := tx.Rcpts[0]; r.Greylist != greyWhitelisted || !strings.Contains(r.Key, "<m3@client.test>") || r.WhitelistKey != "127.0.0.1 relay.client.test" {
		t.Fatalf("journaled rcpt %+v", r)
	}
}

func flavorKeysOverridable(t *testing.T, mod func(*Config)) {
	// postgrey's defaults, but no normalisation and a 60 s delay
	s, clock := greyServerWith(t, mod, "greylist:\n  delay: 60s\n  sender_normalize: none\n  flavor: postgrey\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{want: 450, text: "postgrey"},
		{advance: 60 * time.Second, m: msgSpec{sender: "a+x@client.test"}, want: 450}, // a different sender now
		{want: 0},
	})
	// rspamd without the client in its key
	s, clock = greyServerWith(t, mod, "greylist:\n  flavor: rspamd\n  key: [sender, recipients_sorted]\n  body_key: 0\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{want: 451},
		{advance: 300 * time.Second, m: msgSpec{from: "127.0.64.1", body: "x\r\n"}, want: 0},
	})
}

func TestGreylistFlavorPolicyErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"greylist:\n  flavor: sendmail\n", "test.yaml:2:11: unknown greylist flavor \"sendmail\""},
		{"greylist:\n  key: [client, message_id]\n", "test.yaml:2:3: a greylist key with recipients, message_id or body_key needs stage: eod"},
		{"greylist:\n  flavor: rspamd\n  stage: rcpt\n", "test.yaml:3:10: a greylist key with recipients"},
		{"greylist:\n  key: [client, helo]\n", "test.yaml:2:17: unknown greylist key part \"helo\""},
		{"greylist:\n  key: [recipient, recipients]\n  stage: eod\n", "give one of recipient, recipients, recipients_sorted"},
		{"greylist:\n  sender_normalize: yes\n", "sender_normalize must be postgrey or none"},
		{"greylist:\n  auto_whitelist_by: helo\n", "auto_whitelist_by must be subnet, client or client_helo"},
		{"mx:\n  state: mixed\n", "test.yaml:2:10: mx state must be split or shared"},
		{"mx:\n  hosts: [192.0.2.1:25]\n", "must be a loopback address"},
	} {
		_, err := ParsePolicy("test.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.yaml, err, tc.want)
		}
	}
}

// greyServerWith is greyServer with a Config change (the store).
func greyServerWith(t *testing.T, mod func(*Config), policy string) (*Server, *fakeClock) {
	clock := newClock()
	s := startServer(t, policy, func(c *Config) { c.Now = clock.Now; mod(c) })
	return s, clock
}

// greyStoreSuite runs against both stores: the same semantics.
var greyStoreSuite = []struct {
	name string
	run  func(*testing.T, func(*Config))
}{
	{"Generic", flavorGeneric},
	{"Postgrey", flavorPostgrey},
	{"MilterGreylist", flavorMilterGreylist},
	{"Rspamd", flavorRspamd},
	{"RspamdBodyKeySurvivesRestart", flavorRspamdBodyKeySurvivesRestart},
	{"Exim", flavorExim},
	{"KeysOverridable", flavorKeysOverridable},
	{"MXSplit", mxSplit},
	{"MXShared", mxShared},
}

func TestGreylistStoreMemory(t *testing.T) {
	for _, tc := range greyStoreSuite {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, func(*Config) {}) })
	}
}

// flavorGeneric: the generic flavour's delay, early retry, retry window,
// max age, subnet and auto-whitelist.
func flavorGeneric(t *testing.T, mod func(*Config)) {
	s, clock := greyServerWith(t, mod, "greylist:\n  delay: 300s\n  retry_window: 1h\n  max_age: 2h\n  auto_whitelist_after: 2\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{
		{want: 451, enh: "4.7.1", text: "try again in 300 seconds"},
		{advance: 100 * time.Second, want: 451, text: "in 200 seconds"},      // the clock is not reset
		{advance: 200 * time.Second, m: msgSpec{from: "127.0.0.7"}, want: 0}, // same /24
		{advance: 2*time.Hour + time.Second, want: 451},                      // unseen longer than max age
		{m: msgSpec{rcpts: []string{"late@remote.test"}}, want: 451},
		{advance: time.Hour + time.Second, m: msgSpec{rcpts: []string{"late@remote.test"}}, want: 451}, // past the retry window: anew
		{advance: 300 * time.Second, m: msgSpec{rcpts: []string{"late@remote.test"}}, want: 0},         // second pass of the /24
		{m: msgSpec{from: "127.0.0.200", rcpts: []string{"any@remote.test"}}, want: 0},                 // the /24 is whitelisted
		{m: msgSpec{from: "127.0.1.1", rcpts: []string{"any@remote.test"}}, want: 451},
	})
}

// TestFlavorPolicyDocumentRoundTrip: GET /api/v1/policy's document of a
// flavoured policy parses back to the same greylist (internal settings
// included: they come from the flavour).
func TestFlavorPolicyDocumentRoundTrip(t *testing.T) {
	for _, f := range Flavors {
		in := parseTestPolicy(t, "greylist:\n  flavor: "+f+"\n  delay: 61s\nmx: {state: split, hosts: [127.0.0.2:2525]}\n")
		doc, err := json.Marshal(PolicyDocument(in))
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePolicy("doc.json", doc)
		if err != nil {
			t.Fatalf("%s: %s does not parse back: %v", f, doc, err)
		}
		if !reflect.DeepEqual(in.Greylist, back.Greylist) || !reflect.DeepEqual(in.MX, back.MX) {
			t.Errorf("%s: round trip\n%+v\n%+v", f, *in.Greylist, *back.Greylist)
		}
	}
}

// TestGreylistMadeInGoKeysTriplets: a Greylist built in Go (no Key) keys
// on the generic triplet, not on one empty key for everything.
func TestGreylistMadeInGoKeysTriplets(t *testing.T) {
	gl := &Greylist{Delay: time.Minute}
	g := newGreylistState()
	now := time.Unix(0, 0)
	k1 := gl.buildKey(greyInput{client: "127.0.0.1:1", sender: "a@x", rcpt: "b@y"})
	k2 := gl.buildKey(greyInput{client: "127.0.0.1:1", sender: "a@x", rcpt: "c@y"})
	if k1.ID == k2.ID || !strings.HasSuffix(k1.ID, "|a@x|b@y") {
		t.Fatalf("keys %q %q", k1.ID, k2.ID)
	}
	g.check(gl, k1, now)
	if o, _ := g.check(gl, k2, now.Add(time.Minute)); o != greyDeferred {
		t.Fatalf("another recipient: %s, want deferred", o)
	}
}
