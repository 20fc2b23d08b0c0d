// Package relay controls a relay under test as its profile says: it runs the
// profile's commands (sh -c, in the profile's folder, with the profile's
// env), keeps a foreground relay as a supervised child, waits for it to be
// ready, lists and flushes its queue.
//
// A foreground relay runs in its own process group. The Controller also
// follows the process groups its descendants create (Postfix's master calls
// setsid) and, on Linux, makes the harness a child subreaper so that relay
// processes orphaned at shutdown come back to it and are reaped: Stop leaves
// neither processes nor zombies behind.
package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/queue"
)

// Tuning.
const (
	pollEvery    = 100 * time.Millisecond // ready / process-gone polling
	sweepEvery   = 500 * time.Millisecond // follow descendants, reap orphans
	tailBytes    = 32 << 10               // captured output kept for Logs
	logFileTail  = 8 << 10                // per profile log file in Logs
	readyTryMax  = 5 * time.Second        // one run of the ready command
	greetTimeout = 2 * time.Second        // the submit address's 220 after ready
	commandGrace = 2 * time.Second        // after ctx ends, before SIGKILL of a command
)

// Controller drives one relay under test. Its methods are safe for
// concurrent use but are meant to be called from one goroutine.
type Controller struct {
	p      *profile.Profile
	logDir string

	out *tail // everything captured: commands and the relay's output

	mu      sync.Mutex
	logFile *os.File
	child   *child
}

// child is the supervised foreground relay.
type child struct {
	cmd     *exec.Cmd
	pid     int
	done    chan struct{} // closed once cmd.Wait returned (leader reaped)
	waitErr error
	stop    chan struct{} // closed to end the sweeper
	swept   chan struct{} // closed when the sweeper ended

	mu     sync.Mutex
	pgids  map[int]bool // process groups of the relay's processes
	pids   map[int]bool // every pid seen in the relay's tree
	reaped bool
}

// New returns a Controller for p. Output goes to logDir/relay.log (logDir ""
// keeps it in memory only, for Logs).
func New(p *profile.Profile, logDir string) *Controller {
	return &Controller{p: p, logDir: logDir, out: newTail(tailBytes)}
}

// Profile returns the controller's profile.
func (c *Controller) Profile() *profile.Profile { return c.p }

func (c *Controller) writer() io.Writer {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.logFile == nil && c.logDir != "" {
		if err := os.MkdirAll(c.logDir, 0o755); err == nil {
			f, err := os.OpenFile(filepath.Join(c.logDir, "relay.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err == nil {
				c.logFile = f
			}
		}
	}
	if c.logFile != nil {
		return io.MultiWriter(c.out, c.logFile)
	}
	return c.out
}

func (c *Controller) note(format string, a ...any) {
	fmt.Fprintf(c.writer(), "=== greyharness %s: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
}

// Logs returns the tail of the captured output (commands and relay) and of
// the profile's log_files, for failure dumps.
func (c *Controller) Logs() string {
	var b strings.Builder
	b.WriteString(c.out.String())
	for _, f := range c.p.LogFiles {
		if !filepath.IsAbs(f) {
			f = filepath.Join(c.p.Dir, f)
		}
		data, err := readTail(f, logFileTail)
		if err != nil || len(data) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n=== tail of %s\n%s", f, data)
	}
	return b.String()
}

func (c *Controller) env() []string {
	env := os.Environ()
	keys := make([]string, 0, len(c.p.Env))
	for k := range c.p.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+c.p.Env[k])
	}
	return env
}

func (c *Controller) command(ctx context.Context, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = c.p.Dir
	cmd.Env = c.env()
	cmd.SysProcAttr = ownGroup()
	cmd.Cancel = func() error {
		killGroup(cmd.Process.Pid, syscall.SIGTERM)
		return nil
	}
	cmd.WaitDelay = commandGrace
	return cmd
}

// run runs one profile command to completion and returns its stdout. Its
// stdout and stderr are captured; the error carries the tail of stderr.
func (c *Controller) run(ctx context.Context, name, script string, quiet bool) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := c.command(ctx, script)
	w := c.writer()
	if quiet {
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
	} else {
		c.note("%s: %s", name, script)
		cmd.Stdout, cmd.Stderr = io.MultiWriter(&stdout, w), io.MultiWriter(&stderr, w)
	}
	err := cmd.Run()
	// A command's own group may have leftovers when it was cancelled.
	if cmd.Process != nil {
		killGroup(cmd.Process.Pid, syscall.SIGKILL)
	}
	if err != nil {
		msg := strings.TrimSpace(lastLines(stderr.String(), 5))
		if msg == "" {
			msg = strings.TrimSpace(lastLines(stdout.String(), 5))
		}
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("relay %s command %q: %v: %s", name, script, err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("relay %s command %q: %v", name, script, err)
	}
	return stdout.Bytes(), nil
}

// Setup runs commands.setup (once, before the first Start).
func (c *Controller) Setup(ctx context.Context) error {
	if c.p.Commands.Setup == "" {
		return nil
	}
	_, err := c.run(ctx, "setup", c.p.Commands.Setup, false)
	return err
}

// Running reports whether the supervised foreground relay is running.
func (c *Controller) Running() bool {
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	select {
	case <-ch.done:
		return false
	default:
		return true
	}
}

// Start starts the relay and waits until commands.ready succeeds (bounded by
// timing.restart_grace). With commands.start_foreground the start command
// becomes a supervised child; otherwise it must return once the relay runs.
func (c *Controller) Start(ctx context.Context) error {
	script := c.p.Commands.Start
	if script == "" {
		if c.p.Commands.Ready == "" {
			return errors.New("relay profile has neither a start nor a ready command")
		}
		// A relay that is already running (profile.Load allows no start
		// only with ready): check that it is up.
		c.note("no start command: checking the running relay with ready")
		return c.waitReady(ctx, nil)
	}
	if !c.p.Commands.StartForeground {
		if err := c.runWithinGrace(ctx, "start", script); err != nil {
			return err
		}
		return c.waitReady(ctx, nil)
	}
	c.mu.Lock()
	if c.child != nil {
		c.mu.Unlock()
		if c.Running() {
			return errors.New("relay is already running")
		}
		// The previous child exited by itself: finish it off first.
		if err := c.stopChild(ctx); err != nil {
			return err
		}
		c.mu.Lock()
	}
	c.mu.Unlock()
	setSubreaper()

	c.note("start (foreground): %s", script)
	// Not CommandContext: the child outlives this call's ctx.
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = c.p.Dir
	cmd.Env = c.env()
	w := c.writer()
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = ownGroup()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("relay start command %q: %v", script, err)
	}
	ch := &child{
		cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{}), stop: make(chan struct{}), swept: make(chan struct{}),
		pgids: map[int]bool{cmd.Process.Pid: true}, pids: map[int]bool{cmd.Process.Pid: true},
	}
	go func() {
		ch.waitErr = cmd.Wait()
		ch.mu.Lock()
		ch.reaped = true
		ch.mu.Unlock()
		c.note("relay process %d exited: %v", ch.pid, exitText(ch.waitErr))
		close(ch.done)
	}()
	go ch.sweeper()
	c.mu.Lock()
	c.child = ch
	c.mu.Unlock()

	if err := c.waitReady(ctx, ch); err != nil {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.grace()+5*time.Second)
		defer cancel()
		if serr := c.stopChild(stopCtx); serr != nil {
			err = fmt.Errorf("%w; and stopping it: %v", err, serr)
		}
		return err
	}
	return nil
}

// runWithinGrace runs a start, restart or stop command, which must return
// within restart_grace. One that never returns (a relay left in the
// foreground without start_foreground) would otherwise hold the run for
// ever: at the deadline its process group is signalled (SIGTERM, SIGKILL
// after commandGrace) and the error says so.
func (c *Controller) runWithinGrace(ctx context.Context, name, script string) error {
	grace := c.grace()
	gctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	_, err := c.run(gctx, name, script, false)
	if err != nil && ctx.Err() == nil && errors.Is(gctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("relay %s command %q did not return within timing.restart_grace %v: its process group was killed "+
			"(a command that keeps the relay in the foreground needs commands.start_foreground: true)", name, script, grace)
		c.note("%v", err)
	}
	return err
}

func (c *Controller) grace() time.Duration {
	if g := c.p.Timing.RestartGrace.D(); g > 0 {
		return g
	}
	return profile.DefaultRestartGrace
}

// waitReady runs commands.ready until it exits 0, within restart_grace.
func (c *Controller) waitReady(ctx context.Context, ch *child) error {
	script := c.p.Commands.Ready
	grace := c.grace()
	deadline := time.Now().Add(grace)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if script == "" {
		return nil
	}
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	var last, silent error
	for tries := 1; ; tries++ {
		if ch != nil {
			select {
			case <-ch.done:
				return fmt.Errorf("relay exited while starting (%s); last output:\n%s", exitText(ch.waitErr), lastLines(c.out.String(), 20))
			default:
			}
		}
		try, cancelTry := context.WithTimeout(ctx, min(readyTryMax, time.Until(deadline)))
		_, err := c.run(try, "ready", script, true)
		cancelTry()
		if err == nil && c.p.Submit.Addr != "" {
			// The ready command may ask another address than the one the
			// harness submits to (a script's own default port): then every
			// submission would be refused, and each scenario judged
			// not-accepted as if the relay refused mail.
			if gerr := Greets(c.p.Submit.Addr, min(greetTimeout, max(time.Until(deadline), time.Millisecond))); gerr != nil {
				err = fmt.Errorf("the ready command exits 0 but submit.addr %s does not greet: %v", c.p.Submit.Addr, gerr)
				silent = err
			}
		}
		if err == nil {
			c.note("ready after %d tries", tries)
			return nil
		}
		last = err
		if silent != nil && ctx.Err() != nil {
			// The last try was cut by the deadline: what kept the relay
			// from being ready is the silent address.
			last = silent
		}
		var done <-chan struct{}
		if ch != nil {
			done = ch.done
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("relay not ready within timing.restart_grace %v (%d tries): %v", grace, tries, last)
		case <-done:
		case <-tick.C:
		}
	}
}

// Stop stops the relay: commands.stop when set, and the supervised child
// (SIGTERM to its process groups, SIGKILL after restart_grace), reaping every
// process of it.
func (c *Controller) Stop(ctx context.Context) error {
	var err error
	if c.p.Commands.Stop != "" {
		err = c.runWithinGrace(ctx, "stop", c.p.Commands.Stop)
	} else if !c.p.Commands.StartForeground {
		return errors.New("relay profile has no stop command and no foreground start")
	}
	if serr := c.stopChild(ctx); serr != nil {
		err = errors.Join(err, serr)
	}
	return err
}

// stopChild ends the supervised child, if any, and reaps all of it.
func (c *Controller) stopChild(ctx context.Context) error {
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	grace := c.grace()
	ch.follow()
	// After a stop command the relay may be going down by itself: give it
	// the grace before signalling.
	if c.p.Commands.Stop != "" {
		if c.waitGone(ctx, ch, grace) {
			return c.finish(ch)
		}
	}
	c.note("SIGTERM to process groups %v", ch.groups())
	ch.signal(syscall.SIGTERM)
	if c.waitGone(ctx, ch, grace) {
		return c.finish(ch)
	}
	c.note("still running after %v: SIGKILL to process groups %v", grace, ch.groups())
	ch.follow()
	ch.signal(syscall.SIGKILL)
	if c.waitGone(context.WithoutCancel(ctx), ch, 5*time.Second) {
		return c.finish(ch)
	}
	// A loaded machine may take longer to reap: only what is still there
	// is an error.
	ch.reap()
	left := ch.alive()
	select {
	case <-ch.done:
		if len(left) == 0 {
			return c.finish(ch)
		}
	default:
		left = append(left, ch.pid)
	}
	err := fmt.Errorf("relay processes left after SIGKILL: %v", left)
	c.finish(ch)
	return err
}

func (c *Controller) finish(ch *child) error {
	close(ch.stop)
	<-ch.swept
	c.mu.Lock()
	if c.child == ch {
		c.child = nil
	}
	c.mu.Unlock()
	return nil
}

// waitGone polls until the leader is reaped and no process of the relay's
// groups is left (zombies of ours are reaped meanwhile), for at most d.
func (c *Controller) waitGone(ctx context.Context, ch *child, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	tick := time.NewTicker(pollEvery / 2)
	defer tick.Stop()
	for {
		ch.reap()
		select {
		case <-ch.done:
			if len(ch.alive()) == 0 {
				return true
			}
		default:
		}
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return false
		case <-tick.C:
		case <-ch.done:
		}
	}
}

// Restart runs commands.restart when set, else Stop then Start.
func (c *Controller) Restart(ctx context.Context) error {
	if c.p.Commands.Restart != "" {
		if err := c.runWithinGrace(ctx, "restart", c.p.Commands.Restart); err != nil {
			return err
		}
		return c.waitReady(ctx, nil)
	}
	if err := c.Stop(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := c.Start(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// Flush runs commands.flush (deliver the queue now).
func (c *Controller) Flush(ctx context.Context) error {
	if c.p.Commands.Flush == "" {
		return errors.New("relay profile has no flush command")
	}
	_, err := c.run(ctx, "flush", c.p.Commands.Flush, false)
	return err
}

// Queue lists the relay's queue. On failure the snapshot's Err says why.
func (c *Controller) Queue(ctx context.Context) history.QueueSnapshot {
	snap := history.QueueSnapshot{At: time.Now()}
	if !c.p.Has(profile.CapQueue) {
		snap.Err = "relay profile has no queue command"
		return snap
	}
	out, err := c.run(ctx, "queue", c.p.Commands.Queue, true)
	if err != nil {
		snap.Err = err.Error()
		return snap
	}
	entries, err := queue.Parse(c.p.QueueFormat, out, snap.At)
	if err != nil {
		snap.Err = err.Error()
		return snap
	}
	snap.Entries = entries
	return snap
}

// Teardown stops the relay if it runs, runs commands.teardown and closes the
// log. It is safe to call more than once.
func (c *Controller) Teardown(ctx context.Context) error {
	var err error
	if serr := c.stopChild(ctx); serr != nil {
		err = serr
	}
	if c.p.Commands.Teardown != "" {
		if _, terr := c.run(ctx, "teardown", c.p.Commands.Teardown, false); terr != nil {
			err = errors.Join(err, terr)
		}
	}
	c.mu.Lock()
	if c.logFile != nil {
		c.logFile.Close()
		c.logFile = nil
	}
	c.mu.Unlock()
	return err
}

// Processes returns the pids still alive (zombies included) in the process
// groups the supervised relay used, for checks and failure dumps. It is
// empty once Stop returned without error.
func (c *Controller) Processes() []int {
	c.mu.Lock()
	ch := c.child
	c.mu.Unlock()
	if ch == nil {
		return nil
	}
	return ch.alive()
}

// --- the supervised child's process tree ---

func (ch *child) sweeper() {
	defer close(ch.swept)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		ch.follow()
		ch.reap()
		select {
		case <-ch.stop:
			return
		case <-t.C:
		}
	}
}

// follow records the process groups and pids of the relay's descendants.
func (ch *child) follow() {
	procs := listProcs()
	ch.mu.Lock()
	defer ch.mu.Unlock()
	// Forget pids that are gone, so a recycled pid is not taken for ours, and
	// groups with no process left: pids wrap (every few minutes on a busy
	// CI machine), and a recycled number may lead an unrelated group that
	// must never be signalled.
	present := make(map[int]bool, len(procs))
	groups := make(map[int]bool, len(procs))
	for _, p := range procs {
		present[p.pid] = true
		groups[p.pgid] = true
	}
	for pid := range ch.pids {
		if !present[pid] {
			delete(ch.pids, pid)
		}
	}
	for pg := range ch.pgids {
		if !groups[pg] {
			delete(ch.pgids, pg)
		}
	}
	// Fixed point over ppid links from known pids.
	for changed := true; changed; {
		changed = false
		for _, p := range procs {
			if !ch.pids[p.pid] && (ch.pids[p.ppid] || ch.pgids[p.pgid]) {
				ch.pids[p.pid] = true
				changed = true
			}
			if ch.pids[p.pid] && !ch.pgids[p.pgid] {
				ch.pgids[p.pgid] = true
				changed = true
			}
		}
	}
}

func (ch *child) groups() []int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var g []int
	for pg := range ch.pgids {
		g = append(g, pg)
	}
	slices.Sort(g)
	return g
}

func (ch *child) signal(sig syscall.Signal) {
	for _, pg := range ch.groups() {
		killGroup(pg, sig)
	}
}

// alive lists processes (zombies included) in the relay's groups.
func (ch *child) alive() []int {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var left []int
	for _, p := range listProcs() {
		if ch.pgids[p.pgid] || (ch.pids[p.pid] && p.state == 'Z') {
			left = append(left, p.pid)
		}
	}
	return left
}

// reap collects our zombie children that belong to the relay, except the
// leader (cmd.Wait reaps it).
func (ch *child) reap() {
	self := os.Getpid()
	ch.mu.Lock()
	leaderReaped := ch.reaped
	var zombies []int
	for _, p := range listProcs() {
		if p.ppid != self || p.state != 'Z' {
			continue
		}
		if p.pid == ch.pid && !leaderReaped {
			continue
		}
		if ch.pids[p.pid] || ch.pgids[p.pgid] {
			zombies = append(zombies, p.pid)
		}
	}
	ch.mu.Unlock()
	for _, pid := range zombies {
		reapPid(pid)
	}
}

// --- helpers ---

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func readTail(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := max(st.Size()-n, 0)
	buf := make([]byte, st.Size()-off)
	_, err = f.ReadAt(buf, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return buf, nil
}

// tail is a bounded buffer keeping the last max bytes written.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// Greets reports whether an SMTP server at addr greets with 220 within
// timeout (nil), or what it did instead. It then says QUIT.
func Greets(addr string, timeout time.Duration) error {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no greeting: %w", err)
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	fmt.Fprint(conn, "QUIT\r\n")
	return nil
}
