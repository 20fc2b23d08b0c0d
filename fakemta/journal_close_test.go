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
