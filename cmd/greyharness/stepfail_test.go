package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// A scenario whose step fails (here the relay's restart command exits 3)
// still ends with an outcome: judged on what was recorded, with the step
// error beside the verdicts, in --json and the saved history.
func TestStepFailureKeepsTheScenario(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	prof := sampleRelayProfile(t, dir, bin, "sample-bad-restart", "true",
		`echo "restart refused by the init system" >&2; exit 3`)
	sc := filepath.Join(dir, "restart-fails.yaml")
	os.WriteFile(sc, []byte(`name: restart-fails
steps:
  - send: {name: first, to: [alice@rcpt.greyharness.test]}
  - restart: {}
  - send: {name: never, to: [bob@rcpt.greyharness.test]}
expect:
  messages:
    - {group: first, verdict: delivered}
`), 0o644)
	out, results := filepath.Join(dir, "out.json"), filepath.Join(dir, "results")
	code, log := runBin(t, bin, "run", "--relay", prof, "--scenarios", sc, "--json", out, "--results", results)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (a step failed)\n%s", code, log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("--json: %v\n%s", err, log)
	}
	var outs []struct {
		Scenario, Status, Error, Saved string
		Result                         *struct {
			Findings []struct {
				Rcpt    string
				Primary string
			}
		}
	}
	if err := json.Unmarshal(b, &outs); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if len(outs) != 1 || outs[0].Scenario != "restart-fails" {
		t.Fatalf("the scenario is missing from --json: %s\n%s", b, log)
	}
	o := outs[0]
	if o.Status != "failed" || !strings.Contains(o.Error, "step 2") || !strings.Contains(o.Error, "restart refused by the init system") {
		t.Errorf("status %q error %q: want failed with the step error", o.Status, o.Error)
	}
	if o.Result == nil || len(o.Result.Findings) != 1 || o.Result.Findings[0].Primary != "delivered" {
		t.Errorf("want the message judged on what was recorded (alice delivered): %s", b)
	}
	// The history is saved (the verdicts pass; the step failed) and says why.
	h, err := os.ReadFile(filepath.Join(results, "restart-fails", "history.json"))
	if err != nil || !strings.Contains(string(h), "restart refused by the init system") {
		t.Errorf("saved history: %v", err)
	}
	// Re-judged offline, the scenario still fails and says why.
	if code, out := runBin(t, bin, "judge", results); code != 1 || !strings.Contains(out, "STEP FAILED") || !strings.Contains(out, "restart refused by the init system") {
		t.Errorf("judge: exit %d, want 1 with the step error\n%s", code, out)
	}
	if !strings.Contains(log, "restart refused by the init system") {
		t.Errorf("the step error is not printed\n%s", log)
	}
}

// An interrupted run (Ctrl-C in the middle of a wait) still ends the
// scenario that began: judged on what was recorded, in --json.
func TestInterruptedScenarioIsJudged(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	sc := filepath.Join(dir, "long-wait.yaml")
	os.WriteFile(sc, []byte(`name: long-wait
policy:
  rules:
    - match: {stage: rcpt}
      reply: "451 4.7.1 not now"
steps:
  - send: {name: first, to: [alice@rcpt.greyharness.test]}
  - wait: {for: delivered, group: first, timeout: 5m}
  - send: {name: second, to: [bob@rcpt.greyharness.test]}
`), 0o644)
	out := filepath.Join(dir, "out.json")
	cmd := exec.Command(bin, "run", "--relay", "sample", "--scenarios", sc, "--json", out, "--results", filepath.Join(dir, "results"))
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "NO_COLOR=1")
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	waiting := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		s := bufio.NewScanner(pr)
		once := false
		for s.Scan() {
			log.WriteString(s.Text() + "\n")
			if !once && strings.Contains(s.Text(), "waiting for delivered") {
				once = true
				close(waiting)
			}
		}
	}()
	select {
	case <-waiting:
	case <-scanned:
		t.Fatalf("the run ended before the wait\n%s", log.String())
	}
	cmd.Process.Signal(os.Interrupt)
	err := cmd.Wait()
	pw.Close()
	<-scanned
	if err == nil {
		t.Fatalf("an interrupted run exited 0\n%s", log.String())
	}
	b, rerr := os.ReadFile(out)
	if rerr != nil || !strings.Contains(string(b), `"scenario": "long-wait"`) || !strings.Contains(string(b), `"status": "failed"`) ||
		!strings.Contains(string(b), "step 2") || !regexp.MustCompile(`"rcpt": "alice@t[0-9]+-[0-9a-f]+\.rcpt\.greyharness\.test"`).Match(b) {
		t.Fatalf("--json lacks the interrupted scenario with its message and the step: %v\n%s\n%s", rerr, b, log.String())
	}
}

// sampleRelayProfile writes dir/relay.yaml, a profile named name that runs
// the sample relay (bin) in the foreground on free ports, its queue in
// dir/queue: its start command runs the shell line guard first (which may
// refuse the start), its restart command is restart. It returns the path.
func sampleRelayProfile(t *testing.T, dir, bin, name, guard, restart string) string {
	t.Helper()
	submit, next := freePort(t), freePort(t)
	queue := filepath.Join(dir, "queue")
	os.MkdirAll(queue, 0o755)
	prof := filepath.Join(dir, "relay.yaml")
	err := os.WriteFile(prof, []byte(fmt.Sprintf(`name: %[5]s
submit: {addr: %[1]q, helo: harness.greyharness.test}
queue_format: sample-json
next_hop: %[2]q
commands:
  start: |
    %[6]s
    exec "$GREYHARNESS_BIN" sample-relay serve --listen %[1]s --next-hop %[2]s --queue %[3]s --min-backoff 1s --max-backoff 2s --queue-lifetime 12s --delay-warning 5s
  start_foreground: true
  ready: '"$GREYHARNESS_BIN" probe %[1]s'
  queue: '"$GREYHARNESS_BIN" sample-relay queue --queue %[3]s'
  restart: %[7]s
timing: {retry_max: 3s, queue_lifetime: 12s, delay_warning: 5s, restart_grace: 5s}
env: {GREYHARNESS_BIN: %[4]q}
`, submit, next, queue, bin, name, guard, restart)), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return prof
}
