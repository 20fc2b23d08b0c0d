package report

import (
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/ledger"
)

// JUnit XML as GitHub and GitLab read it: <testsuites> holding one
// <testsuite> with one <testcase> per scenario.
type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Errors   int          `xml:"errors,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Errors     int             `xml:"errors,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr,omitempty"`
	Properties []junitProperty `xml:"properties>property,omitempty"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string    `xml:"name,attr"`
	Classname string    `xml:"classname,attr"`
	Time      string    `xml:"time,attr"`
	Skipped   *junitMsg `xml:"skipped,omitempty"`
	Failure   *junitMsg `xml:"failure,omitempty"`
	Error     *junitMsg `xml:"error,omitempty"`
	SystemOut string    `xml:"system-out,omitempty"`
}

type junitMsg struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// JUnit writes one test case per scenario: its wall time; for a failed
// scenario a <failure> whose message is the summary line and whose text is
// the failing findings' verdicts and timelines (and the step that failed);
// <skipped> with the reason; <error> when the scenario could not begin; and
// each step with its state and time in <system-out>. classname is the relay
// profile's name, so dashboards group the cases by relay.
func JUnit(w io.Writer, suite, classname string, started time.Time, scs []ScenarioReport) error {
	s := junitSuite{Name: suite}
	if !started.IsZero() {
		s.Timestamp = started.UTC().Format("2006-01-02T15:04:05")
	}
	var total time.Duration
	for _, sc := range scs {
		c := junitCase{Name: sc.Name, Classname: classname, Time: seconds(sc.wall())}
		total += sc.wall()
		switch {
		case sc.Status == "skipped":
			c.Skipped = &junitMsg{Message: sc.Skipped}
			s.Skipped++
		case sc.Status == StatusExpectedFailure:
			// JUnit has no expected failure: a skip that says so (as pytest's xfail).
			var b strings.Builder
			Text(&b, *sc.Result, sc.History, false)
			c.Skipped = &junitMsg{Message: "expected failure (" + sc.Expected + ")", Text: b.String()}
			s.Skipped++
		case sc.Status == StatusUnexpectedPass:
			c.Failure = &junitMsg{Message: expectedNote(sc), Type: StatusUnexpectedPass, Text: Summary(*sc.Result, sc.History)}
			s.Failures++
		case sc.Result == nil && sc.Status != "passed":
			c.Error = &junitMsg{Message: sc.Error, Type: "error", Text: sc.Error}
			s.Errors++
		case sc.Status == "error":
			// Judged on what was recorded, but no verdict on the relay (the
			// relay was down by another scenario's doing).
			var b strings.Builder
			Text(&b, *sc.Result, sc.History, false)
			c.Error = &junitMsg{Message: cmp.Or(sc.RelayDown, sc.Error), Type: "error", Text: b.String()}
			s.Errors++
		case sc.Status != "passed":
			var b strings.Builder
			if sc.Expected != "" {
				b.WriteString(expectedNote(sc) + "\n")
			}
			Text(&b, *sc.Result, sc.History, false)
			c.Failure = &junitMsg{Message: Summary(*sc.Result, sc.History), Type: failureType(sc), Text: b.String()}
			s.Failures++
		}
		var out strings.Builder
		if sc.Result != nil {
			fmt.Fprintf(&out, "%s\n", Summary(*sc.Result, sc.History))
		}
		for _, st := range sc.Steps {
			fmt.Fprintf(&out, "%s: %s (%s)\n", st.Name, st.State, seconds(st.Time)+"s")
			if st.Failure != "" {
				fmt.Fprintf(&out, "  %s\n", strings.ReplaceAll(strings.TrimSpace(st.Failure), "\n", "\n  "))
			}
		}
		if sc.Saved != "" {
			fmt.Fprintf(&out, "history saved in %s (re-judge with greyharness judge)\n", sc.Saved)
		}
		c.SystemOut = out.String()
		s.Cases = append(s.Cases, c)
	}
	s.Tests, s.Time = len(s.Cases), seconds(total)
	all := junitSuites{Name: suite, Tests: s.Tests, Failures: s.Failures, Errors: s.Errors, Skipped: s.Skipped, Time: s.Time, Suites: []junitSuite{s}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// failureType is the failing scenario's worst verdict ("held-silently"), or
// "step-failed" when only a step failed.
func failureType(sc ScenarioReport) string {
	if f := sc.Result.Failed(); len(f) > 0 {
		worst := f[0].Primary
		for _, x := range f[1:] {
			if ledger.Severity(x.Primary) < ledger.Severity(worst) {
				worst = x.Primary
			}
		}
		return string(worst)
	}
	return "step-failed"
}
