package harness

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/harness/report"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/scenarios"
)

// Exit codes of `greyharness run` and `greyharness judge`.
const (
	ExitPassed   = 0
	ExitFailed   = 1
	ExitBadInput = 2
)

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// RunOptions are `greyharness run`'s flags.
type RunOptions struct {
	Relay       string
	Scenarios   []string
	LabelFilter string
	Focus       string
	Skip        string
	JUnit       string
	JSON        string
	HTML        string
	Results     string
	Verbose     bool
	// Parallel caps the scenarios running at the same time (0: as many as
	// isolation allows; 1: one after another).
	Parallel int
	// Bin is the greyharness binary the sample relay runs as (default: this executable).
	Bin string
	Env map[string]string
}

// ParseRunFlags parses `greyharness run` flags.
func ParseRunFlags(args []string, stderr io.Writer) (*RunOptions, error) {
	o := &RunOptions{}
	fs := flag.NewFlagSet("greyharness run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.Relay, "relay", "sample", "relay profile: a YAML file, or sample[:BUG[,BUG]] for the built-in sample relay")
	var sc stringList
	fs.Var(&sc, "scenarios", "scenario file or folder (repeatable; default: the embedded default pack)")
	fs.StringVar(&o.LabelFilter, "label-filter", "", "run only scenarios whose labels match this Ginkgo label expression")
	fs.StringVar(&o.Focus, "focus", "", "run only scenarios whose name matches this regular expression (e.g. '^greylist-once$')")
	fs.StringVar(&o.Skip, "skip", "", "leave out scenarios whose name matches this regular expression")
	fs.StringVar(&o.JUnit, "junit", "", "write a JUnit XML report here (one test case per scenario)")
	fs.StringVar(&o.JSON, "json", "", "write the verdicts as JSON here")
	fs.StringVar(&o.HTML, "html", "", "write a self-contained HTML report here (failing messages drawn with their timelines, passes summed up)")
	fs.StringVar(&o.Results, "results", "results", "folder for the history of failed scenarios (re-judge with greyharness judge)")
	fs.BoolVar(&o.Verbose, "v", false, "print every message's timeline, not only failing ones")
	fs.IntVar(&o.Parallel, "parallel", 0, "most scenarios running at the same time (0: as many as isolation allows; 1: one after another)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.Parallel < 0 {
		return nil, fmt.Errorf("--parallel %d: want 0 (as many as isolation allows) or more", o.Parallel)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.Scenarios = sc
	return o, nil
}

// cliT is the GinkgoTestingT of a run outside `go test`.
type cliT struct{ failed bool }

func (t *cliT) Fail() { t.failed = true }

// Run is `greyharness run`: load, run the specs, report. It returns the exit code.
func Run(o *RunOptions, stdout, stderr io.Writer) int {
	scs, err := LoadScenarios(o.Scenarios)
	if err != nil {
		printErrors(stderr, err)
		return ExitBadInput
	}
	if scs, err = Select(scs, o.Focus, o.Skip, o.LabelFilter); err != nil {
		fmt.Fprintf(stderr, "greyharness run: %v\n", err)
		return ExitBadInput
	}
	prof, cleanup, err := LoadRelay(o.Relay, o.Bin, o.Env)
	if err != nil {
		printErrors(stderr, err)
		return ExitBadInput
	}
	defer cleanup()
	logDir, err := os.MkdirTemp("", "greyharness-relay-log-")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return ExitBadInput
	}
	defer os.RemoveAll(logDir)
	results := o.Results
	if results != "" {
		results, _ = filepath.Abs(results)
	}
	s := &Suite{Profile: prof, Relay: relay.New(prof, logDir), Scenarios: scs, ResultsDir: results, Progress: stderr, Verbose: o.Verbose, Parallel: o.Parallel}
	DefineSpecs(s)
	// Select chose the scenarios: Ginkgo runs every spec defined.
	suiteCfg, repCfg := s.ginkgoConfig()
	repCfg.NoColor = os.Getenv("NO_COLOR") != "" || os.Getenv("CI") != "" || !isTerminal(stdout)
	repCfg.Succinct = true
	// The reports take each scenario's wall time and steps from Ginkgo's
	// report; JUnit gets one test case per scenario, not one per step.
	var specs Report
	ReportAfterSuite("greyharness reports", func(r Report) { specs = r })
	t := &cliT{}
	passed := RunSpecs(t, "greyharness: "+prof.Name, suiteCfg, repCfg)
	reps := scenarioReports(s.Outcomes, specs)
	if o.JSON != "" {
		if err := writeOutcomes(o.JSON, s.Outcomes); err != nil {
			fmt.Fprintln(stderr, err)
		}
	}
	if o.HTML != "" {
		if err := writeFile(o.HTML, func(w io.Writer) error { return report.HTML(w, "greyharness: relay "+prof.Name, reps) }); err != nil {
			fmt.Fprintln(stderr, err)
		}
	}
	if o.JUnit != "" {
		err := writeFile(o.JUnit, func(w io.Writer) error {
			return report.JUnit(w, "greyharness: relay "+prof.Name, prof.Name, specs.StartTime, append(reps, suiteFailures(specs)...))
		})
		if err != nil {
			fmt.Fprintln(stderr, err)
		}
	}
	summary(stdout, prof.Name, s.Outcomes)
	if !passed || t.failed {
		return ExitFailed
	}
	return ExitPassed
}

// Select returns the scenarios a run selects, in order: those whose name
// matches focus (a regular expression; "" = all) and not skip, and whose
// labels match labelFilter (a Ginkgo label expression). It works on
// scenario names, before the specs are defined: Ginkgo's own focus matches
// the whole spec text (container and step names), where '^name$' never
// matches. Selecting nothing is an error that lists the names loaded.
func Select(scs []scenarios.Scenario, focus, skip, labelFilter string) ([]scenarios.Scenario, error) {
	var focusRE, skipRE *regexp.Regexp
	var err error
	if focus != "" {
		if focusRE, err = regexp.Compile(focus); err != nil {
			return nil, fmt.Errorf("--focus %q: %v", focus, err)
		}
	}
	if skip != "" {
		if skipRE, err = regexp.Compile(skip); err != nil {
			return nil, fmt.Errorf("--skip %q: %v", skip, err)
		}
	}
	var labels types.LabelFilter
	if labelFilter != "" {
		if labels, err = types.ParseLabelFilter(labelFilter); err != nil {
			return nil, fmt.Errorf("--label-filter %q: %v", labelFilter, err)
		}
	}
	var out []scenarios.Scenario
	for _, sc := range scs {
		if (focusRE == nil || focusRE.MatchString(sc.Name)) && (skipRE == nil || !skipRE.MatchString(sc.Name)) &&
			(labels == nil || labels(sc.Labels)) {
			out = append(out, sc)
		}
	}
	if len(out) == 0 {
		var by, names []string
		for _, f := range [][2]string{{"--focus", focus}, {"--skip", skip}, {"--label-filter", labelFilter}} {
			if f[1] != "" {
				by = append(by, fmt.Sprintf("%s %q", f[0], f[1]))
			}
		}
		for _, sc := range scs {
			names = append(names, sc.Name)
		}
		if len(by) == 0 {
			return nil, errors.New("no scenario loaded")
		}
		return nil, fmt.Errorf("%s selects no scenario of the %d loaded: %s", strings.Join(by, " "), len(scs), strings.Join(names, ", "))
	}
	return out, nil
}

// isTerminal reports whether w is a character device (colour codes would
// only clutter a log file or a pipe).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func printErrors(w io.Writer, err error) {
	var j interface{ Unwrap() []error }
	if errors.As(err, &j) {
		for _, e := range j.Unwrap() {
			printErrors(w, e)
		}
		return
	}
	fmt.Fprintln(w, err)
}

// LoadScenarios loads scenario files or folders; none means the embedded default pack.
func LoadScenarios(paths []string) ([]scenarios.Scenario, error) {
	if len(paths) == 0 {
		return scenarios.Default()
	}
	return scenarios.LoadPaths(paths)
}

// LoadRelay resolves --relay: a profile file, or sample[:BUGS]. The cleanup
// removes the sample relay's work folder.
func LoadRelay(spec, bin string, env map[string]string) (*profile.Profile, func(), error) {
	if spec == "sample" || strings.HasPrefix(spec, "sample:") {
		if bin == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, func() {}, err
			}
			bin = exe
		}
		dir, err := os.MkdirTemp("", "greyharness-sample-relay-")
		if err != nil {
			return nil, func() {}, err
		}
		p, err := SampleProfile(bin, strings.TrimPrefix(strings.TrimPrefix(spec, "sample"), ":"), dir, env)
		if err != nil {
			os.RemoveAll(dir)
			return nil, func() {}, err
		}
		return p, func() { os.RemoveAll(dir) }, nil
	}
	p, err := profile.Load(spec)
	return p, func() {}, err
}

type outcomeJSON struct {
	Scenario string `json:"scenario"`
	// Status is passed, failed, skipped, error, expected-failure (the
	// failure the profile expects: the run passes) or unexpected-pass (it
	// passed although the profile expects a failure: the run fails).
	Status   string        `json:"status"`
	Skipped  string        `json:"skipped,omitempty"`
	Expected *expectedJSON `json:"expected,omitempty"`
	Error    string        `json:"error,omitempty"`
	// RelayDown, with status error, says that the relay under test was
	// down for good by another scenario's doing (its restart failed, and so
	// did the harness's attempt to bring it back): the scenario did not
	// run, or not to its end, and is no verdict on the relay.
	RelayDown string `json:"relay_down,omitempty"`
	Saved     string `json:"saved,omitempty"`
	// Span is the scenario's own time: from its first submission to the
	// last delivery or DSN the fake MTA accepted for it.
	Span   float64         `json:"span_seconds,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// expectedJSON is the profile's expected failure of a scenario.
type expectedJSON struct {
	Verdict []ledger.Verdict `json:"verdict"`
	Why     string           `json:"why"`
}

// span is a history's first submission to its last accepted delivery or DSN.
func span(h *history.History) time.Duration {
	if h == nil {
		return 0
	}
	var first, last time.Time
	for _, s := range h.Submissions {
		if first.IsZero() || s.SubmittedAt.Before(first) {
			first = s.SubmittedAt
		}
	}
	for _, ev := range h.Journal {
		if t := ev.Transaction; t != nil && t.Message != nil && t.Message.Accepted && ev.Time.After(last) {
			last = ev.Time
		}
	}
	if first.IsZero() || last.Before(first) {
		return 0
	}
	return last.Sub(first)
}

func status(o Outcome) string {
	switch {
	case o.Skipped != "":
		return "skipped"
	case o.RelayDown != "":
		// Another scenario's failed restart left the relay down: no
		// verdict on the relay here, whatever was recorded before.
		return "error"
	case o.Result == nil:
		return "error"
	case o.Result.Passed && o.Err == "" && o.Expect != nil:
		return report.StatusUnexpectedPass
	case o.Result.Passed && o.Err == "":
		return "passed"
	case o.Expect != nil && o.Expect.Explains(*o.Result, o.Err):
		return report.StatusExpectedFailure
	}
	return "failed"
}

// expectedText is the profile's expectation as the reports show it,
// "bad-dsn: why" ("" without one).
func expectedText(o Outcome) string {
	if o.Expect == nil {
		return ""
	}
	return expectedVerdicts(o.Expect) + ": " + o.Expect.Why
}

func writeOutcomes(path string, outs []Outcome) error {
	var arr []outcomeJSON
	for _, o := range outs {
		j := outcomeJSON{Scenario: o.Scenario, Status: status(o), Skipped: o.Skipped, Error: o.Err, RelayDown: o.RelayDown, Saved: o.Saved, Span: span(o.History).Seconds()}
		if o.Expect != nil {
			j.Expected = &expectedJSON{Verdict: o.Expect.Expect.Verdict, Why: o.Expect.Why}
		}
		if o.Result != nil {
			var b strings.Builder
			if err := report.JSON(&b, *o.Result); err == nil {
				j.Result = json.RawMessage(b.String())
			}
		}
		arr = append(arr, j)
	}
	b, err := json.MarshalIndent(arr, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// scenarioReports joins each scenario's outcome with what Ginkgo saw of its
// specs: the scenario's wall time and its steps.
func scenarioReports(outs []Outcome, specs Report) []report.ScenarioReport {
	type seen struct {
		start, end time.Time
		steps      []report.Step
	}
	by := map[string]*seen{}
	for _, sr := range specs.SpecReports {
		if sr.LeafNodeType != types.NodeTypeIt || len(sr.ContainerHierarchyTexts) == 0 || sr.StartTime.IsZero() {
			continue // suite nodes, and specs that never ran (filtered out)
		}
		name := sr.ContainerHierarchyTexts[0]
		sc := by[name]
		if sc == nil {
			sc = &seen{start: sr.StartTime}
			by[name] = sc
		}
		if sr.StartTime.Before(sc.start) {
			sc.start = sr.StartTime
		}
		if sr.EndTime.After(sc.end) {
			sc.end = sr.EndTime
		}
		st := report.Step{Name: sr.LeafNodeText, State: sr.State.String(), Time: sr.RunTime}
		if sr.State.Is(types.SpecStateFailureStates) || sr.State == types.SpecStateSkipped {
			st.Failure = sr.Failure.Message
		}
		sc.steps = append(sc.steps, st)
	}
	reps := make([]report.ScenarioReport, len(outs))
	for i, o := range outs {
		reps[i] = report.ScenarioReport{Name: o.Scenario, Status: status(o), Skipped: o.Skipped, Expected: expectedText(o),
			Error: o.Err, RelayDown: o.RelayDown, Saved: o.Saved, Result: o.Result, History: o.History}
		if sc := by[o.Scenario]; sc != nil {
			reps[i].Steps = sc.steps
			if sc.end.After(sc.start) {
				reps[i].Wall = sc.end.Sub(sc.start)
			}
		}
		// Scenarios run at the same time and their specs only report:
		// the scenario's own wall time is its history's.
		if h := o.History; h != nil && h.Ended.After(h.Started) {
			reps[i].Wall = h.Ended.Sub(h.Started)
		}
	}
	return reps
}

// suiteFailures are the suite's own nodes that failed (the relay's setup or
// teardown) as test cases of their own: without them a relay that never
// started would leave a JUnit report with no failure in it.
func suiteFailures(specs Report) []report.ScenarioReport {
	var out []report.ScenarioReport
	for _, sr := range specs.SpecReports {
		if len(sr.ContainerHierarchyTexts) > 0 || !sr.State.Is(types.SpecStateFailureStates) {
			continue
		}
		name := "relay " + strings.ToLower(sr.LeafNodeType.String())
		out = append(out, report.ScenarioReport{Name: name, Status: "error", Error: sr.Failure.Message, Wall: sr.RunTime})
	}
	return out
}

func writeHTML(path, title string, outs []Outcome) error {
	reps := make([]report.ScenarioReport, len(outs))
	for i, o := range outs {
		reps[i] = report.ScenarioReport{Name: o.Scenario, Status: status(o), Skipped: o.Skipped,
			Error: o.Err, RelayDown: o.RelayDown, Saved: o.Saved, Result: o.Result, History: o.History}
	}
	return writeFile(path, func(w io.Writer) error { return report.HTML(w, title, reps) })
}

// writeFile writes path through fn, reporting the first error of either.
func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}

func summary(w io.Writer, relay string, outs []Outcome) {
	counts := map[string]int{}
	for _, o := range outs {
		counts[status(o)]++
	}
	verdicts := map[ledger.Verdict]int{}
	for _, o := range outs {
		if o.Result != nil {
			for v, n := range o.Result.Counts {
				verdicts[v] += n
			}
		}
	}
	var vs []string
	for v, n := range verdicts {
		vs = append(vs, fmt.Sprintf("%s %d", v, n))
	}
	sort.Strings(vs)
	fmt.Fprintf(w, "greyharness: relay %s: %d scenario(s) passed, %d failed, %d skipped", relay, counts["passed"], counts["failed"]+counts["error"], counts["skipped"])
	if n := counts[report.StatusExpectedFailure]; n > 0 {
		fmt.Fprintf(w, ", %d expected failure(s) (the relay's documented behaviour)", n)
	}
	if n := counts[report.StatusUnexpectedPass]; n > 0 {
		fmt.Fprintf(w, ", %d UNEXPECTED PASS(ES) (the profile expects a failure: update it)", n)
	}
	down := 0
	for _, o := range outs {
		if o.RelayDown != "" {
			down++
		}
	}
	if down > 0 {
		fmt.Fprintf(w, ", %d of the failed not judged: the relay was down for good by another scenario's failed restart (an error, no verdict on the relay)", down)
	}
	if len(vs) > 0 {
		fmt.Fprintf(w, " — verdicts: %s", strings.Join(vs, ", "))
	}
	fmt.Fprintln(w)
}

// Judge is `greyharness judge DIR`: re-judge saved histories offline.
// With htmlPath, it also writes the HTML report of every history judged.
func Judge(paths []string, stdout, stderr io.Writer, verbose bool, htmlPath string) int {
	if len(paths) == 0 {
		fmt.Fprintln(stderr, "greyharness judge: give a results folder or history.json")
		return ExitBadInput
	}
	code := ExitPassed
	var outs []Outcome
	for _, p := range paths {
		files := []string{p}
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			files, _ = filepath.Glob(filepath.Join(p, "history.json"))
			more, _ := filepath.Glob(filepath.Join(p, "*", "history.json"))
			files = append(files, more...)
		}
		if len(files) == 0 {
			fmt.Fprintf(stderr, "greyharness judge: no history.json in %s\n", p)
			return ExitBadInput
		}
		for _, f := range files {
			h, err := runner.LoadHistory(f)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return ExitBadInput
			}
			res := ledger.Judge(h)
			report.Text(stdout, res, h, verbose)
			if !res.Passed || h.StepError != "" { // a step that failed fails the scenario
				code = ExitFailed
			}
			outs = append(outs, Outcome{Scenario: h.Scenario, History: h, Result: &res, Err: h.StepError, RelayDown: h.RelayDown, Saved: filepath.Dir(f)})
		}
	}
	if htmlPath != "" {
		if err := writeHTML(htmlPath, "greyharness judge", outs); err != nil {
			fmt.Fprintln(stderr, err)
			return ExitBadInput
		}
	}
	return code
}

var _ = context.Background
