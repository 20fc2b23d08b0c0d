package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A relay that does not come back from one scenario's restart, not even
// when the harness stops and starts it once more, is down for the rest of
// the run. The scenario whose restart failed fails with that; the later
// one is an error that names the cause — in the terminal, --json, JUnit
// and the conformance matrix — and never a not-accepted FAIL for the
// submissions a stopped relay would have refused (seen with OpenSMTPD
// under load: one failed restart, then 13 not-accepted cells).
func TestRelayDownNamesTheCause(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	prof := sampleRelayProfile(t, dir, bin, "sample-stays-down",
		`if [ -e broken ]; then echo "start refused: the spool is locked" >&2; exit 4; fi`,
		`touch broken; echo "restart refused by the init system" >&2; exit 3`)
	scs := filepath.Join(dir, "scenarios")
	os.MkdirAll(scs, 0o755)
	os.WriteFile(filepath.Join(scs, "a.yaml"), []byte(`name: restart-fails
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - restart: {}
`), 0o644)
	os.WriteFile(filepath.Join(scs, "b.yaml"), []byte(`name: later
steps:
  - send: {to: [bob@rcpt.greyharness.test]}
  - wait: {for: delivered, timeout: 10s}
  - restart: {}
`), 0o644)
	out, junit := filepath.Join(dir, "sample.json"), filepath.Join(dir, "junit.xml")
	code, log := runBin(t, bin, "run", "--relay", prof, "--scenarios", scs, "--parallel", "1", "--json", out, "--junit", junit)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, log)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("--json: %v\n%s", err, log)
	}
	var outs []struct {
		Scenario, Status, Error string
		RelayDown               string          `json:"relay_down"`
		Result                  json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(b, &outs); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	cause := "relay down since restart-fails step 2 (" + filepath.Join(scs, "a.yaml") + ":4): restart failed: "
	for _, o := range outs {
		switch o.Scenario {
		case "restart-fails":
			if o.Status != "failed" || o.RelayDown != "" || !strings.Contains(o.Error, "restart refused by the init system") {
				t.Errorf("restart-fails: status %q, relay_down %q, error %q: want failed with its own restart failure", o.Status, o.RelayDown, o.Error)
			}
		case "later":
			if o.Status != "error" || !strings.Contains(o.RelayDown, cause) || !strings.Contains(o.RelayDown, "start refused: the spool is locked") ||
				!strings.Contains(o.Error, "not run") {
				t.Errorf("later: status %q, relay_down %q, error %q: want an error naming %q and the failed attempt to start it", o.Status, o.RelayDown, o.Error, cause)
			}
		default:
			t.Errorf("unexpected scenario %q", o.Scenario)
		}
	}
	if len(outs) != 2 {
		t.Fatalf("want 2 outcomes: %s", b)
	}
	if strings.Contains(string(b), "not-accepted") {
		t.Errorf("--json judges a submission to a stopped relay: %s", b)
	}
	if !strings.Contains(log, "0 scenario(s) passed, 2 failed, 0 skipped, 1 of the failed not judged: the relay was down for good") {
		t.Errorf("the summary line does not set the error apart\n%s", log)
	}
	if !strings.Contains(log, "ERROR later: not judged: not run: "+cause) {
		t.Errorf("the terminal output does not name the cause for later\n%s", log)
	}
	if j, err := os.ReadFile(junit); err != nil || !strings.Contains(string(j), `<error message="`) || !strings.Contains(string(j), "relay down since restart-fails step 2") {
		t.Errorf("JUnit: %v\n%s", err, j)
	}
	code, md := runBin(t, bin, "conformance", out)
	if code != 0 || !strings.Contains(md, "| later | **error: relay down** |") || !strings.Contains(md, "- **later** — error, no verdict: "+cause) ||
		!strings.Contains(md, "| restart-fails | **FAIL") {
		t.Errorf("conformance (exit %d):\n%s", code, md)
	}
}
