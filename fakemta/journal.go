package fakemta

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// journalFile is the journal's name inside a state directory.
const journalFile = "journal.jsonl"

// scratchSync is the sync interval of a scratch journal: never fsync'd.
const scratchSync time.Duration = -1

// Journal is the append-only record of everything the fake MTA saw and
// said. With a state directory every event is written as a JSON line;
// events that carry a received message are fsync'd before the reply goes
// out (group commit: concurrent sessions share one fsync), or, with a sync
// interval, written to the file before the reply and fsync'd at most that
// interval later. Without a state directory events stay in memory.
// Subscribers receive every event, in order, on a channel that never drops
// (each subscriber has its own unbounded queue).
type Journal struct {
	mu    sync.Mutex
	seq   uint64
	file  *os.File
	w     *bufio.Writer
	dirty bool
	// syncEvery > 0 trades the fsync per message for one per interval:
	// durable events are still written (write(2)) before Append returns,
	// so a crash of the process loses nothing; a crash of the machine may
	// lose the last interval. scratchSync (a scratch journal nobody reads
	// after the process) never fsyncs.
	syncEvery time.Duration
	unsynced  bool // written since the last fsync (syncEvery > 0)
	lastSync  time.Time
	syncing   bool
	synced    *sync.Cond // broadcast after each fsync
	syncGen   uint64     // completed fsyncs
	err       error      // first write error; the journal stops accepting durable events
	tc        timeCache  // formats event times (under mu)

	// ring holds the latest events for GET /journal without a state dir and
	// for quick reads; keepAll (no state dir) keeps every event instead.
	ring    []Event
	ringCap int
	keepAll bool
	// messages indexes received messages without a state directory.
	messages []Message

	subs map[*subscriber]struct{}
	now  func() time.Time
	stop chan struct{}
	done chan struct{}
}

// openJournal opens (or creates) the journal in dir; dir "" keeps it in
// memory. Existing events are replayed through replay (for greylist state)
// and the sequence continues after the last one. A torn last line (a crash
// mid-write) is cut off.
// syncEvery 0 fsyncs every durable event; see Journal.syncEvery.
func openJournal(dir string, syncEvery time.Duration, now func() time.Time, replay func(Event)) (*Journal, error) {
	j := &Journal{subs: map[*subscriber]struct{}{}, now: now, ringCap: 65536, syncEvery: syncEvery,
		stop: make(chan struct{}), done: make(chan struct{})}
	j.synced = sync.NewCond(&j.mu)
	if dir == "" {
		j.keepAll = true
		close(j.done)
		return j, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, journalFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	// The file holds everything: memory keeps a small window, allocated
	// once and trimmed in place, so it stays flat however long the run.
	j.ringCap = 4096
	j.ring = make([]Event, 0, j.ringCap+1)
	good, err := j.replayFile(f, replay)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("journal %s: %w", path, err)
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	j.file, j.w = f, bufio.NewWriterSize(f, 256<<10)
	go j.flusher()
	return j, nil
}

// replayFile reads every complete line, returning the offset after the last good one.
func (j *Journal) replayFile(f *os.File, replay func(Event)) (int64, error) {
	r := bufio.NewReaderSize(f, 256<<10)
	var off int64
	for {
		line, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			return off, nil // a line without its newline is torn: dropped
		}
		if err != nil {
			return off, err
		}
		var ev Event
		if jerr := json.Unmarshal(line, &ev); jerr != nil {
			// Only the tail may be damaged by a crash; damage elsewhere is real.
			if _, perr := r.Peek(1); perr == io.EOF {
				return off, nil
			}
			return off, fmt.Errorf("line at byte %d: %v", off, jerr)
		}
		off += int64(len(line))
		j.seq = ev.Seq
		j.remember(ev)
		if replay != nil {
			replay(ev)
		}
	}
}

// flusher writes buffered events out periodically so a reader of the file
// (or a crash) loses at most ~100ms of non-message events; with a sync
// interval it also makes the written events durable that often.
func (j *Journal) flusher() {
	defer close(j.done)
	tick := 100 * time.Millisecond
	if j.syncEvery > 0 && j.syncEvery < tick {
		tick = j.syncEvery
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-j.stop:
			return
		case now := <-t.C:
			j.mu.Lock()
			if j.dirty && !j.syncing {
				j.flushLocked(false)
			}
			if j.unsynced && j.err == nil && now.Sub(j.lastSync) >= j.syncEvery {
				// Outside the lock: sessions keep writing while the disk works.
				j.unsynced, j.lastSync = false, now
				j.mu.Unlock()
				err := j.file.Sync()
				j.mu.Lock()
				if err != nil && j.err == nil {
					j.err = err
				}
				j.syncGen++
				j.synced.Broadcast()
			}
			j.mu.Unlock()
		}
	}
}

func (j *Journal) flushLocked(fsync bool) {
	if j.err != nil {
		return
	}
	if j.w.Buffered() > 0 {
		if err := j.w.Flush(); err != nil {
			j.err = err
			return
		}
		j.unsynced = j.syncEvery > 0
	}
	j.dirty = false
	if fsync {
		if err := j.file.Sync(); err != nil {
			j.err = err
		}
		j.unsynced = false
	}
}

// Append records ev (Seq and Time are set here) and returns it. With
// durable, Append returns only after the event is on disk (fsync'd).
func (j *Journal) Append(ev Event, durable bool) (Event, error) {
	// Encode what does not depend on Seq and Time before taking the lock,
	// so sessions encode in parallel; the lock covers the short head.
	var tail *[]byte
	hand := false
	if j.file != nil {
		tail = lineBufs.Get().(*[]byte)
		*tail, hand = appendEventTail((*tail)[:0], &ev)
	}
	j.mu.Lock()
	j.seq++
	ev.Seq = j.seq
	if ev.Time.IsZero() {
		ev.Time = j.now()
	}
	j.remember(ev)
	for s := range j.subs {
		s.push(ev)
	}
	if j.file == nil {
		j.mu.Unlock()
		return ev, nil
	}
	if j.err == nil {
		// The whole line goes out in one piece, newline included: an
		// encoding error leaves no torn line.
		var head [64]byte
		h := append(head[:0], `{"seq":`...)
		h = strconv.AppendUint(h, ev.Seq, 10)
		h = append(h, `,"time":`...)
		h, ok := j.tc.appendTime(h, ev.Time)
		var err error
		if ok && hand {
			if _, err = j.w.Write(h); err == nil {
				_, err = j.w.Write(*tail)
			}
		} else {
			var b []byte
			if b, err = json.Marshal(ev); err == nil {
				if _, err = j.w.Write(b); err == nil {
					err = j.w.WriteByte('\n')
				}
			}
		}
		if err != nil {
			j.err = err
		}
		j.dirty = true
	}
	if cap(*tail) <= 64<<10 {
		lineBufs.Put(tail)
	}
	if durable && j.syncEvery == scratchSync {
		// A scratch journal: nothing to make durable; the flusher and
		// readers write it out.
	} else if durable && j.syncEvery > 0 {
		// In the kernel before the reply: a kill -9 loses nothing; the
		// flusher fsyncs within syncEvery.
		j.flushLocked(false)
	} else if durable {
		// Group commit: wait for an fsync that started after this write.
		target := j.syncGen + 1
		if j.syncing {
			target++
		}
		for j.syncGen < target && j.err == nil {
			if !j.syncing {
				j.syncing = true
				j.flushLocked(false)
				healthy := j.err == nil
				j.mu.Unlock()
				var err error
				if healthy {
					err = j.file.Sync()
				}
				j.mu.Lock()
				if err != nil && j.err == nil {
					j.err = err
				}
				j.syncing = false
				j.syncGen++
				j.synced.Broadcast()
				continue
			}
			j.synced.Wait()
		}
	}
	err := j.err
	j.mu.Unlock()
	return ev, err
}

// remember keeps ev in the ring and, without a state directory, in the
// message index. Called with mu held.
func (j *Journal) remember(ev Event) {
	j.ring = append(j.ring, ev)
	if !j.keepAll && len(j.ring) > j.ringCap {
		// Amortised trim in place: keep the newest half; the file has the rest.
		keep := j.ringCap / 2
		n := copy(j.ring, j.ring[len(j.ring)-keep:])
		clear(j.ring[n:])
		j.ring = j.ring[:n]
	}
	if j.keepAll && ev.Kind == EventTransaction && ev.Transaction != nil && ev.Transaction.Message != nil {
		j.messages = append(j.messages, *ev.Transaction.Message)
	}
}

// Seq returns the sequence number of the latest event.
func (j *Journal) Seq() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.seq
}

// Since returns the events with Seq > since, at most limit (0 = no limit).
// With a state directory, events older than the in-memory window are read
// back from the file.
func (j *Journal) Since(since uint64, limit int) ([]Event, error) {
	j.mu.Lock()
	if len(j.ring) > 0 && (j.ring[0].Seq <= since+1 || j.file == nil) {
		var out []Event
		for _, ev := range j.ring {
			if ev.Seq > since {
				out = append(out, ev)
				if limit > 0 && len(out) == limit {
					break
				}
			}
		}
		j.mu.Unlock()
		return out, nil
	}
	if j.file == nil {
		j.mu.Unlock()
		return nil, nil
	}
	j.flushLocked(false)
	name := j.file.Name()
	j.mu.Unlock()
	return readJournalFile(name, since, limit)
}

// readJournalFile reads events with Seq > since from a journal file.
func readJournalFile(name string, since uint64, limit int) ([]Event, error) {
	var out []Event
	err := scanJournalFile(name, since, func(ev *Event) bool {
		out = append(out, *ev)
		return limit <= 0 || len(out) < limit
	})
	return out, err
}

// scanJournalFile calls fn, in order, for each complete event with Seq >
// since until fn returns false. It streams: a journal of millions of events
// is never held in memory, and lines before since are skipped by their
// leading "seq" without being decoded.
func scanJournalFile(name string, since uint64, fn func(*Event) bool) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 256<<10)
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer (a big DSN): read the rest.
			full := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = r.ReadSlice('\n')
				full = append(full, line...)
			}
			line = full
		}
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if seq, ok := lineSeq(line); !ok || seq > since {
				var ev Event
				if json.Unmarshal(line, &ev) == nil && ev.Seq > since && !fn(&ev) {
					return nil
				}
			}
		}
		if err != nil {
			return nil
		}
	}
}

// lineSeq reads the sequence number every journal line starts with.
func lineSeq(line []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(`{"seq":`))
	if !ok {
		return 0, false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	seq, err := strconv.ParseUint(string(rest[:n]), 10, 64)
	return seq, err == nil
}

// ReadJournal reads every event of a state directory's journal (offline use).
func ReadJournal(stateDir string) ([]Event, error) {
	return readJournalFile(filepath.Join(stateDir, journalFile), 0, 0)
}

// Messages returns every message received so far (oldest first). With a
// state directory they are read back from the file, holding the messages
// but never the other events; EachMessage holds neither.
func (j *Journal) Messages() ([]Message, error) {
	var out []Message
	err := j.EachMessage(func(m *Message) error {
		out = append(out, *m)
		return nil
	})
	return out, err
}

// EachMessage calls fn for every received message, oldest first, and stops
// at the first error fn returns. With a state directory it streams from the
// file, so a journal of any length is read in constant memory.
func (j *Journal) EachMessage(fn func(*Message) error) error {
	j.mu.Lock()
	if j.file == nil {
		msgs := append([]Message(nil), j.messages...)
		j.mu.Unlock()
		for i := range msgs {
			if err := fn(&msgs[i]); err != nil {
				return err
			}
		}
		return nil
	}
	j.flushLocked(false)
	name := j.file.Name()
	j.mu.Unlock()
	var ferr error
	err := scanJournalFile(name, 0, func(ev *Event) bool {
		if ev.Kind == EventTransaction && ev.Transaction != nil && ev.Transaction.Message != nil {
			ferr = fn(ev.Transaction.Message)
		}
		return ferr == nil
	})
	if ferr != nil {
		return ferr
	}
	return err
}

// Subscribe returns a channel that receives every event appended from now
// on, in order, and a cancel function that closes it. Events queue up
// without bound if the reader is slow: nothing is dropped.
func (j *Journal) Subscribe() (<-chan Event, func()) {
	s := newSubscriber()
	j.mu.Lock()
	j.subs[s] = struct{}{}
	j.mu.Unlock()
	var once sync.Once
	return s.out, func() {
		once.Do(func() {
			j.mu.Lock()
			delete(j.subs, s)
			j.mu.Unlock()
			s.close()
		})
	}
}

// Close flushes and fsyncs the journal, and closes every subscription.
func (j *Journal) Close() error {
	j.mu.Lock()
	subs := j.subs
	j.subs = map[*subscriber]struct{}{}
	j.mu.Unlock()
	for s := range subs {
		s.end()
	}
	if j.file == nil {
		return nil
	}
	close(j.stop)
	<-j.done
	j.mu.Lock()
	defer j.mu.Unlock()
	j.flushLocked(j.syncEvery != scratchSync)
	err := j.file.Close()
	if j.err != nil {
		return j.err
	}
	return err
}

// subscriber is one unbounded, ordered event queue feeding a channel.
// Two ways end it: the reader cancels (close: stop at once, the reader is
// gone) or the journal closes (end: deliver everything still queued, then
// close the channel, so the end of the journal reaches every reader).
type subscriber struct {
	mu     sync.Mutex
	queue  []Event
	wake   chan struct{}
	out    chan Event
	closed chan struct{} // the reader cancelled
	ended  chan struct{} // the journal closed: nothing more will be pushed
	endMu  sync.Once
}

func newSubscriber() *subscriber {
	s := &subscriber{wake: make(chan struct{}, 1), out: make(chan Event, 64), closed: make(chan struct{}), ended: make(chan struct{})}
	go s.pump()
	return s
}

func (s *subscriber) push(ev Event) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) close() {
	select {
	case <-s.closed:
	default:
		close(s.closed)
	}
}

// end says no event will be pushed any more; the pump drains and closes out.
func (s *subscriber) end() { s.endMu.Do(func() { close(s.ended) }) }

func (s *subscriber) pump() {
	defer close(s.out)
	for {
		s.mu.Lock()
		batch := s.queue
		s.queue = nil
		s.mu.Unlock()
		for _, ev := range batch {
			// Only the reader's cancel stops a delivery: at the journal's
			// close the queued events still go out.
			select {
			case s.out <- ev:
			case <-s.closed:
				return
			}
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-s.wake:
		case <-s.closed:
			return
		case <-s.ended:
			// Every push happened before end (both under the journal's
			// lock): one more look at the queue finds the last of them.
			s.mu.Lock()
			empty := len(s.queue) == 0
			s.mu.Unlock()
			if empty {
				return
			}
		}
	}
}
