package report

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// A scenario the relay went down under by another scenario's doing
// (relay_down) is an error in every report, named by its cause, never a
// relay verdict: the summary line, JUnit (an <error>, not a <failure>,
// though the scenario was judged on what was recorded), the conformance
// matrix's cell and note.
func TestRelayDownIsAnErrorNamingTheCause(t *testing.T) {
	cause := "relay down since restarts step 3 (x.yaml:5): restart failed: did not come back; the harness's one attempt to bring it back failed: did not come back"
	t0 := time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)
	h := &history.History{Scenario: "neighbour", Relay: "opensmtpd", Started: t0, Ended: t0.Add(time.Minute), RelayDown: cause,
		StepError: "step 3 (n.yaml:7): not run: " + cause}
	res := ledger.Result{Passed: true, Counts: map[ledger.Verdict]int{ledger.Pending: 1},
		Findings: []ledger.Finding{{HarnessID: "gh-1", Primary: ledger.Pending, Verdicts: []ledger.Verdict{ledger.Pending}, Why: "pending: not judged: " + cause}}}

	if s := Summary(res, h); !strings.HasPrefix(s, "ERROR neighbour") {
		t.Errorf("summary %q, want ERROR", s)
	}
	var txt strings.Builder
	Text(&txt, res, h, false)
	if !strings.Contains(txt.String(), "NOT JUDGED") || !strings.Contains(txt.String(), cause) {
		t.Errorf("text does not name the cause:\n%s", txt.String())
	}

	var b bytes.Buffer
	sc := ScenarioReport{Name: "neighbour", Status: "error", Error: h.StepError, RelayDown: cause, Result: &res, History: h}
	if err := JUnit(&b, "greyharness", "opensmtpd", t0, []ScenarioReport{sc}); err != nil {
		t.Fatal(err)
	}
	var j jSuites
	if err := xml.Unmarshal(b.Bytes(), &j); err != nil {
		t.Fatal(err)
	}
	c := j.Suites[0].Cases[0]
	if j.Errors != 1 || j.Failures != 0 || c.Error == nil || c.Error.Message != cause || c.Failure != nil {
		t.Errorf("JUnit: %d error(s), %d failure(s), want one <error> with the cause:\n%s", j.Errors, j.Failures, b.String())
	}

	rs := RunScenario{Scenario: "neighbour", Status: "error", Error: h.StepError, RelayDown: cause, Result: &res}
	if got := cell(rs); got != "**error: relay down**" {
		t.Errorf("matrix cell %q", got)
	}
	if got := note(rs); got != "error, no verdict: "+cause+"; not run" {
		t.Errorf("matrix note %q", got)
	}
}
