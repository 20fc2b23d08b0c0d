package report

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/ledger"
)

// parsed JUnit, read back with a reader of its own (not the writer's types).
type jSuites struct {
	XMLName  xml.Name `xml:"testsuites"`
	Tests    int      `xml:"tests,attr"`
	Failures int      `xml:"failures,attr"`
	Errors   int      `xml:"errors,attr"`
	Skipped  int      `xml:"skipped,attr"`
	Suites   []struct {
		Name  string `xml:"name,attr"`
		Tests int    `xml:"tests,attr"`
		Cases []struct {
			Name      string `xml:"name,attr"`
			Classname string `xml:"classname,attr"`
			Time      string `xml:"time,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Type    string `xml:"type,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
			Skipped *struct {
				Message string `xml:"message,attr"`
			} `xml:"skipped"`
			Error *struct {
				Message string `xml:"message,attr"`
			} `xml:"error"`
			SystemOut string `xml:"system-out"`
		} `xml:"testcase"`
	} `xml:"testsuite"`
}

func TestJUnitOneCasePerScenario(t *testing.T) {
	h := seed()
	r := ledger.Judge(h)
	pass := seed()
	pass.Scenario, pass.Submissions = "plain-delivery", pass.Submissions[:1]
	pr := ledger.Judge(pass)
	scs := []ScenarioReport{
		{Name: h.Scenario, Status: "failed", Result: &r, History: h, Wall: 81500 * time.Millisecond, Saved: "results/greylist-restart",
			Steps: []Step{{Name: "step 1: send 2 message(s)", State: "passed", Time: 1200 * time.Millisecond},
				{Name: "step 2: restart relay", State: "failed", Time: 3 * time.Second, Failure: "restart: exit 1\nrelay log"},
				{Name: "judges every message (ledger)", State: "failed", Time: 77 * time.Second}}},
		{Name: pass.Scenario, Status: "passed", Result: &pr, History: pass},
		{Name: "needs-restart", Status: "skipped", Skipped: "needs relay-restart, which the profile does not provide"},
		{Name: "bad-begin", Status: "error", Error: "scenarios/x.yaml: the scenario could not begin: fake MTA: address in use"},
	}
	var buf bytes.Buffer
	if err := JUnit(&buf, "greyharness: relay postfix", "postfix", t0, scs); err != nil {
		t.Fatal(err)
	}
	var got jSuites
	if err := xml.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if got.Tests != 4 || got.Failures != 1 || got.Errors != 1 || got.Skipped != 1 || len(got.Suites) != 1 || got.Suites[0].Tests != 4 {
		t.Fatalf("counts %+v", got)
	}
	cs := got.Suites[0].Cases
	if len(cs) != 4 {
		t.Fatalf("%d test cases, want one per scenario", len(cs))
	}
	for i, c := range cs {
		if c.Name != scs[i].Name || c.Classname != "postfix" {
			t.Errorf("case %d: %s/%s", i, c.Classname, c.Name)
		}
	}
	f := cs[0]
	if f.Time != "81.500" || f.Failure == nil || f.Skipped != nil || f.Error != nil {
		t.Fatalf("failing case %+v", f)
	}
	if f.Failure.Message != Summary(r, h) || f.Failure.Type != string(ledger.HeldSilently) {
		t.Errorf("failure %q type %q", f.Failure.Message, f.Failure.Type)
	}
	for _, want := range []string{"FAIL held-silently message held <held@h.test> rcpt bob@r.test [delivered, held-silently]",
		"+1.000s  attempt       conn 1: RCPT TO:<bob@r.test> got 451 4.7.1 greylisted", "+32.000s  deadline"} {
		if !strings.Contains(f.Failure.Text, want) {
			t.Errorf("failure text lacks %q:\n%s", want, f.Failure.Text)
		}
	}
	for _, want := range []string{"step 1: send 2 message(s): passed (1.200s)", "step 2: restart relay: failed (3.000s)\n  restart: exit 1\n  relay log\n",
		"history saved in results/greylist-restart"} {
		if !strings.Contains(f.SystemOut, want) {
			t.Errorf("system-out lacks %q:\n%s", want, f.SystemOut)
		}
	}
	if p := cs[1]; p.Failure != nil || p.Skipped != nil || p.Time != "80.000" || !strings.HasPrefix(p.SystemOut, "PASS plain-delivery") {
		t.Errorf("passing case %+v", p)
	}
	if s := cs[2]; s.Skipped == nil || s.Skipped.Message != scs[2].Skipped || s.Failure != nil {
		t.Errorf("skipped case %+v", s)
	}
	if e := cs[3]; e.Error == nil || e.Error.Message != scs[3].Error {
		t.Errorf("error case %+v", e)
	}
}
