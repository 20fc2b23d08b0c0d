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
	"sort"
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
//
// A durable event Append cannot make durable (disk full, I/O error) is
// refused: Append returns the error, the event is left out of the file
// (no torn line), and subscribers see it as the caller's fail function
// rewrote it (the reply the client really got). Until a write succeeds
// again Health reports the error; the journal keeps trying, so it heals
// by itself when space comes back.
//
// Subscribers receive every event, in order, on a channel that never drops
// (each subscriber has its own unbounded queue).
type Journal struct {
	mu   sync.Mutex
	seq  uint64
	file journalStore
	// buf holds encoded lines not yet written; the file holds fileEnd
	// bytes, always ending at a line boundary (a failed write is cut back).
	buf     []byte
	fileEnd int64
	// syncedEnd is how much of the file the last successful fsync covers;
	// epoch counts the times the file was cut back to it (an fsync that
	// failed): a durable waiter whose epoch changed lost its line.
	syncedEnd int64
	epoch     uint64
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
	// werr and serr are the latest write and fsync failures, nil once a
	// write (an fsync) succeeds again; err is whichever is set (health).
	werr, serr error
	err        error
	bodyErr    error  // the latest --keep-bodies failure, nil after a success
	failures   uint64 // durable events refused
	dropped    uint64 // non-durable events dropped while the disk refused writes
	tc         timeCache

	// held are events appended but not yet given to subscribers and the
	// ring, in seq order: a durable event waiting for its fsync holds back
	// later ones, so readers see events in order and as the client saw
	// them (a refused message with the reply it really got).
	held []*heldEvent

	// ring holds the latest events for GET /journal without a state dir and
	// for quick reads; keepAll (no state dir) keeps every event instead.
	ring    []Event
	ringCap int
	keepAll bool
	// messages indexes received messages without a state directory.
	messages []Message

	subs map[*subscriber]struct{}
	// sseHub feeds the API's event streams (one subscription for all).
	sseOnce sync.Once
	sseHub  *sseHub
	now     func() time.Time
	stop    chan struct{}
	done    chan struct{}
}

// journalStore is what the journal needs of its file (*os.File; tests
// inject failures).
type journalStore interface {
	io.WriterAt
	Truncate(size int64) error
	Sync() error
	Close() error
	Name() string
}

// heldEvent is an event waiting for its turn to be published.
type heldEvent struct {
	ev    Event
	ready bool
}

// maxPendingBytes bounds the lines kept in memory while the disk refuses
// writes; beyond it non-durable events (commands, replies) are dropped and
// counted. Durable events are never dropped: they are refused.
const maxPendingBytes = 16 << 20

// writeChunk is how much the journal buffers before writing without waiting
// for the flusher.
const writeChunk = 256 << 10

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
	j.file, j.fileEnd, j.syncedEnd = f, good, good
	j.buf = make([]byte, 0, writeChunk+4096)
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
// interval it also makes the written events durable that often. While the
// disk refuses writes it keeps retrying, so the journal heals by itself.
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
			if len(j.buf) > 0 && !j.syncing {
				j.writeLocked()
			}
			if j.syncEvery > 0 && (j.fileEnd > j.syncedEnd || j.serr != nil) && !j.syncing && now.Sub(j.lastSync) >= j.syncEvery {
				// Outside the lock: sessions keep writing while the disk works.
				target := j.fileEnd
				j.syncing, j.lastSync = true, now
				j.mu.Unlock()
				err := j.file.Sync()
				j.mu.Lock()
				j.syncing = false
				j.synceDone(target, err, false)
			}
			j.mu.Unlock()
		}
	}
}

// writeLocked writes buf to the file. On failure the file is cut back to
// its last line boundary and buf is kept for the next try.
func (j *Journal) writeLocked() error {
	if len(j.buf) == 0 {
		return nil
	}
	n, err := j.file.WriteAt(j.buf, j.fileEnd)
	if err == nil && n < len(j.buf) {
		err = io.ErrShortWrite
	}
	if err != nil {
		if n > 0 {
			// Cut the torn part (the next write at fileEnd would overwrite
			// it anyway; readers of the file must not see it meanwhile).
			j.file.Truncate(j.fileEnd)
		}
		j.werr = err
		j.setErr()
		return err
	}
	j.fileEnd += int64(n)
	j.buf = j.buf[:0]
	if cap(j.buf) > 4*writeChunk {
		j.buf = make([]byte, 0, writeChunk+4096) // shrink after an outage
	}
	j.unsynced = j.syncEvery > 0
	if j.werr != nil {
		j.werr = nil
		j.setErr()
	}
	return nil
}

// synceDone records the outcome of an fsync that covered the file up to
// target. cut: a failure cuts the file back to the last good fsync (the
// per-message mode, where the lines after it belong to refused replies).
func (j *Journal) synceDone(target int64, err error, cut bool) {
	if err == nil {
		j.syncedEnd = max(j.syncedEnd, target)
		j.unsynced = j.fileEnd > j.syncedEnd
		j.serr = nil
	} else {
		j.serr = err
		if cut && j.file.Truncate(j.syncedEnd) == nil {
			j.fileEnd = j.syncedEnd
			j.epoch++
		}
	}
	j.setErr()
	j.syncGen++
	j.synced.Broadcast()
}

func (j *Journal) setErr() {
	j.err = j.werr
	if j.err == nil {
		j.err = j.serr
	}
}

// noteBody records the outcome of writing a body with --keep-bodies: the
// bodies are part of the record, so a failure makes the journal unhealthy
// until a body is written again.
func (j *Journal) noteBody(err error) {
	j.mu.Lock()
	j.bodyErr = err
	j.mu.Unlock()
}

// flushLocked writes buffered lines out (for readers of the file) and, with
// fsync, makes them durable.
func (j *Journal) flushLocked(fsync bool) {
	if j.writeLocked() != nil || !fsync {
		return
	}
	j.synceDone(j.fileEnd, j.file.Sync(), false)
}

// Health returns why the journal cannot record durably right now (the
// latest write or fsync failure), nil when it can.
func (j *Journal) Health() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return fmt.Errorf("journal: %w", j.err)
	}
	if j.bodyErr != nil {
		return fmt.Errorf("keep-bodies: %w", j.bodyErr)
	}
	return nil
}

// Failures returns how many durable events were refused and how many
// other events were dropped because the disk refused writes.
func (j *Journal) Failures() (refused, dropped uint64) {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failures, j.dropped
}

// Append records ev (Seq and Time are set here) and returns it. With
// durable, Append returns only after the event is on disk (fsync'd), or
// with the error that kept it off.
func (j *Journal) Append(ev Event, durable bool) (Event, error) {
	return j.AppendDurable(ev, durable, nil)
}

// AppendDurable is Append with fail: when a durable event cannot be
// recorded, fail rewrites it (to say what the client was told instead)
// before subscribers see it.
func (j *Journal) AppendDurable(ev Event, durable bool, fail func(*Event, error)) (Event, error) {
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
	if j.file == nil {
		j.publish(ev)
		j.mu.Unlock()
		return ev, nil
	}
	// The whole line goes out in one piece, newline included: an
	// encoding error leaves no torn line.
	mark := len(j.buf)
	var encErr error
	var head [64]byte
	h := append(head[:0], `{"seq":`...)
	h = strconv.AppendUint(h, ev.Seq, 10)
	h = append(h, `,"time":`...)
	h, ok := j.tc.appendTime(h, ev.Time)
	if ok && hand {
		j.buf = append(j.buf, h...)
		j.buf = append(j.buf, *tail...)
	} else if b, err := json.Marshal(ev); err == nil {
		j.buf = append(j.buf, b...)
		j.buf = append(j.buf, '\n')
	} else {
		encErr = err
	}
	if cap(*tail) <= 64<<10 {
		lineBufs.Put(tail)
	}
	if encErr != nil {
		ev, err := j.refuse(ev, encErr, durable, fail)
		j.mu.Unlock()
		return ev, err
	}
	if !durable {
		if len(j.buf) >= writeChunk && !j.syncing && j.werr == nil {
			// (While writes fail, the flusher and durable appends retry.)
			j.writeLocked()
		}
		if j.werr != nil && len(j.buf) > maxPendingBytes {
			j.buf = j.buf[:mark] // the disk refuses: memory stays bounded
			j.dropped++
		}
		j.publish(ev)
		j.mu.Unlock()
		return ev, nil
	}
	// A durable line is written now, under the lock: if the disk refuses
	// it, nothing after it is in the file yet, so it is simply taken out.
	// With a sync interval whose last fsync failed nothing can be promised.
	if j.syncEvery > 0 && j.serr != nil {
		j.buf = j.buf[:mark]
		ev, err := j.refuse(ev, j.serr, true, fail)
		j.mu.Unlock()
		return ev, err
	}
	if err := j.writeLocked(); err != nil {
		j.buf = j.buf[:mark]
		ev, err = j.refuse(ev, err, true, fail)
		j.mu.Unlock()
		return ev, err
	}
	lineEnd := j.fileEnd
	switch {
	case j.syncEvery != 0:
		// In the kernel before the reply: a kill -9 loses nothing; the
		// flusher fsyncs within syncEvery (a scratch journal never).
	default:
		// Group commit: wait for an fsync that covers this line.
		he := &heldEvent{ev: ev}
		j.held = append(j.held, he)
		epoch := j.epoch
		var err error
		for {
			if j.epoch != epoch {
				err = j.serr
				if err == nil {
					err = errors.New("journal: fsync failed")
				}
				break
			}
			if j.syncedEnd >= lineEnd {
				break
			}
			if j.syncing {
				j.synced.Wait()
				continue
			}
			j.syncing = true
			j.writeLocked() // lines of others, appended meanwhile, ride along
			target := j.fileEnd
			j.mu.Unlock()
			serr := j.file.Sync()
			j.mu.Lock()
			j.syncing = false
			j.synceDone(target, serr, true)
		}
		if err != nil {
			j.failures++
			if fail != nil {
				fail(&he.ev, err)
			}
		}
		ev = he.ev
		he.ready = true
		j.publishHeld()
		j.mu.Unlock()
		return ev, err
	}
	j.publish(ev)
	j.mu.Unlock()
	return ev, nil
}

// refuse gives up on ev: counted, rewritten by fail, published. Called
// with mu held.
func (j *Journal) refuse(ev Event, err error, durable bool, fail func(*Event, error)) (Event, error) {
	if durable {
		j.failures++
		if fail != nil {
			fail(&ev, err)
		}
	}
	j.publish(ev)
	return ev, err
}

// publish hands ev to the ring and subscribers, behind any held events.
// Called with mu held.
func (j *Journal) publish(ev Event) {
	if len(j.held) == 0 {
		j.remember(ev)
		for s := range j.subs {
			s.push(ev)
		}
		return
	}
	j.held = append(j.held, &heldEvent{ev: ev, ready: true})
}

// publishHeld publishes the ready events at the front of held.
func (j *Journal) publishHeld() {
	n := 0
	for _, he := range j.held {
		if !he.ready {
			break
		}
		j.remember(he.ev)
		for s := range j.subs {
			s.push(he.ev)
		}
		n++
	}
	m := copy(j.held, j.held[n:])
	clear(j.held[m:])
	j.held = j.held[:m]
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

// EachSince calls fn, in order, for the events with Seq > since, at most
// limit (0 = no limit), and stops at the first error fn returns. With a
// state directory it streams from the file (or the in-memory window when
// that covers since), so a journal of any length is read in constant memory.
func (j *Journal) EachSince(since uint64, limit int, fn func(*Event) error) error {
	j.mu.Lock()
	if len(j.ring) > 0 && (j.ring[0].Seq <= since+1 || j.file == nil) {
		// A copy of the window's tail (bounded in file mode: ringCap).
		i := sort.Search(len(j.ring), func(i int) bool { return j.ring[i].Seq > since })
		evs := append([]Event(nil), j.ring[i:]...)
		j.mu.Unlock()
		for n := range evs {
			if limit > 0 && n == limit {
				break
			}
			if err := fn(&evs[n]); err != nil {
				return err
			}
		}
		return nil
	}
	if j.file == nil {
		j.mu.Unlock()
		return nil
	}
	j.flushLocked(false)
	name := j.file.Name()
	j.mu.Unlock()
	var ferr error
	n := 0
	err := scanJournalFile(name, since, func(ev *Event) bool {
		ferr = fn(ev)
		n++
		return ferr == nil && (limit <= 0 || n < limit)
	})
	if ferr != nil {
		return ferr
	}
	return err
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
