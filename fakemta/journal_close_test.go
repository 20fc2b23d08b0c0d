package fakemta

import (
	"sync"
	"testing"
	"time"
)

// TestSubscriptionGetsEveryEventAtClose: a subscriber reading while the
// journal closes receives every event appended before Close, in order,
// and then sees its channel closed (issue 10 item 4: the end of the
// journal must reach the history). Run it with -count and -race.
func TestSubscriptionGetsEveryEventAtClose(t *testing.T) {
	for _, dir := range []string{"", t.TempDir()} {
		j, err := openJournal(dir, 0, time.Now, nil)
		if err != nil {
			t.Fatal(err)
		}
		ch, cancel := j.Subscribe()
		defer cancel()
		var got []uint64
		read := make(chan struct{})
		go func() {
			defer close(read)
			for ev := range ch {
				got = append(got, ev.Seq)
			}
		}()
		const writers, each = 4, 300
		var wg sync.WaitGroup
		for range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					j.Append(Event{Kind: EventCommand, Command: "NOOP"}, false)
				}
			}()
		}
		wg.Wait()
		last := j.Seq()
		if err := j.Close(); err != nil {
			t.Fatal(err)
		}
		<-read
		if uint64(len(got)) != last {
			t.Fatalf("dir %q: subscriber got %d of %d events", dir, len(got), last)
		}
		for i, s := range got {
			if s != uint64(i+1) {
				t.Fatalf("dir %q: event %d has seq %d", dir, i, s)
			}
		}
	}
}

// TestServerCloseDeliversTheEndOfTheJournal: a subscriber reading while
// the fake MTA closes under SMTP traffic gets every event, the last being
// the "stop" control event, whichever goroutine wins at close.
func TestServerCloseDeliversTheEndOfTheJournal(t *testing.T) {
	for _, state := range []bool{false, true} {
		s := startServer(t, "", func(c *Config) {
			c.Logf = func(string, ...any) {}
			if state {
				c.StateDir = t.TempDir()
			}
		})
		ch, cancel := s.Journal().Subscribe()
		defer cancel()
		var got []Event
		read := make(chan struct{})
		go func() {
			defer close(read)
			for ev := range ch {
				got = append(got, ev)
			}
		}()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := dialRaw(t, s.Addrs()[0].String())
				c.greeting()
				for range 20 {
					if code, _, err := c.cmd("NOOP"); err != nil || code != 250 {
						return
					}
				}
			}()
		}
		wg.Wait()
		first := got0(s)
		s.Close()
		<-read
		if len(got) == 0 || got[len(got)-1].Note != "stop" {
			t.Fatalf("state %v: the subscriber did not get the end of the journal (%d events)", state, len(got))
		}
		for i, ev := range got {
			if ev.Seq != first+uint64(i) {
				t.Fatalf("state %v: event %d has seq %d, want %d", state, i, ev.Seq, first+uint64(i))
			}
		}
	}
}

// got0 is the seq of the first event a subscription made after start sees.
func got0(s *Server) uint64 {
	evs, _ := s.Journal().Since(0, 0)
	for _, ev := range evs {
		if ev.Kind == EventControl && ev.Note == "start" {
			return ev.Seq + 1
		}
	}
	return 1
}
