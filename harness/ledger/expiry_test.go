package ledger

import (
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
)

// A relay that gives up at its queue lifetime and tells the sender
// "Action: delayed" (OpenSMTPD 6.8: Status 4.4.7 "Envelope expired";
// nullmailer 2.2: Status 4.3.0) did report, but with a DSN that says it will
// keep trying (RFC 3464 §2.3.3): bad-dsn, not lost. A delay notice sent
// while it still tried, followed by silence, stays lost.
func TestDelayedNoticeAtExpiry(t *testing.T) {
	t451 := fakemta.Reply{Code: 451, Enhanced: "4.3.0", Text: "Temporary failure"}
	build := func(noticeAt float64) *hb {
		b := newH(330) // queue lifetime 300s, retry_max 20s
		s := b.submit("a1", 0, "judy@expire.test")
		for sec := 1.0; sec < 300; sec += 15 {
			b.reject(sec, s, "judy@expire.test", t451)
		}
		b.listing(200, queued(s))
		b.bounce(noticeAt, s, "judy@expire.test", "delayed", "4.4.7")
		b.listing(320) // gone
		return b
	}

	t.Run("at expiry", func(t *testing.T) {
		f := find(t, Judge(build(301).h), "a1", "judy@expire.test")
		want(t, f, BadDSN, true, BadDSN, DelayedNotice)
		if !strings.Contains(f.Why, "Action: delayed") || !strings.Contains(f.Why, "gave up") {
			t.Errorf("why = %q", f.Why)
		}
	})
	t.Run("before expiry, then silence", func(t *testing.T) {
		f := find(t, Judge(build(20).h), "a1", "judy@expire.test")
		want(t, f, Lost, true, Lost, DelayedNotice)
	})
	t.Run("at expiry, but still listed", func(t *testing.T) {
		b := build(301)
		s := &b.h.Submissions[0]
		b.h.Queue[len(b.h.Queue)-1].Entries = append(b.h.Queue[len(b.h.Queue)-1].Entries, queued(s))
		f := find(t, Judge(b.h), "a1", "judy@expire.test")
		if f.Primary == BadDSN {
			t.Errorf("a message still listed after its notice was not given up: %s (%s)", f.Primary, f.Why)
		}
	})
}
