//go:build unix

package relay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

// eventually polls cond every poll until it returns true or d passes.
func eventually(t *testing.T, d, poll time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last state: %s", what, d, state)
		}
		<-tick.C
	}
}

// --- supervision, without a real relay ---

// A foreground "relay" whose daemon escapes into its own session (as
// Postfix's master does) must still be stopped and reaped.
func TestSupervisedChildAndEscapedDaemon(t *testing.T) {
	dir := t.TempDir()
	p := &profile.Profile{
		Name: "fake",
		Dir:  dir,
		Env:  map[string]string{"MARK": filepath.Join(dir, "started")},
		Commands: profile.Commands{
			Start:           `setsid sh -c 'trap "exit 0" TERM; touch "$MARK.daemon"; while :; do sleep 0.2; done' & echo hello from relay; touch "$MARK"; exec sleep 600`,
			StartForeground: true,
			// Ready once the daemon runs in its own session, not merely forked.
			Ready: `test -f "$MARK" && test -f "$MARK.daemon" && rm "$MARK.daemon"`,
		},
		Timing: history.Timing{RetryMax: history.Duration(time.Second), QueueLifetime: history.Duration(time.Minute), RestartGrace: history.Duration(3 * time.Second)},
	}
	c := New(p, filepath.Join(dir, "logs"))
	ctx := context.Background()
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err == nil {
		t.Error("second Start while running did not fail")
	}
	c.child.follow()
	if g := c.child.groups(); len(g) < 2 {
		t.Errorf("escaped daemon's group not followed: groups %v", g)
	}
	old := c.Processes()
	if len(old) < 2 {
		t.Fatalf("processes = %v", old)
	}
	start := time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart took %v", time.Since(start))
	for _, pid := range old {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			t.Errorf("old relay process %d still exists (zombie or alive) after Restart", pid)
		}
	}
	if err := c.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Running() || c.Processes() != nil {
		t.Errorf("running after Teardown: %v", c.Processes())
	}
	if !strings.Contains(c.Logs(), "hello from relay") {
		t.Errorf("Logs lack the relay's output:\n%s", c.Logs())
	}
	b, err := os.ReadFile(filepath.Join(dir, "logs", "relay.log"))
	if err != nil || !strings.Contains(string(b), "hello from relay") {
		t.Errorf("relay.log: %v %q", err, b)
	}
}

func TestReadyTimeoutAndEarlyExit(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 1s restart_grace; make test (go test without -short) runs it")
	}
	dir := t.TempDir()
	p := &profile.Profile{Dir: dir, Commands: profile.Commands{Start: "exec sleep 600", StartForeground: true, Ready: "exit 1"},
		Timing: history.Timing{RestartGrace: history.Duration(time.Second)}}
	c := New(p, "")
	start := time.Now()
	err := c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not ready within") {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("ready timeout took %v", d)
	}
	if c.Running() {
		t.Error("child left running after failed start")
	}
	p.Commands.Start = "echo boom >&2; exit 3"
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v", err)
	}
	if err := c.Flush(context.Background()); err == nil {
		t.Error("Flush without command succeeded")
	}
	if s := c.Queue(context.Background()); s.Err == "" {
		t.Error("Queue without command has no Err")
	}
}

// A group with no process left is forgotten: its number, recycled, may
// lead an unrelated group that must never be signalled. The followed
// process is a child of its own (not this test process, whose other
// children — other tests' relays, run in parallel — would be followed too).
func TestFollowForgetsEmptyGroups(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid // leads its own group: pgid == pid
	ch := &child{pid: pid, pgids: map[int]bool{pid: true, 1 << 30: true}, pids: map[int]bool{pid: true}}
	ch.follow()
	if g := ch.groups(); !slices.Equal(g, []int{pid}) {
		t.Errorf("groups = %v, want only the live %d", g, pid)
	}
}

// pidAlive reports whether pid runs (a zombie does not).
func pidAlive(pid int) bool {
	for _, p := range listProcs() {
		if p.pid == pid {
			return p.state != 'Z'
		}
	}
	return false
}

// A start, restart or stop command that never returns (a relay left in the
// foreground without start_foreground) fails within restart_grace, its
// process group killed, even when it ignores SIGTERM.
func TestCommandThatNeverReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out restart_grace for each command; make test (go test without -short) runs it")
	}
	const hang = `trap "" TERM; sleep 1000 & echo $! > "$PIDFILE"; wait`
	for _, tc := range []struct {
		name string
		cmds profile.Commands
		call func(c *Controller, ctx context.Context) error
	}{
		{"start", profile.Commands{Start: hang, Ready: "exit 0"}, (*Controller).Start},
		{"restart", profile.Commands{Start: "true", Restart: hang, Ready: "exit 0"}, (*Controller).Restart},
		{"stop", profile.Commands{Start: "true", Stop: hang, Ready: "exit 0"}, (*Controller).Stop},
		{"stop of restart", profile.Commands{Start: "true", Stop: hang, Ready: "exit 0"}, (*Controller).Restart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			pidFile := filepath.Join(dir, "pid")
			p := &profile.Profile{Dir: dir, Env: map[string]string{"PIDFILE": pidFile}, Commands: tc.cmds,
				Timing: history.Timing{RestartGrace: history.Duration(time.Second)}}
			c := New(p, "")
			start := time.Now()
			err := tc.call(c, context.Background())
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "did not return within timing.restart_grace 1s") {
				t.Fatalf("err = %v, want the restart_grace timeout", err)
			}
			// grace, then commandGrace for a command that ignores SIGTERM, then slack for a loaded machine.
			if took > time.Second+commandGrace+5*time.Second {
				t.Errorf("took %v", took)
			}
			b, rerr := os.ReadFile(pidFile)
			if rerr != nil {
				t.Fatal(rerr)
			}
			var pid int
			fmt.Sscan(string(b), &pid)
			eventually(t, 5*time.Second, 20*time.Millisecond, "the command's process group killed", func() (bool, string) {
				return !pidAlive(pid), fmt.Sprintf("pid %d alive", pid)
			})
		})
	}
}

// A profile without start describes a relay that is already running: Start
// checks it with ready, within restart_grace.
func TestStartWithoutStartCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 1s restart_grace; make test (go test without -short) runs it")
	}
	p := &profile.Profile{Dir: t.TempDir(), Commands: profile.Commands{Ready: "exit 0"},
		Timing: history.Timing{RestartGrace: history.Duration(time.Second)}}
	c := New(p, "")
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("running relay, ready ok: %v", err)
	}
	p.Commands.Ready = "exit 1"
	if err := c.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "not ready within") {
		t.Fatalf("running relay, ready failing: %v", err)
	}
}

// --- real relays ---

// sink is a test-only next hop: it greylists (451 4.7.1 at RCPT) or accepts.
type sink struct {
	srv       *smtp.Server
	greylist  atomic.Bool
	mu        sync.Mutex
	deferred  map[string]int // recipient -> 451 count
	delivered map[string]int // X-Greyharness-Id -> deliveries
}

// startSink listens on every addr (a profile's next_hop list: all its MX
// hosts answer alike).
func startSink(t *testing.T, addrs ...string) *sink {
	s := &sink{deferred: map[string]int{}, delivered: map[string]int{}}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	s.srv.Domain = "sink.greyharness.test"
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		go s.srv.Serve(ln)
	}
	t.Cleanup(func() { s.srv.Close() })
	return s
}

func (s *sink) counts(id, rcpt string) (delivered, deferred int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delivered[id], s.deferred[rcpt]
}

type sinkSession struct {
	s     *sink
	rcpts []string
}

func (ss *sinkSession) AuthPlain(string, string) error { return nil }
func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if ss.s.greylist.Load() {
		ss.s.mu.Lock()
		ss.s.deferred[to]++
		ss.s.mu.Unlock()
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	h, err := textproto.NewReader(bufio.NewReader(r)).ReadMIMEHeader()
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, r)
	ss.s.mu.Lock()
	ss.s.delivered[h.Get("X-Greyharness-Id")]++
	ss.s.mu.Unlock()
	return nil
}
func (ss *sinkSession) Reset()        { ss.rcpts = nil }
func (ss *sinkSession) Logout() error { return nil }

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

func submit(p *profile.Profile, from, to, id string) error {
	c, err := smtp.Dial(p.Submit.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello(p.Submit.Helo); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: greyharness %s\r\nMessage-ID: <%s@harness.greyharness.test>\r\nX-Greyharness-Id: %s\r\nDate: %s\r\n\r\nhello from greyharness\r\n",
		from, to, id, id, id, time.Now().Format(time.RFC1123Z))
	if err := w.Close(); err != nil {
		return fmt.Errorf("final dot: %w", err)
	}
	return c.Quit()
}

func queued(snap history.QueueSnapshot, rcpt string) bool {
	for _, e := range snap.Entries {
		if slices.Contains(e.Recipients, rcpt) {
			return true
		}
	}
	return false
}

func testRealRelay(t *testing.T, name string) {
	if testing.Short() {
		t.Skip("real relay; make test (go test without -short) runs it")
	}
	if os.Getenv("GREYHARNESS_SKIP_REAL_RELAYS") == "1" {
		t.Skip("GREYHARNESS_SKIP_REAL_RELAYS=1")
	}
	if os.Geteuid() != 0 {
		t.Fatalf("the real %s relay runs its daemon as root: run this test as root, or set GREYHARNESS_SKIP_REAL_RELAYS=1 to skip it explicitly", name)
	}
	began := time.Now()
	defer func() { t.Logf("%s integration test wall time: %v", name, time.Since(began).Round(time.Millisecond)) }()

	submitPort, nextHopPort := freePort(t), freePort(t)
	work, err := os.MkdirTemp("", "greyharness-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	// The relay's unprivileged processes must reach their spool below it.
	if err := os.Chmod(work, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(work) })
	t.Setenv("SUBMIT_PORT", submitPort)
	t.Setenv("NEXT_HOP_PORT", nextHopPort)
	t.Setenv("GREYHARNESS_WORK", filepath.Join(work, "instance"))

	p, err := profile.Load(filepath.Join("..", "..", "ci", name, "relay.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Submit.Addr != "127.0.0.1:"+submitPort || !strings.HasSuffix(p.NextHop[0], ":"+nextHopPort) {
		t.Fatalf("profile did not pick up the ports: %s -> %v", p.Submit.Addr, p.NextHop)
	}
	tm := p.Timing
	c := New(p, filepath.Join(work, "logs"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	torn := false
	defer func() {
		if t.Failed() {
			t.Logf("relay logs:\n%s", c.Logs())
		}
		if !torn {
			_ = c.Teardown(context.Background())
		}
	}()

	sk := startSink(t, p.NextHop...)

	step := time.Now()
	if err := c.Setup(ctx); err != nil {
		t.Fatalf("%s setup (installs %s when missing) failed: %v", name, name, err)
	}
	t.Logf("setup: %v", time.Since(step).Round(time.Millisecond))
	step = time.Now()
	if err := c.Start(ctx); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Logf("start+ready: %v", time.Since(step).Round(time.Millisecond))
	if s := c.Queue(ctx); s.Err != "" || len(s.Entries) != 0 {
		t.Fatalf("fresh instance queue not empty: %+v", s)
	}

	// 1. Accepted by the next hop: delivered.
	const sender = "sender@example.test"
	id1, rcpt1 := name+"-1", "rcpt1@example.net"
	step = time.Now()
	if err := submit(p, sender, rcpt1, id1); err != nil {
		t.Fatalf("submit: %v", err)
	}
	eventually(t, tm.RetryMax.D()+10*time.Second, 50*time.Millisecond, "first message at the next hop", func() (bool, string) {
		n, _ := sk.counts(id1, rcpt1)
		return n == 1, fmt.Sprintf("delivered %d times", n)
	})
	t.Logf("submit -> next hop: %v", time.Since(step).Round(time.Millisecond))

	// 2. Greylisted: the relay keeps it, visibly queued.
	sk.greylist.Store(true)
	id2, rcpt2 := name+"-2", "rcpt2@example.org"
	if err := submit(p, sender, rcpt2, id2); err != nil {
		t.Fatalf("submit: %v", err)
	}
	var snap history.QueueSnapshot
	eventually(t, 2*tm.RetryMax.D()+10*time.Second, 100*time.Millisecond, "greylisted message deferred and queued", func() (bool, string) {
		_, deferred := sk.counts(id2, rcpt2)
		snap = c.Queue(ctx)
		return deferred >= 1 && queued(snap, rcpt2), fmt.Sprintf("451 answered %d times; queue %+v", deferred, snap)
	})
	e := snap.Entries[0]
	if e.Sender != sender || e.QueueID == "" || e.Arrival.IsZero() {
		t.Errorf("queue entry = %+v", e)
	}
	// It is retried within retry_max.
	_, before := sk.counts(id2, rcpt2)
	eventually(t, 2*tm.RetryMax.D()+2*time.Second, 100*time.Millisecond, "retry while greylisted", func() (bool, string) {
		_, n := sk.counts(id2, rcpt2)
		return n > before, fmt.Sprintf("451 answered %d times", n)
	})

	// 3. Restart with the message queued: old processes reaped, queue kept.
	old := c.Processes()
	if len(old) == 0 {
		t.Fatal("no relay processes seen before restart")
	}
	step = time.Now()
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Logf("restart (stop+start+ready): %v", time.Since(step).Round(time.Millisecond))
	for _, pid := range old {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			t.Errorf("old relay process %d still exists after Restart: %s", pid, st)
		}
	}
	if s := c.Queue(ctx); !queued(s, rcpt2) {
		t.Fatalf("message lost from the queue across restart: %+v", s)
	}

	// 4. The next hop accepts: delivered, queue empties.
	sk.greylist.Store(false)
	step = time.Now()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	eventually(t, 2*tm.RetryMax.D()+10*time.Second, 100*time.Millisecond, "greylisted message delivered once accepted", func() (bool, string) {
		n, _ := sk.counts(id2, rcpt2)
		return n == 1, fmt.Sprintf("delivered %d times", n)
	})
	eventually(t, 2*tm.RetryMax.D()+5*time.Second, 100*time.Millisecond, "queue empty after delivery", func() (bool, string) {
		s := c.Queue(ctx)
		return s.Err == "" && len(s.Entries) == 0, fmt.Sprintf("%+v", s)
	})
	t.Logf("accept -> delivered and queue empty: %v", time.Since(step).Round(time.Millisecond))
	if n, _ := sk.counts(id1, rcpt1); n != 1 {
		t.Errorf("first message delivered %d times", n)
	}

	// 5. Teardown leaves nothing behind.
	last := c.Processes()
	step = time.Now()
	if err := c.Teardown(ctx); err != nil {
		t.Fatalf("teardown: %v", err)
	}
	torn = true
	t.Logf("teardown: %v", time.Since(step).Round(time.Millisecond))
	for _, pid := range last {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			t.Errorf("relay process %d left after Teardown: %s", pid, st)
		}
	}
	if conn, err := net.DialTimeout("tcp", p.Submit.Addr, time.Second); err == nil {
		conn.Close()
		t.Errorf("%s still accepts connections after Teardown", p.Submit.Addr)
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Logf("dial after teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "instance")); err == nil {
		t.Errorf("teardown left the work dir")
	}
}

func TestPostfix(t *testing.T) { testRealRelay(t, "postfix") }

func TestExim(t *testing.T) { testRealRelay(t, "exim") }

// A ready command that says yes while the profile's submit.addr does not
// greet (it asks another port: nullmailer.sh once listened on its own
// default, not its profile's) fails the start and names the address: else
// every scenario of the run would be not-accepted, as if the relay refused
// mail. Once the address greets 220, the start succeeds.
func TestReadyNeedsTheSubmitAddressToGreet(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out a 1s restart_grace; make test (go test without -short) runs it")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var greet atomic.Bool // until set, every connection is closed unanswered
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if greet.Load() {
				fmt.Fprint(conn, "220 relay ready\r\n")
			}
			conn.Close()
		}
	}()
	addr := ln.Addr().String()
	p := &profile.Profile{Dir: t.TempDir(), Submit: profile.Submit{Addr: addr},
		Commands: profile.Commands{Start: "exec sleep 600", StartForeground: true, Ready: "exit 0"},
		Timing:   history.Timing{RestartGrace: history.Duration(time.Second)}}
	c := New(p, "")
	err = c.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "submit.addr "+addr) || !strings.Contains(err.Error(), "ready command") {
		t.Fatalf("start with a silent submit.addr: err = %v", err)
	}
	if c.Running() {
		t.Error("child left running after failed start")
	}
	greet.Store(true)
	if err := c.Start(context.Background()); err != nil {
		t.Fatalf("start with a greeting submit.addr: %v", err)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}
