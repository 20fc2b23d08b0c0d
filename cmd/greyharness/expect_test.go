package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A relay profile's expected failure (scenarios.NAME.expect): the scenario
// fails with the expected verdict and the run does not; the same
// expectation on a relay that passes is an unexpected pass that fails the
// run; a failure with another verdict stays a failure. Every report says so.
func TestCLIExpectedOutcome(t *testing.T) {
	bin := buildBinary(t)
	// One message through the (healthy) sample relay, expected within a
	// bound: 1ms no relay meets (stale), or 1m.
	scenarioWithin := func(t *testing.T, within string) string {
		return writeFile(t, "speedy.yaml", fmt.Sprintf(`name: speedy
steps:
  - send: {name: m, to: [zoe@rcpt.greyharness.test]}
  - wait: {for: delivered, group: m}
expect:
  messages:
    - {group: m, verdict: delivered, within: %s}
`, within))
	}
	profileFor := func(t *testing.T, verdict string) string {
		dir := t.TempDir()
		submit, next := freePort(t), freePort(t)
		queue := filepath.Join(dir, "queue")
		return writeFile(t, "relay.yaml", fmt.Sprintf(`name: slowpoke
submit: {addr: %[1]s}
commands:
  start: exec "%[3]s" sample-relay serve --listen %[1]s --next-hop %[2]s --queue %[4]s --min-backoff 1s --max-backoff 2s
  start_foreground: true
  ready: '"%[3]s" probe %[1]s'
  queue: '"%[3]s" sample-relay queue --queue %[4]s'
  flush: '"%[3]s" sample-relay flush --queue %[4]s'
queue_format: sample-json
next_hop: %[2]s
timing:
  retry_max: 3s
  queue_lifetime: 30s
  restart_grace: 20s
scenarios:
  speedy:
    expect: {verdict: %[5]s}
    why: "it delivers in more than a millisecond (a queue hop)"
`, submit, next, bin, queue, verdict))
	}
	type outcome struct {
		Scenario, Status string
		Expected         *struct {
			Verdict []string
			Why     string
		}
	}
	run := func(t *testing.T, p, sc string) (int, string, outcome, string, string) {
		dir := t.TempDir()
		js, junit, html := filepath.Join(dir, "r.json"), filepath.Join(dir, "junit.xml"), filepath.Join(dir, "r.html")
		code, out := runBinWithin(t, 3*time.Minute, bin, "run", "--relay", p, "--scenarios", sc,
			"--json", js, "--junit", junit, "--html", html, "--results", filepath.Join(dir, "results"))
		var outs []outcome
		b, err := os.ReadFile(js)
		if err != nil || json.Unmarshal(b, &outs) != nil || len(outs) != 1 {
			t.Fatalf("--json: %v %s\n%s", err, b, out)
		}
		j, _ := os.ReadFile(junit)
		h, _ := os.ReadFile(html)
		return code, out, outs[0], string(j), string(h)
	}

	t.Run("expected failure", func(t *testing.T) {
		code, out, o, junit, html := run(t, profileFor(t, "stale"), scenarioWithin(t, "1ms"))
		if code != 0 {
			t.Errorf("exit %d, want 0: the failure is the one the profile expects\n%s", code, out)
		}
		if o.Status != "expected-failure" || o.Expected == nil || o.Expected.Verdict[0] != "stale" || !strings.Contains(o.Expected.Why, "queue hop") {
			t.Errorf("json outcome = %+v", o)
		}
		for _, want := range []string{"EXPECTED FAILURE speedy", "0 failed", "1 expected failure"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q\n%s", want, out)
			}
		}
		if !strings.Contains(junit, `<skipped message="expected failure (stale: it delivers in more than a millisecond`) || strings.Contains(junit, "<failure") {
			t.Errorf("junit:\n%s", junit)
		}
		if !strings.Contains(html, `class="badge expected-failure"`) {
			t.Errorf("html has no expected-failure badge")
		}
	})
	t.Run("unexpected pass", func(t *testing.T) {
		code, out, o, junit, html := run(t, profileFor(t, "stale"), scenarioWithin(t, "1m"))
		if code != 1 {
			t.Errorf("exit %d, want 1: a relay that no longer fails as its profile says must be noticed\n%s", code, out)
		}
		if o.Status != "unexpected-pass" {
			t.Errorf("json outcome = %+v", o)
		}
		for _, want := range []string{"UNEXPECTED PASS speedy", "1 UNEXPECTED PASS"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q\n%s", want, out)
			}
		}
		if !strings.Contains(junit, `type="unexpected-pass"`) {
			t.Errorf("junit:\n%s", junit)
		}
		if !strings.Contains(html, `class="badge unexpected-pass"`) {
			t.Errorf("html has no unexpected-pass badge")
		}
	})
	t.Run("failed otherwise", func(t *testing.T) {
		code, out, o, _, _ := run(t, profileFor(t, "lost"), scenarioWithin(t, "1ms"))
		if code != 1 || o.Status != "failed" {
			t.Errorf("exit %d, status %q; want 1, failed: stale is not the lost the profile expects\n%s", code, o.Status, out)
		}
		if !strings.Contains(out, "the slowpoke profile expects speedy to fail with lost only") {
			t.Errorf("output does not name the expectation it missed\n%s", out)
		}
	})
}
