package fakemta

import (
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// failingFile is a journal file whose writes and fsyncs fail on demand.
type failingFile struct {
	*os.File
	mu                  sync.Mutex
	failWrite, failSync error
	shortBy             int // a failing write writes all but this many bytes first
}

func (f *failingFile) WriteAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	err, short := f.failWrite, f.shortBy
	f.mu.Unlock()
	if err != nil {
		// A torn write: some bytes land (at most a few: a full disk).
		n, _ := f.File.WriteAt(p[:min(64, max(0, len(p)-short))], off)
		return n, err
	}
	return f.File.WriteAt(p, off)
}

func (f *failingFile) Sync() error {
	f.mu.Lock()
	err := f.failSync
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *failingFile) set(write, sync error) {
	f.mu.Lock()
	f.failWrite, f.failSync = write, sync
	f.mu.Unlock()
}

func injectFailingFile(t *testing.T, j *Journal) *failingFile {
	t.Helper()
	j.mu.Lock()
	defer j.mu.Unlock()
	ff := &failingFile{File: j.file.(*os.File), shortBy: 7}
	j.file = ff
	return ff
}

func txEvent(code int) Event {
	return Event{Kind: EventTransaction, Conn: 1, Transaction: &Transaction{MailFrom: "a@b", Data: &Reply{Code: code, Enhanced: "2.0.0", Text: "OK"},
		Message: &Message{ID: "m1", Accepted: code/100 == 2}}}
}

// TestJournalRefusesDurableEventItCannotWrite: a failed write (a torn,
// short write) or a failed fsync refuses the durable event: Append returns
// the error, the file holds no line of it and no torn bytes, subscribers
// get it in order as fail rewrote it, Health reports the failure, and the
// next successful write heals the journal (issue 11 item 1, unit level).
func TestJournalRefusesDurableEventItCannotWrite(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sync      time.Duration
		write, fs error
	}{
		{"short write", 0, syscall.ENOSPC, nil},
		{"fsync", 0, nil, syscall.EIO},
		{"short write, interval", 20 * time.Millisecond, syscall.ENOSPC, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			j, err := openJournal(dir, tc.sync, time.Now, nil)
			if err != nil {
				t.Fatal(err)
			}
			ch, cancel := j.Subscribe()
			defer cancel()
			ff := injectFailingFile(t, j)
			if _, err := j.Append(txEvent(250), true); err != nil {
				t.Fatal(err)
			}
			ff.set(tc.write, tc.fs)
			j.Append(Event{Kind: EventCommand, Command: "NOOP"}, false)
			failed := 0
			ev, err := j.AppendDurable(txEvent(250), true, func(ev *Event, err error) {
				failed++
				failTransaction(ev, err)
			})
			if err == nil || failed != 1 {
				t.Fatalf("durable append on a failing disk: err %v, fail called %d times", err, failed)
			}
			if ev.Transaction.Data.Code/100 == 2 || ev.Transaction.Message.Accepted {
				t.Fatalf("refused event still says %d accepted=%v", ev.Transaction.Data.Code, ev.Transaction.Message.Accepted)
			}
			if j.Health() == nil {
				t.Fatal("Health nil while the disk refuses")
			}
			if r, _ := j.Failures(); r != 1 {
				t.Fatalf("refused count %d", r)
			}
			ff.set(nil, nil)
			ev4, err := j.Append(txEvent(250), true)
			if err != nil {
				t.Fatalf("after the disk recovered: %v", err)
			}
			if j.Health() != nil {
				t.Fatalf("Health after a good write: %v", j.Health())
			}
			// Subscribers: every event, in order; the refused one as rewritten.
			for want := uint64(1); want <= ev4.Seq; want++ {
				got := <-ch
				if got.Seq != want {
					t.Fatalf("subscriber got seq %d, want %d", got.Seq, want)
				}
				if got.Seq == ev.Seq && got.Transaction.Data.Code/100 == 2 {
					t.Fatalf("subscriber saw the refused message as %d", got.Transaction.Data.Code)
				}
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			evs, err := ReadJournal(dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if e.Seq == ev.Seq {
					t.Fatalf("the refused event is in the file: %+v", e)
				}
			}
			if len(evs) < 2 || evs[0].Seq != 1 || evs[len(evs)-1].Seq != ev4.Seq {
				t.Fatalf("file holds %d events, last %+v", len(evs), evs[len(evs)-1])
			}
		})
	}
}

// TestJournalBoundsPendingWhileDiskRefuses: while writes fail, buffered
// non-durable events are bounded (dropped and counted), not kept without end.
func TestJournalBoundsPendingWhileDiskRefuses(t *testing.T) {
	j, err := openJournal(t.TempDir(), 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ff := injectFailingFile(t, j)
	ff.set(errors.New("disk gone"), nil)
	cmd := strings.Repeat("x", 16<<10)
	for range maxPendingBytes/(16<<10) + 200 {
		j.Append(Event{Kind: EventCommand, Command: cmd}, false)
	}
	j.mu.Lock()
	pending := len(j.buf)
	j.mu.Unlock()
	if _, dropped := j.Failures(); dropped == 0 || pending > maxPendingBytes+8<<10 {
		t.Fatalf("pending %d bytes, dropped %d", pending, dropped)
	}
	ff.set(nil, nil)
}
