package fakemta

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestJournalSyncIntervalWritesBeforeReturning: with a sync interval, a
// durable event is in the file (the kernel's, not the process's buffer)
// when Append returns, and an fsync follows within the interval.
func TestJournalSyncIntervalWritesBeforeReturning(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, 20*time.Millisecond, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ev, err := j.Append(Event{Kind: EventControl, Note: "durable-one"}, true)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, journalFile))
	if err != nil || !bytes.Contains(data, []byte(`"note":"durable-one"`)) {
		t.Fatalf("event %d not in the file when Append returned: %q %v", ev.Seq, data, err)
	}
	// The flusher announces each fsync on the same condition as the group commit.
	j.mu.Lock()
	for j.syncGen == 0 && j.err == nil {
		j.synced.Wait()
	}
	unsynced, jerr := j.unsynced, j.err
	j.mu.Unlock()
	if jerr != nil || unsynced {
		t.Fatalf("after the interval's fsync: unsynced %v, err %v", unsynced, jerr)
	}
}

// TestJournalSyncPerMessageByDefault: without an interval, Append(durable)
// returns only after an fsync that began after its write.
func TestJournalSyncPerMessageByDefault(t *testing.T) {
	j, err := openJournal(t.TempDir(), 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := 1; i <= 3; i++ {
		if _, err := j.Append(Event{Kind: EventControl, Note: "m"}, true); err != nil {
			t.Fatal(err)
		}
		j.mu.Lock()
		gen := j.syncGen
		j.mu.Unlock()
		if gen != uint64(i) {
			t.Fatalf("after %d durable appends: %d fsyncs", i, gen)
		}
	}
}

func TestNewRejectsNegativeJournalSync(t *testing.T) {
	if _, err := New(Config{StateDir: t.TempDir(), JournalSync: -time.Second}); err == nil {
		t.Fatal("negative JournalSync accepted")
	}
}

// TestJournalSyncIntervalConcurrent: sessions appending while the flusher
// fsyncs outside the lock lose nothing and keep the sequence (run with -race).
func TestJournalSyncIntervalConcurrent(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, time.Millisecond, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 200
	done := make(chan error, writers)
	for w := 0; w < writers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				if _, err := j.Append(Event{Kind: EventControl, Note: "c"}, i%4 == 0); err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for w := 0; w < writers; w++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadJournal(dir)
	if err != nil || len(evs) != writers*each {
		t.Fatalf("read back %d events, %v; want %d", len(evs), err, writers*each)
	}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
}

// TestScanJournalFileLongLinesAndSince: lines longer than the read buffer
// (a big DSN) come back whole, and since skips by the leading seq.
func TestScanJournalFileLongLinesAndSince(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("d", 600<<10)
	for _, note := range []string{"one", long, "three", "four"} {
		if _, err := j.Append(Event{Kind: EventControl, Note: note}, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, journalFile)
	all, err := readJournalFile(name, 0, 0)
	if err != nil || len(all) != 4 || all[1].Note != long || all[3].Note != "four" {
		t.Fatalf("read all: %d events, %v", len(all), err)
	}
	some, err := readJournalFile(name, 2, 1)
	if err != nil || len(some) != 1 || some[0].Seq != 3 || some[0].Note != "three" {
		t.Fatalf("since 2, limit 1: %+v %v", some, err)
	}
	if seq, ok := lineSeq([]byte(`{"seq":42,"time":"x"}`)); !ok || seq != 42 {
		t.Fatalf("lineSeq: %d %v", seq, ok)
	}
	if _, ok := lineSeq([]byte(`{"time":"x"}`)); ok {
		t.Fatal("lineSeq read a seq from a line without one")
	}
}
