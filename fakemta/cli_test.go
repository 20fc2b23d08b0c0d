package fakemta

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for the writer goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func noEnv(string) string { return "" }

// runCLI runs the CLI to completion (for inputs that must fail fast).
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // if it ever got as far as serving, stop at once
	var stdout, stderr syncBuffer
	code := run(ctx, args, noEnv, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCLIBadFlagsExit2(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"--listen"}, "flag needs an argument: -listen"},
		{[]string{"--listen", "nocolon"}, `--listen "nocolon": want host:port`},
		{[]string{"--max-message-size", "12Q"}, `invalid value "12Q" for flag -max-message-size`},
		{[]string{"--max-recipients", "0"}, "--max-recipients must be positive"},
		{[]string{"--mx-state", "mixed"}, "--mx-state: want split or shared"},
		{[]string{"--greylist-store", "http://127.0.0.1:6379/0"}, "--greylist-store: want redis://HOST:PORT/DB"},
		{[]string{"--read-timeout", "soon"}, `invalid value "soon" for flag -read-timeout`},
		{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-self-signed", "--tls-key", "k.pem", "--tls-cert", "c.pem"}, "exclude each other"},
		{[]string{"--tls-cert", filepath.Join(dir, "none.pem"), "--tls-key", filepath.Join(dir, "none.key")}, "tls: open "},
		{[]string{"--policy", filepath.Join(dir, "missing.yaml")}, "--policy: open "},
		{[]string{"serve"}, `unexpected argument "serve"`},
		{[]string{"--api", "0.0.0.0:0"}, "not a loopback address: give a token with --api-token or $GREYHARNESS_API_TOKEN"},
		{[]string{"--api", ":8025"}, "not a loopback address"},
		{[]string{"--journal-sync", "often"}, `--journal-sync: want "message" or a positive interval like 100ms, got "often"`},
		{[]string{"--journal-sync", "0s", "--state", dir}, `got "0s"`},
		{[]string{"--journal-sync", "100ms"}, "--journal-sync 100ms needs --state"},
	} {
		code, stdout, stderr := runCLI(t, c.args...)
		if code != ExitConfig || !strings.Contains(stderr, c.want) || stdout != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want exit 2 and %q", c.args, code, stdout, stderr, c.want)
		}
	}
}

func TestCLIHelp(t *testing.T) {
	code, stdout, stderr := runCLI(t, "-h")
	if code != ExitOK || stderr != "" {
		t.Fatalf("-h: exit %d, stderr %q", code, stderr)
	}
	for _, f := range []string{"-listen", "-policy", "-state", "-wipe-state", "-keep-bodies", "-api", "-api-token", "-tls-cert", "-tls-key",
		"-tls-self-signed", "-domain", "-max-message-size", "-max-line-length", "-max-recipients", "-read-timeout", "-write-timeout", "-quiet"} {
		if !strings.Contains(stdout, "  "+f+" ") && !strings.Contains(stdout, "  "+f+"\n") {
			t.Errorf("usage lacks %s:\n%s", f, stdout)
		}
	}
}

func TestCLIBadPolicyFileExit2WithPositions(t *testing.T) {
	p := filepath.Join(t.TempDir(), "policy.yaml")
	doc := "greylist:\n  delay: 5x\nrules:\n  - match: {stage: rcpt}\n    reply: \"999 bad\"\n"
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runCLI(t, "--policy", p, "--listen", "127.0.0.1:0")
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if code != ExitConfig || stdout != "" || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], p+":2:10: delay: invalid duration") ||
		!strings.HasPrefix(lines[1], p+":5:12: reply: ") {
		t.Fatalf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

// readyLines collects the CLI's stdout lines on a channel.
func readyLines(r io.Reader) <-chan string {
	ch := make(chan string, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// nextLine waits for a line starting with prefix and returns the rest.
func nextLine(t *testing.T, ctx context.Context, lines <-chan string, prefix string) string {
	t.Helper()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("output ended before %q", prefix)
			}
			if rest, ok := strings.CutPrefix(l, prefix); ok {
				return rest
			}
		case <-ctx.Done():
			t.Fatalf("no %q line", prefix)
		}
	}
}

func TestCLIServesAPIAndStopsCleanly(t *testing.T) {
	dir := t.TempDir()
	state, bodies, pol := filepath.Join(dir, "state"), filepath.Join(dir, "bodies"), filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pol, []byte("rules:\n  - match: {rcpt: \"*@blocked.test\"}\n    reply: 550 5.1.1 No such user\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	pr, pw := io.Pipe()
	var stderr syncBuffer
	env := func(k string) string {
		if k == APITokenEnv {
			return "envtoken"
		}
		return ""
	}
	done := make(chan int, 1)
	go func() {
		done <- run(runCtx, []string{"--listen", "127.0.0.1:0", "--api", "127.0.0.1:0", "--state", state,
			"--keep-bodies", bodies, "--policy", pol, "--max-message-size", "1M", "--domain", "mx.cli.test"}, env, pw, &stderr)
		pw.Close()
	}()
	lines := readyLines(pr)
	smtpAddr := nextLine(t, ctx, lines, "fakemta: listening on ")
	apiAddr := nextLine(t, ctx, lines, "fakemta: api listening on ")

	if c := apiSend(t, smtpAddr, "a@client.test", "b@remote.test"); c != 0 {
		t.Fatalf("delivery: %d", c)
	}
	if c := apiSend(t, smtpAddr, "a@client.test", "x@blocked.test"); c != 550 {
		t.Fatalf("policy file rule: %d, want 550", c)
	}
	get := func(auth string) int {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+apiAddr+"/api/v1/messages", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := get(""); c != http.StatusUnauthorized {
		t.Fatalf("API without the token from the environment: %d", c)
	}
	if c := get("Bearer envtoken"); c != http.StatusOK {
		t.Fatalf("API with the token: %d", c)
	}

	stop()
	select {
	case code := <-done:
		if code != ExitOK {
			t.Fatalf("exit %d, stderr %s", code, stderr.String())
		}
	case <-ctx.Done():
		t.Fatal("the CLI did not stop")
	}
	nextLine(t, ctx, lines, "fakemta: stopping")
	if got := nextLine(t, ctx, lines, "fakemta: stopped; journal in "); got != filepath.Join(state, "journal.jsonl") {
		t.Fatalf("journal path %q", got)
	}
	evs, err := ReadJournal(state)
	if err != nil || len(evs) == 0 {
		t.Fatalf("journal: %v %d events", err, len(evs))
	}
	if last := evs[len(evs)-1]; last.Kind != EventControl || last.Note != "stop" {
		t.Fatalf("last journal event %+v, want control stop", last)
	}
	var msg *Message
	for _, ev := range evs {
		if ev.Kind == EventTransaction && ev.Transaction.Message != nil {
			msg = ev.Transaction.Message
		}
		if ev.Kind == EventReply && ev.Reply.Code == 220 && !strings.HasPrefix(ev.Reply.Text, "mx.cli.test") {
			t.Errorf("greeting %q does not name --domain", ev.Reply.Text)
		}
	}
	if msg == nil || msg.MessageID != "api-1@client.test" {
		t.Fatalf("journaled message: %+v", msg)
	}
	if b, err := os.ReadFile(filepath.Join(bodies, msg.ID+".eml")); err != nil || string(b) != apiTestMsg {
		t.Fatalf("kept body: %v %q", err, b)
	}
}

func TestCLIQuietPrintsNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr syncBuffer
	if code := run(ctx, []string{"--quiet", "--listen", "127.0.0.1:0"}, noEnv, &stdout, &stderr); code != ExitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if stdout.String() != "" || stderr.String() != "" {
		t.Fatalf("--quiet printed %q / %q", stdout.String(), stderr.String())
	}
}

const cliHelperEnv = "GREYHARNESS_FAKEMTA_CLI_HELPER"

// TestCLIHelperProcess is not a test: TestCLIStopsOnSIGTERM runs the test
// binary as `greyharness fakemta` through it.
func TestCLIHelperProcess(t *testing.T) {
	if os.Getenv(cliHelperEnv) != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(args, os.Stdout, os.Stderr))
}

// startCLI runs the test binary as `greyharness fakemta ARGS` with env
// added, and returns it with its stdout lines and its stderr.
func startCLI(t *testing.T, ctx context.Context, env []string, args ...string) (*exec.Cmd, <-chan string, *syncBuffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, os.Args[0], append([]string{"-test.run=^TestCLIHelperProcess$", "--"}, args...)...)
	cmd.Env = append(append(os.Environ(), cliHelperEnv+"=1"), env...)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, readyLines(out), stderr
}

func TestCLIStopsOnSIGTERMWithJournalFlushed(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on windows")
	}
	t.Run("journal-sync=message", func(t *testing.T) { testCLIStopsOnSIGTERM(t) })
	t.Run("journal-sync=50ms", func(t *testing.T) { testCLIStopsOnSIGTERM(t, "--journal-sync", "50ms") })
}

func testCLIStopsOnSIGTERM(t *testing.T, extra ...string) {
	state := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, lines, stderr := startCLI(t, ctx, nil, append([]string{"--listen", "127.0.0.1:0", "--state", state}, extra...)...)
	addr := nextLine(t, ctx, lines, "fakemta: listening on ")
	if c := apiSend(t, addr, "a@client.test", "b@remote.test"); c != 0 {
		t.Fatalf("delivery: %d", c)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	nextLine(t, ctx, lines, "fakemta: stopped")
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, stderr %s", err, stderr.String())
	}
	evs, err := ReadJournal(state)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Note != "stop" {
		t.Fatalf("journal after SIGTERM: %v, %d events", err, len(evs))
	}
	msgs := 0
	for _, ev := range evs {
		if ev.Kind == EventTransaction && ev.Transaction.Message != nil {
			msgs++
		}
	}
	if msgs != 1 {
		t.Fatalf("journal holds %d messages, want 1", msgs)
	}
}

// TestCLIWithoutStateUsesScratchJournal: without --state the journal goes
// to a scratch folder under $TMPDIR (memory stays flat on long runs), the
// API serves from it, and the folder is gone after a clean stop.
func TestCLIWithoutStateUsesScratchJournal(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no SIGTERM on windows")
	}
	tmp := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd, lines, stderr := startCLI(t, ctx, []string{"TMPDIR=" + tmp}, "--listen", "127.0.0.1:0", "--api", "127.0.0.1:0")
	addr := nextLine(t, ctx, lines, "fakemta: listening on ")
	api := nextLine(t, ctx, lines, "fakemta: api listening on ")
	if c := apiSend(t, addr, "a@client.test", "b@remote.test"); c != 0 {
		t.Fatalf("delivery: %d", c)
	}
	resp, err := http.Get("http://" + api + "/api/v1/messages")
	if err != nil {
		t.Fatal(err)
	}
	var msgs []Message
	err = json.NewDecoder(resp.Body).Decode(&msgs)
	resp.Body.Close()
	if err != nil || len(msgs) != 1 || msgs[0].MailFrom != "a@client.test" {
		t.Fatalf("GET /api/v1/messages: %+v %v", msgs, err)
	}
	dirs, _ := filepath.Glob(filepath.Join(tmp, "greyharness-fakemta-scratch-*"))
	if len(dirs) != 1 {
		t.Fatalf("scratch folders in $TMPDIR: %q", dirs)
	}
	evs, err := ReadJournal(dirs[0])
	if err != nil || len(evs) == 0 || evs[0].Note != "start" {
		t.Fatalf("scratch journal: %d events, %v", len(evs), err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := nextLine(t, ctx, lines, "fakemta: stopped"); got != "" {
		t.Fatalf("stop line names a journal that is gone: %q", got)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v, stderr %s", err, stderr.String())
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Fatalf("left in $TMPDIR after a clean stop: %v", left)
	}
}
