package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quick bounds every bad-input run: refusing input takes no time, so a run
// still going after this is hanging.
const quick = 30 * time.Second

// mkfifo makes a named pipe nobody writes to: opening it for reading blocks.
func mkfifo(t *testing.T, path string) string {
	t.Helper()
	if err := syscall.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// sparse makes a file of size bytes without writing them.
func sparse(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func wantExit2(t *testing.T, code int, out string, wants ...string) {
	t.Helper()
	if code != 2 {
		t.Errorf("exit %d, want 2\n%s", code, out)
	}
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q\n%s", w, out)
		}
	}
}

// Inputs that are not regular files (a FIFO nobody writes to, /dev/zero) or
// are too large are refused with exit 2: no hang, no out-of-memory.
func TestCLIInputFiles(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	fifo := mkfifo(t, filepath.Join(dir, "fifo.yaml"))
	fifoDir := filepath.Join(dir, "results")
	os.MkdirAll(fifoDir, 0o755)
	mkfifo(t, filepath.Join(fifoDir, "history.json"))
	scDir := filepath.Join(dir, "scenarios")
	os.MkdirAll(scDir, 0o755)
	mkfifo(t, filepath.Join(scDir, "a.yaml"))
	bigYAML := sparse(t, filepath.Join(dir, "big.yaml"), 16<<20+1)
	bigHistory := sparse(t, filepath.Join(dir, "history.json"), 256<<20+1)

	cases := []struct {
		name  string
		args  []string
		wants []string
	}{
		{"validate fifo", []string{"validate", fifo}, []string{fifo, "not a regular file"}},
		{"validate folder with a fifo", []string{"validate", scDir}, []string{"a.yaml", "not a regular file"}},
		{"validate /dev/zero", []string{"validate", "/dev/zero"}, []string{"/dev/zero", "not a regular file"}},
		{"validate too large", []string{"validate", bigYAML}, []string{bigYAML, "larger than the 16 MiB limit"}},
		{"run --scenarios fifo", []string{"run", "--scenarios", fifo}, []string{fifo, "not a regular file"}},
		{"run --relay fifo", []string{"run", "--relay", fifo}, []string{fifo, "not a regular file"}},
		{"run --relay /dev/zero", []string{"run", "--relay", "/dev/zero"}, []string{"/dev/zero", "not a regular file"}},
		{"run --relay too large", []string{"run", "--relay", bigYAML}, []string{bigYAML, "larger than the 16 MiB limit"}},
		{"judge fifo", []string{"judge", fifo}, []string{fifo, "not a regular file"}},
		{"judge folder with a fifo", []string{"judge", fifoDir}, []string{"history.json", "not a regular file"}},
		{"judge /dev/zero", []string{"judge", "/dev/zero"}, []string{"/dev/zero", "not a regular file"}},
		{"judge too large", []string{"judge", bigHistory}, []string{bigHistory, "larger than the 256 MiB limit"}},
		{"fakemta --policy fifo", []string{"fakemta", "--listen", "127.0.0.1:0", "--policy", fifo}, []string{fifo, "not a regular file"}},
		{"fakemta --policy /dev/zero", []string{"fakemta", "--listen", "127.0.0.1:0", "--policy", "/dev/zero"}, []string{"/dev/zero", "not a regular file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runBinWithin(t, quick, bin, tc.args...)
			wantExit2(t, code, out, tc.wants...)
		})
	}
}

// historyJSON is a small, valid saved history: one accepted message that
// never reached the fake MTA (so judge fails it: exit 1).
const historyJSON = `{
  "scenario": "plain-delivery",
  "relay": "sample",
  "timing": {"retry_max": "3s", "queue_lifetime": "12s", "delay_warning": "5s", "restart_grace": "10s"},
  "greylist_delay": "0s",
  "started": "2026-01-01T10:00:00Z",
  "ended": "2026-01-01T10:00:30Z",
  "submissions": [
    {"harness_id": "gh-1", "message_id": "gh-1@harness.greyharness.test", "group": "plain",
     "mail_from": "sender+gh-1@client.greyharness.test", "rcpt_to": ["zoe@rcpt.greyharness.test"],
     "submitted_at": "2026-01-01T10:00:01Z", "accepted": true, "reply": {"code": 250, "text": "queued"}},
    {"harness_id": "gh-2", "message_id": "gh-2@harness.greyharness.test", "group": "plain",
     "mail_from": "sender+gh-2@client.greyharness.test", "rcpt_to": ["zoe@rcpt.greyharness.test"],
     "submitted_at": "2026-01-01T10:00:01Z", "accepted": true, "reply": {"code": 250, "text": "queued"}}
  ],
  "journal": [],
  "queue": [],
  "faults": [],
  "expect": {"messages": [{"group": "plain", "verdict": "delivered"}], "no_duplicates": true, "no_silent_hold": true}
}`

// writeHistory writes historyJSON changed by edit into DIR/history.json.
func writeHistory(t *testing.T, edit func(h map[string]any)) string {
	t.Helper()
	var h map[string]any
	if err := json.Unmarshal([]byte(historyJSON), &h); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(h)
	}
	b, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "history.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func submission(h map[string]any, i int) map[string]any {
	return h["submissions"].([]any)[i].(map[string]any)
}

// A saved history that is not what a run records is bad input (exit 2),
// never judged as if it were: no "PASS … 0 checked", no invented losses.
func TestCLIJudgeValidatesHistory(t *testing.T) {
	bin := buildBinary(t)

	t.Run("a valid history is judged", func(t *testing.T) {
		code, out := runBinWithin(t, quick, bin, "judge", writeHistory(t, nil))
		if code != 1 || !strings.Contains(out, "2 checked") {
			t.Fatalf("exit %d, want 1 (both messages undelivered)\n%s", code, out)
		}
	})
	t.Run("an empty submission list is a run that submitted nothing", func(t *testing.T) {
		dir := writeHistory(t, func(h map[string]any) { h["submissions"] = []any{} })
		if code, out := runBinWithin(t, quick, bin, "judge", dir); code == 2 {
			t.Fatalf("exit 2 for an explicit empty list\n%s", out)
		}
	})
	cases := []struct {
		name  string
		edit  func(h map[string]any)
		wants []string
	}{
		{"submissions deleted", func(h map[string]any) { delete(h, "submissions") }, []string{"submissions: missing"}},
		{"submissions null", func(h map[string]any) { h["submissions"] = nil }, []string{"submissions: missing or null"}},
		{"duplicated submission", func(h map[string]any) {
			s := h["submissions"].([]any)
			h["submissions"] = append(s, s[0])
		}, []string{`submissions[2]: harness_id "gh-1" repeats submissions[0]`}},
		{"same harness id, other message", func(h map[string]any) { submission(h, 1)["harness_id"] = "gh-1" },
			[]string{`submissions[1]: harness_id "gh-1" repeats submissions[0]`}},
		{"same Message-ID without resubmission", func(h map[string]any) { submission(h, 1)["message_id"] = "gh-1@harness.greyharness.test" },
			[]string{`submissions[1]: message_id "gh-1@harness.greyharness.test" repeats submissions[0] and is not marked resubmission`}},
		{"no harness id", func(h map[string]any) { delete(submission(h, 0), "harness_id") }, []string{"submissions[0]: harness_id is missing"}},
		{"no recipients", func(h map[string]any) { submission(h, 0)["rcpt_to"] = []any{} }, []string{"submissions[0]: rcpt_to is empty"}},
		{"no scenario", func(h map[string]any) { delete(h, "scenario") }, []string{"scenario: missing"}},
		{"no timing", func(h map[string]any) { delete(h, "timing") }, []string{"timing.retry_max: missing or not > 0"}},
		{"not an object", func(h map[string]any) { clear(h) }, []string{"submissions: missing"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeHistory(t, tc.edit)
			code, out := runBinWithin(t, quick, bin, "judge", dir)
			wantExit2(t, code, out, append([]string{filepath.Join(dir, "history.json")}, tc.wants...)...)
			if strings.Contains(out, "PASS") || strings.Contains(out, "checked") {
				t.Errorf("a bad history was judged\n%s", out)
			}
		})
	}
	t.Run("JSON syntax error names line and column", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "history.json"), []byte("{\n  \"scenario\": \"x\",\n  oops\n}\n"), 0o644)
		code, out := runBinWithin(t, quick, bin, "judge", dir)
		wantExit2(t, code, out, filepath.Join(dir, "history.json")+":3:3:")
	})
}

func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Relay profiles: mistakes are found at load time (exit 2, file:line:col),
// and a start command that never returns cannot hold the run.
func TestCLIRelayProfile(t *testing.T) {
	bin := buildBinary(t)
	const tail = "next_hop: 127.0.0.1:1\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n  restart_grace: 1s\n"

	t.Run("duplicate key", func(t *testing.T) {
		p := writeFile(t, "relay.yaml", "submit:\n  addr: 127.0.0.1:1\ncommands:\n  start: ./a\n  start: ./b\n"+tail)
		code, out := runBinWithin(t, quick, bin, "run", "--relay", p)
		wantExit2(t, code, out, p+`:5:3: duplicate key "start" in commands (first at line 4)`)
	})
	t.Run("no start and no ready", func(t *testing.T) {
		p := writeFile(t, "relay.yaml", "submit:\n  addr: 127.0.0.1:1\ncommands:\n  restart: ./r\n"+tail)
		code, out := runBinWithin(t, quick, bin, "run", "--relay", p)
		wantExit2(t, code, out, p+":3:1: commands.start is required")
	})
	t.Run("start that never returns", func(t *testing.T) {
		p := writeFile(t, "relay.yaml", "submit:\n  addr: 127.0.0.1:1\ncommands:\n  start: sleep 1000\n"+tail)
		start := time.Now()
		code, out := runBinWithin(t, quick, bin, "run", "--relay", p, "--focus", "^plain-delivery$")
		if code != 1 {
			t.Errorf("exit %d, want 1 (the relay failed to start)\n%s", code, out)
		}
		if !strings.Contains(out, "did not return within timing.restart_grace 1s") {
			t.Errorf("output does not say the start command timed out\n%s", out)
		}
		t.Logf("run ended after %v", time.Since(start).Round(time.Millisecond))
	})
}

// --focus and --skip select scenarios by name; a run that selects nothing is
// bad input, not a green run.
func TestCLISelection(t *testing.T) {
	bin := buildBinary(t)

	t.Run("anchored focus runs exactly that scenario", func(t *testing.T) {
		code, out := runBin(t, bin, "run", "--relay", "sample", "--focus", "^plain-delivery$")
		if code != 0 || !strings.Contains(out, "1 scenario(s) passed, 0 failed, 0 skipped") {
			t.Fatalf("exit %d, want 0 and one scenario\n%s", code, out)
		}
	})
	cases := []struct {
		name  string
		args  []string
		wants []string
	}{
		{"focus typo", []string{"--focus", "^plain-delivry$"}, []string{`--focus "^plain-delivry$" selects no scenario`, "plain-delivery"}},
		{"skip everything", []string{"--skip", "."}, []string{"selects no scenario"}},
		{"focus and skip cancel out", []string{"--focus", "^plain-delivery$", "--skip", "plain"}, []string{"selects no scenario"}},
		{"label filter selects nothing", []string{"--label-filter", "no-such-label"}, []string{`--label-filter "no-such-label" selects no scenario`}},
		{"bad regex", []string{"--focus", "("}, []string{"--focus", "missing closing )"}},
		{"bad label filter", []string{"--label-filter", "&&"}, []string{"--label-filter"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runBinWithin(t, quick, bin, append([]string{"run", "--relay", "sample"}, tc.args...)...)
			wantExit2(t, code, out, tc.wants...)
		})
	}
}

// freePort returns a loopback port nobody listens on now.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// A restart command that never returns is the restart step's error, within
// restart_grace: the run goes on and ends, it does not hang.
func TestCLIRestartThatNeverReturns(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	submit, next := freePort(t), freePort(t)
	queue := filepath.Join(dir, "queue")
	p := writeFile(t, "relay.yaml", fmt.Sprintf(`name: hanging-restart
submit: {addr: %[1]s}
commands:
  start: exec "%[3]s" sample-relay serve --listen %[1]s --next-hop %[2]s --queue %[4]s --min-backoff 1s --max-backoff 2s
  start_foreground: true
  ready: '"%[3]s" probe %[1]s'
  restart: sleep 1000
  queue: '"%[3]s" sample-relay queue --queue %[4]s'
queue_format: sample-json
next_hop: %[2]s
timing:
  retry_max: 3s
  queue_lifetime: 12s
  restart_grace: 2s
`, submit, next, bin, queue))
	start := time.Now()
	code, out := runBinWithin(t, 2*time.Minute, bin, "run", "--relay", p, "--focus", "^restart-after-delivery$")
	if code != 1 {
		t.Errorf("exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, `step 3 (`) || !strings.Contains(out, `relay restart command "sleep 1000" did not return within timing.restart_grace 2s`) {
		t.Errorf("the restart step's error is not reported\n%s", out)
	}
	t.Logf("run ended after %v", time.Since(start).Round(time.Millisecond))
}
