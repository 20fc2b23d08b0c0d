package fakemta

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// newStateServer starts a server on dir with the given clock.
func newStateServer(t *testing.T, dir, policy string, clock *fakeClock, mod func(*Config)) *Server {
	t.Helper()
	return startServer(t, policy, func(c *Config) {
		c.StateDir = dir
		if clock != nil {
			c.Now = clock.Now
		}
		if mod != nil {
			mod(c)
		}
	})
}

func TestStateSurvivesCloseAndNew(t *testing.T) {
	dir := t.TempDir()
	clock := newClock()
	const pol = "greylist:\n  delay: 60s\n  auto_whitelist_after: 0\n"
	s1 := newStateServer(t, dir, pol, clock, nil)
	if code, err := send(t, s1.Addr(), "a@client.test", "b@remote.test"); code != 451 {
		t.Fatalf("first: %d %v", code, err)
	}
	if code, err := send(t, s1.Addr(), "a@client.test", "other@remote.test"); code != 451 {
		t.Fatalf("first other: %d %v", code, err)
	}
	// The deferral is journaled when the session ends; wait for both.
	pollUntil(t, "transactions", func() bool {
		n := 0
		for _, ev := range journalEvents(t, s1) {
			if ev.Kind == EventTransaction {
				n++
			}
		}
		return n == 2
	})
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	lastSeq := s1.Journal().Seq()

	// Restart before the delay is over: still deferred, with the time left.
	clock.Add(30 * time.Second)
	s2 := newStateServer(t, dir, pol, clock, nil)
	first := journalEvents(t, s2)
	var startEv Event
	for _, ev := range first {
		if ev.Seq > lastSeq {
			startEv = ev
			break
		}
	}
	if startEv.Seq != lastSeq+1 || startEv.Kind != EventControl || startEv.Note != "start" {
		t.Fatalf("seq does not continue: last %d, next %+v", lastSeq, startEv)
	}
	if code, err := send(t, s2.Addr(), "a@client.test", "b@remote.test"); code != 451 || !strings.Contains(err.Error(), "30 seconds") {
		t.Fatalf("retry inside the delay after restart: %d %v", code, err)
	}
	s2.Close()

	// Restart after the delay: passes.
	clock.Add(31 * time.Second)
	s3 := newStateServer(t, dir, pol, clock, nil)
	if code, err := send(t, s3.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatalf("retry after the delay and a restart: %d %v", code, err)
	}
	msgs, err := s3.Journal().Messages()
	if err != nil || len(msgs) != 1 || !msgs[0].Accepted {
		t.Fatalf("messages %+v %v", msgs, err)
	}
	es := s3.Greylist()
	if len(es) != 2 {
		t.Fatalf("greylist %+v", es)
	}
	s3.Close()

	// WipeState forgets the triplets, keeps the journal.
	s4 := newStateServer(t, dir, pol, clock, func(c *Config) { c.WipeState = true })
	if es := s4.Greylist(); len(es) != 0 {
		t.Fatalf("greylist after wipe: %+v", es)
	}
	if msgs, _ := s4.Journal().Messages(); len(msgs) != 1 {
		t.Fatalf("journal lost by wipe: %+v", msgs)
	}
	if code, _ := send(t, s4.Addr(), "a@client.test", "b@remote.test"); code != 451 {
		t.Fatalf("after wipe: %d, want 451", code)
	}
	s4.Close()

	// The wipe itself is journaled, so it holds across the next restart.
	s5 := newStateServer(t, dir, pol, clock, nil)
	es = s5.Greylist()
	if len(es) != 1 || !es[0].PassedAt.IsZero() {
		t.Fatalf("greylist after wipe and restart: %+v", es)
	}
	evs, err := ReadJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("seq gap at %d: %d after %d", i, evs[i].Seq, evs[i-1].Seq)
		}
	}
}

func TestTornJournalLineIsCut(t *testing.T) {
	dir := t.TempDir()
	s1 := newStateServer(t, dir, "", nil, nil)
	if code, err := send(t, s1.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatal(code, err)
	}
	s1.Close()
	path := filepath.Join(dir, journalFile)
	good, _ := os.ReadFile(path)
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":99999,"time":"2026-01-01T00:00:00Z","kind":"conn`)
	f.Close()

	s2 := newStateServer(t, dir, "", nil, nil)
	if code, err := send(t, s2.Addr(), "a@client.test", "c@remote.test"); code != 0 {
		t.Fatal(code, err)
	}
	s2.Close()
	data, _ := os.ReadFile(path)
	if !bytes.HasPrefix(data, good) {
		t.Fatal("the good part of the journal changed")
	}
	// (Only the torn line's own prefix: "99999" alone can occur in a
	// timestamp or a SHA-256.)
	if bytes.Contains(data, []byte(`"conn{`)) || bytes.Contains(data, []byte(`{"seq":99999,`)) {
		t.Fatal("torn line kept")
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		if !strings.HasPrefix(sc.Text(), `{"seq":`) || !strings.HasSuffix(sc.Text(), "}") {
			t.Fatalf("line %d is not a whole event: %q", n, sc.Text())
		}
	}
	evs, err := ReadJournal(dir)
	if err != nil || len(evs) != n {
		t.Fatalf("read %d events of %d lines: %v", len(evs), n, err)
	}
	msgs := 0
	for _, ev := range evs {
		if ev.Kind == EventTransaction && ev.Transaction.Message != nil {
			msgs++
		}
	}
	if msgs != 2 {
		t.Fatalf("%d messages, want 2", msgs)
	}
}

func TestDamagedJournalMiddleIsAnError(t *testing.T) {
	dir := t.TempDir()
	s1 := newStateServer(t, dir, "", nil, nil)
	s1.Close()
	path := filepath.Join(dir, journalFile)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, append([]byte("{not json}\n"), data...), 0o644)
	if _, err := New(Config{StateDir: dir, Logf: t.Logf}); err == nil || !strings.Contains(err.Error(), "line at byte 0") {
		t.Fatalf("open damaged journal: %v", err)
	}
}

// TestPersistHelperProcess becomes a fake MTA when re-executed with
// FAKEMTA_PERSIST_HELPER set (the kill -9 test runs it and kills it).
func TestPersistHelperProcess(t *testing.T) {
	dir := os.Getenv("FAKEMTA_PERSIST_HELPER")
	if dir == "" {
		t.Skip("helper process only")
	}
	pol, err := ParsePolicy("helper.yaml", []byte(os.Getenv("FAKEMTA_PERSIST_POLICY")))
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	sync, _ := time.ParseDuration(os.Getenv("FAKEMTA_PERSIST_SYNC"))
	s, err := New(Config{Listen: []string{"127.0.0.1:0"}, StateDir: dir, Policy: pol, JournalSync: sync, Logf: func(string, ...any) {}})
	if err == nil {
		err = s.Start()
	}
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(2)
	}
	fmt.Println("ADDR", s.Addr())
	select {}
}

// TestStateSurvivesKill9 kills the fake MTA right after a 250 to the final
// dot, with the journal fsync'd per message and with a sync interval far
// longer than the test (so only the write before the 250 can save it).
func TestStateSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	for _, sync := range []string{"0s", "1h"} {
		t.Run("journal-sync="+sync, func(t *testing.T) { testStateSurvivesKill9(t, sync) })
	}
}

func testStateSurvivesKill9(t *testing.T, sync string) {
	dir := t.TempDir()
	const pol = "greylist:\n  delay: 0s\n  auto_whitelist_after: 0\n"
	cmd := exec.Command(os.Args[0], "-test.run=^TestPersistHelperProcess$")
	cmd.Env = append(os.Environ(), "FAKEMTA_PERSIST_HELPER="+dir, "FAKEMTA_PERSIST_POLICY="+pol, "FAKEMTA_PERSIST_SYNC="+sync)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		t.Fatalf("helper said %q %v", line, err)
	}
	if code, err := send(t, addr, "a@client.test", "b@remote.test"); code != 451 {
		t.Fatalf("first attempt: %d %v", code, err)
	}
	// 250 comes only after the fsync; the earlier deferral is in the same flush.
	if code, err := send(t, addr, "a@client.test", "b@remote.test"); code != 0 {
		t.Fatalf("second attempt: %d %v", code, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()

	s := newStateServer(t, dir, pol, nil, nil)
	msgs, err := s.Journal().Messages()
	if err != nil || len(msgs) != 1 || !msgs[0].Accepted || msgs[0].HarnessID != "gh-1" {
		t.Fatalf("after kill -9: messages %+v %v", msgs, err)
	}
	es := s.Greylist()
	if len(es) != 1 || es[0].PassedAt.IsZero() || es[0].Sender != "a@client.test" || es[0].Recipient != "b@remote.test" {
		t.Fatalf("after kill -9: greylist %+v", es)
	}
	if code, err := send(t, s.Addr(), "a@client.test", "b@remote.test"); code != 0 {
		t.Fatalf("passed triplet deferred after kill -9: %d %v", code, err)
	}
}
