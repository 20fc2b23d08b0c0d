package fakemta

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// BenchmarkDeliver: one message per op over a kept-open go-smtp client, to
// a server with the journal in memory, on disk with one fsync per message,
// and on disk with an fsync every 100 ms.
func BenchmarkDeliver(b *testing.B) {
	for _, tc := range []struct {
		name  string
		state bool
		sync  time.Duration
	}{{"memory", false, 0}, {"statedir", true, 0}, {"statedir-sync100ms", true, 100 * time.Millisecond}} {
		b.Run(tc.name, func(b *testing.B) {
			cfg := Config{Policy: &Policy{}, Logf: b.Logf, JournalSync: tc.sync}
			if tc.state {
				cfg.StateDir = b.TempDir()
			}
			c := benchClient(b, cfg)
			body := testMsg + strings.Repeat("x", 1024) + "\r\n"
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := c.SendMail("a@client.test", []string{"b@remote.test"}, strings.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJournalAppend: appending a typical transaction event.
func BenchmarkJournalAppend(b *testing.B) {
	tx := &Transaction{Helo: "relay.client.test", MailFrom: "a@client.test", Mail: Reply{Code: 250, Enhanced: "2.1.0", Text: "Sender OK"},
		Rcpts: []RcptAttempt{{Addr: "b@remote.test", Attempt: 1, Reply: Reply{Code: 250, Enhanced: "2.1.5", Text: "Recipient OK"}, Greylist: "passed"}},
		Data:  &Reply{Code: 250, Enhanced: "2.0.0", Text: "OK: queued as m1"},
		Message: &Message{ID: "m1-x", MessageID: "m1@client.test", HarnessID: "gh-1", MailFrom: "a@client.test",
			RcptTo: []string{"b@remote.test"}, ReceivedAt: time.Now(), Size: 1200, SHA256: strings.Repeat("ab", 32), Accepted: true}}
	for _, tc := range []struct {
		name    string
		state   bool
		durable bool
	}{{"memory", false, false}, {"file", true, false}, {"file-fsync", true, true}} {
		b.Run(tc.name, func(b *testing.B) {
			dir := ""
			if tc.state {
				dir = b.TempDir()
			}
			j, err := openJournal(dir, 0, time.Now, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer j.Close()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := j.Append(Event{Kind: EventTransaction, Conn: 1, Client: "127.0.0.1:1234", Transaction: tx}, tc.durable); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchClient serves a fake MTA made from cfg on 127.0.0.1:0 and returns a
// client that has said EHLO to it; both are closed when b ends.
func benchClient(b *testing.B, cfg Config) *smtp.Client {
	b.Helper()
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s.Serve(l)
	b.Cleanup(func() { s.Close() })
	c, err := smtp.Dial(s.Addr())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	if err := c.Hello("bench.test"); err != nil {
		b.Fatal(err)
	}
	return c
}
