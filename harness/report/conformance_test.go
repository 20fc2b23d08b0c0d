package report

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/ledger"
)

func TestConformanceMatrix(t *testing.T) {
	var runs []RelayRun
	for _, f := range []string{"beta.json", "alpha.json", "gamma.json"} {
		r, err := LoadRelayRun(filepath.Join("testdata", "conformance", f))
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	if runs[1].Wall != 1164200*time.Millisecond || runs[0].Args == "" {
		t.Fatalf("wall %v, args %q: RELAY.wall and RELAY.args not read", runs[1].Wall, runs[0].Args)
	}
	var b strings.Builder
	if err := Conformance(&b, runs, time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		// relays and scenarios in name order
		"| scenario | alpha | beta | gamma |\n|---|---|---|---|\n| delay-warning |",
		"| greylist-once | pass | pass | — |\n",
		"| delay-warning | pass | skipped | — |\n",
		"| expiry-bounce | expected: bad-dsn | pass | — |\n",
		// a scenario a reduced set left out, and one the pack of that run lacked
		"| drop-after-final-dot | pass (warn: duplicate) | — (reduced set) | — |\n",
		"| load-500 | **FAIL: lost** | — (reduced set) | — |\n",
		"| greylisted-dsn | pass | **FAIL: lost** | — |\n",
		"| plain-delivery | — | **UNEXPECTED PASS** | — |\n",
		"| **run** | 4 pass · 1 expected · 1 FAIL · 19m24s | 2 pass · 1 skipped · 1 FAIL · 1 UNEXPECTED PASS · reduced set | **no scenario ran** (the relay did not start: see its run's JUnit report) |\n",
		"| gamma | — | — | — | — | — | — |\n",
		// behaviour: first retry range, longest gap and where, DSNs, duplicates
		"| alpha | 2.5s–3.4s (2 messages) | 19.9s (delay-warning) | Action: delayed, Status 4.4.7, 15.2s after submission | **none**: last DSN Action: delayed, Status 4.4.7, 1m00s after submission (expected: bad-dsn) | retried: deferred 2× (first 200ms after submission), then Action: failed, Status 5.1.1, accepted 2.7s after submission | yes: 1 of 1 delivered twice (RFC 1047) |\n",
		"| beta | 5.4s | 5.4s (greylist-once) | none (needs delay-warning, which the beta profile does not provide) | Action: failed, Status 4.3.0, 45.7s after submission | **none reached the sender**: deferred 1×, the last 300ms after submission, not retried after (**FAIL: lost**) | — (reduced set) |\n",
		// a relay whose run wrote no outcome does not read as all passed
		"## gamma\n\nNo scenario ran: the relay did not start (see its run's JUnit report).\n",
		// every cell that is not a pass, explained
		"- **expiry-bounce** — expected failure (bad-dsn): at queue ttl it sends Action: delayed, Status 4.4.7 (\"Envelope expired\"). Seen: the relay gave up",
		"- **load-500** — failed (lost): undelivered \\| gone",
		"- **plain-delivery** — UNEXPECTED PASS (the profile expects a failure; the relay's behaviour changed) (stale): slow",
		"- **delay-warning** — skipped: needs delay-warning",
		"Reduced set, labelled: run with `--focus ^(greylist-once|delay-warning|expiry-bounce|plain-delivery|greylisted-dsn)$`.",
		"on 2026-12-02 09:00 UTC",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("matrix lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("matrix:\n%s", md)
	}
}

func TestLoadRelayRunErrors(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{"notjson.json": "{", "noname.json": `[{"status": "passed"}]`} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadRelayRun(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error %v, want one naming the file", name, err)
		}
	}
	p := filepath.Join(dir, "x.json")
	os.WriteFile(p, []byte(`[]`), 0o644)
	os.WriteFile(filepath.Join(dir, "x.wall"), []byte("soon"), 0o644)
	if _, err := LoadRelayRun(p); err == nil || !strings.Contains(err.Error(), "x.wall") {
		t.Errorf("bad .wall: error %v", err)
	}
}

// A profile's why is the evidence for an expected failure: the matrix shows
// it whole (a finding's generated why is cut at 400 characters).
func TestConformanceNoteKeepsTheWholeWhy(t *testing.T) {
	why := strings.Repeat("its log: \"Moving message into failed\" ", 15) + "never Action: failed"
	s := RunScenario{Scenario: "expiry-bounce", Status: StatusExpectedFailure}
	s.Expected = &struct {
		Verdict []ledger.Verdict `json:"verdict"`
		Why     string           `json:"why"`
	}{Verdict: []ledger.Verdict{ledger.BadDSN}, Why: why}
	if n := note(s); !strings.Contains(n, "never Action: failed") {
		t.Errorf("note cuts the profile's why (%d characters): %s", len(why), n)
	}
}
