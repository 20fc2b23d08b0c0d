package report

import (
	"embed"
	"fmt"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// Scenario statuses beside passed, failed, skipped and error: a documented
// expected failure of the relay (its profile's scenarios.NAME.expect), which
// does not fail the run, and a scenario that passed although its profile
// expects it to fail, which does.
const (
	StatusExpectedFailure = "expected-failure"
	StatusUnexpectedPass  = "unexpected-pass"
)

// ScenarioReport is one scenario as the HTML and JUnit reports show it.
type ScenarioReport struct {
	Name    string
	Status  string // passed, failed, skipped, error, expected-failure, unexpected-pass
	Skipped string // reason, when skipped
	// Expected is the profile's expected failure, "verdict(s): why", when it
	// has one for this scenario.
	Expected string
	Error    string // a step the harness could not run
	// RelayDown: the relay was down for good by another scenario's doing
	// (status error, no verdict on the relay).
	RelayDown string
	Saved     string // results folder with the history, on failure
	Result    *ledger.Result
	History   *history.History
	// Wall is the scenario's wall time (0: unknown, History.Ended-Started is used).
	Wall time.Duration
	// Steps are the scenario's steps as the test runner saw them, for JUnit's system-out.
	Steps []Step
}

// Step is one step of a scenario as the test runner ran it.
type Step struct {
	Name    string
	State   string // passed, failed, skipped, ...
	Time    time.Duration
	Failure string
}

// wall returns the scenario's wall time.
func (s ScenarioReport) wall() time.Duration {
	if s.Wall > 0 || s.History == nil || s.History.Ended.IsZero() {
		return s.Wall
	}
	return s.History.Ended.Sub(s.History.Started)
}

// How much of a failing scenario the page draws: lanes with their whole
// timeline for the first MaxDrawn failing or warning findings, one line
// each for the next MaxListed; --json has them all.
const (
	MaxDrawn  = 12
	MaxListed = 40
)

//go:embed html.tmpl
var htmlFiles embed.FS

var htmlTemplate = template.Must(template.New("html.tmpl").Funcs(template.FuncMap{
	"verdicts": joinVerdicts,
	"tag":      findingTag,
	"subject":  subject,
	"expected": expectedNote,
}).ParseFS(htmlFiles, "html.tmpl"))

type pageView struct {
	Title, Generated, Relay, Timing, RunTime string
	Counts                                   map[string]int
	Rows                                     []rowView
	Scenarios                                []scenarioView
}

type rowView struct {
	ID, Name, Status, Note, Verdicts, Wall string
	Pass, Fail, Warn                       int
	Link                                   bool
}

type scenarioView struct {
	ID      string
	R       ScenarioReport
	Summary string
	Stats   *statsView
	Drawn   []findingView
	Listed  []findingView
	More    int
}

type statsView struct {
	Passing, Delivered              int
	P50, P90, Max                   string
	Hist                            template.HTML
	Attempts                        string
	Gaps                            int
	GapMax, GapP90, RetryMax, Bound string
	GapPct                          int
	Gauge                           template.HTML
}

type findingView struct {
	ID   string
	F    ledger.Finding
	Lane template.HTML
	Rows []timelineRow
}

type timelineRow struct{ Rel, Abs, What, Detail string }

// HTML writes a self-contained page (inline SVG and CSS, no scripts, no
// external files) to keep as a CI artifact: a header with the relay, its
// timing and the run time; a table of scenarios by verdict counts; then per
// scenario its passes summed up (latency, attempts, retry gaps against
// retry_max) and, for each failing or warning finding, a drawn lane on the
// scenario's time axis beside its text timeline. Passing findings are
// counted, not listed: --json has every finding.
func HTML(w io.Writer, title string, scs []ScenarioReport) error {
	p := pageView{Title: title, Generated: time.Now().UTC().Format(time.RFC3339), Counts: map[string]int{}}
	var runTime time.Duration
	for i, s := range scs {
		p.Counts[s.Status]++
		runTime += s.wall()
		if s.History != nil && p.Relay == "" {
			p.Relay, p.Timing = s.History.Relay, timingLine(s.History.Timing)
		}
		id := fmt.Sprintf("s%d", i+1)
		row := rowView{ID: id, Name: s.Name, Status: s.Status, Note: s.Skipped, Link: s.Status != "passed" && s.Status != "skipped"}
		if s.Error != "" {
			row.Note = s.Error
		}
		if s.Expected != "" {
			row.Note = expectedNote(s)
		}
		if s.RelayDown != "" {
			row.Note = "not judged, no verdict on the relay: " + s.RelayDown
		}
		if d := s.wall(); d > 0 {
			row.Wall = short(d)
		}
		sv := scenarioView{ID: id, R: s}
		if s.Result != nil {
			st := statsOf(s.Result, s.History)
			row.Pass, row.Fail, row.Warn = st.Passing, st.Failing, st.Warning
			row.Verdicts = Counts(*s.Result)
			sv.Summary = Summary(*s.Result, s.History)
			sv.Stats = newStatsView(st)
			a := scenarioAxis(s.History, s.Result)
			for j, f := range s.Result.Findings {
				if !f.Failed && !f.Warn {
					continue
				}
				fv := findingView{ID: fmt.Sprintf("%s-f%d", id, j+1), F: f}
				switch {
				case len(sv.Drawn) < MaxDrawn:
					fv.Lane = laneSVG(f, s.History, a)
					for _, e := range f.Timeline {
						fv.Rows = append(fv.Rows, timelineRow{ledger.Rel(started(s.History), e.At), e.At.UTC().Format(time.RFC3339Nano), e.What, e.Detail})
					}
					sv.Drawn = append(sv.Drawn, fv)
				case len(sv.Listed) < MaxListed:
					sv.Listed = append(sv.Listed, fv)
				default:
					sv.More++
				}
			}
		}
		p.Rows = append(p.Rows, row)
		p.Scenarios = append(p.Scenarios, sv)
	}
	if runTime > 0 {
		p.RunTime = short(runTime)
	}
	return htmlTemplate.Execute(w, p)
}

func newStatsView(st passStats) *statsView {
	v := &statsView{Passing: st.Passing, Delivered: st.Delivered, Attempts: st.attemptsLine(), Gaps: len(st.Gaps)}
	if n := len(st.Latency); n > 0 {
		v.P50, v.P90, v.Max = short(quantile(st.Latency, .5)), short(quantile(st.Latency, .9)), short(st.Latency[n-1])
		v.Hist = histogramSVG(st.Latency, "delivery latency of the passing messages")
	}
	if n := len(st.Gaps); n > 0 {
		longest, p90 := st.Gaps[n-1], quantile(st.Gaps, .9)
		v.GapMax, v.GapP90 = short(longest), short(p90)
		if st.RetryMax > 0 {
			v.RetryMax, v.Bound = short(st.RetryMax), short(ledger.RetryBound(st.RetryMax))
			v.GapPct = int(100 * float64(longest) / float64(st.RetryMax))
			v.Gauge = gaugeSVG(longest, p90, st.RetryMax)
		}
	}
	return v
}

// expectedNote says what the profile expects of the scenario, and how it
// turned out.
func expectedNote(s ScenarioReport) string {
	switch s.Status {
	case StatusExpectedFailure:
		return "expected failure (" + s.Expected + ")"
	case StatusUnexpectedPass:
		return "UNEXPECTED PASS: the profile expects a failure (" + s.Expected + "); the relay's behaviour changed: update the profile"
	}
	return "the profile expects a failure (" + s.Expected + "), and it failed otherwise"
}

func timingLine(t history.Timing) string {
	parts := []string{"retry_max " + t.RetryMax.D().String(), "queue_lifetime " + t.QueueLifetime.D().String()}
	if t.DelayWarning > 0 {
		parts = append(parts, "delay_warning "+t.DelayWarning.D().String())
	}
	parts = append(parts, "restart_grace "+t.RestartGrace.D().String())
	return strings.Join(parts, " · ")
}

func started(h *history.History) time.Time {
	if h == nil {
		return time.Time{}
	}
	return h.Started
}

func joinVerdicts(vs []ledger.Verdict) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// findingTag is the CSS class and label of a finding: FAIL, WARN or ok.
func findingTag(f ledger.Finding) string {
	switch {
	case f.Failed:
		return "FAIL"
	case f.Warn:
		return "WARN"
	}
	return "ok"
}
