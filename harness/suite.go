// Package harness drives a relay under test through the scenarios with
// Ginkgo: one Ordered container per scenario, one spec per step, and a
// last spec that judges every message with the ledger. The same specs run
// under `go test`/`ginkgo run ./harness` and inside `greyharness run`.
//
// Ginkgo runs specs one after another in one process, so the scenarios do
// not run inside their specs: BeforeSuite starts every selected scenario on
// one shared fake MTA (runner.Schedule: at the same time as far as
// --parallel and isolation allow), and each step spec waits for its own
// step's result and reports it; the judging spec reports the verdicts.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/report"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/scenarios"
)

// RelayController is a relay under test with its whole lifecycle.
type RelayController interface {
	runner.Relay
	Setup(ctx context.Context) error
	Teardown(ctx context.Context) error
}

// Outcome is one scenario's result.
type Outcome struct {
	Scenario string
	Skipped  string // reason, when skipped
	Err      string // the harness could not run a step
	// RelayDown says the relay was down for good by another scenario's
	// doing (runner.RelayDownError): the scenario did not run, or not to its
	// end; its status is error, no verdict on the relay.
	RelayDown string
	History   *history.History
	Result    *ledger.Result
	Saved     string // results folder, on failure
	// Expect is the profile's override when it expects this scenario to
	// fail (scenarios.NAME.expect), nil otherwise.
	Expect *profile.ScenarioOverride
}

// Suite is what DefineSpecs needs: a loaded profile, its relay, the scenarios.
type Suite struct {
	Profile    *profile.Profile
	Relay      RelayController
	Scenarios  []scenarios.Scenario
	ResultsDir string
	Progress   io.Writer
	Verbose    bool
	// Parallel caps how many scenarios run at the same time (0: as many as
	// isolation allows; 1: one after another).
	Parallel int

	hub    *runner.Hub
	jobs   map[string]*runner.Job
	cancel context.CancelFunc
	done   map[string]bool // scenarios reported (guarded by mu)

	mu       sync.Mutex
	Outcomes []Outcome
}

func (s *Suite) record(o Outcome) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Outcomes = append(s.Outcomes, o)
}

// Missing returns the capabilities sc needs that the profile lacks.
func (s *Suite) Missing(sc *scenarios.Scenario) []string {
	var out []string
	for _, c := range s.Profile.Missing(sc.Needs()) {
		out = append(out, string(c))
	}
	return out
}

// specMargin is what a spec's timeout adds to the deadlines it derives from
// the profile's timing: submitting, listing the queue and judging take time
// of their own.
const specMargin = 2 * time.Minute

// stepTimeout bounds each step spec of sc: the longest deadline any of its
// steps derives from the profile's timing (runner.WaitDeadline,
// runner.RestartDeadline), never less than 6 x retry_max + 2 x
// restart_grace, plus specMargin. Only a scenario that waits for the queue
// lifetime or the delay warning gets them: at production timers (5 days)
// a stuck step must not hang for a lifetime the scenario never waits for.
func (s *Suite) stepTimeout(sc *scenarios.Scenario) time.Duration {
	t := s.Profile.Timing
	gl, msgs := greylistDelay(sc), messages(sc)
	longest := t.RetryMax.D()*6 + t.RestartGrace.D()*2
	for _, st := range sc.Steps {
		switch {
		case st.Wait != nil:
			longest = max(longest, runner.WaitDeadline(t, st.Wait, gl, msgs))
		case st.Restart != nil:
			longest = max(longest, runner.RestartDeadline(t, st.Restart))
		}
	}
	return longest + specMargin
}

// scenarioTimeout bounds one scenario from its beginning: what its specs
// would take one after another.
func (s *Suite) scenarioTimeout(sc *scenarios.Scenario) time.Duration {
	return beginTimeout + time.Duration(len(sc.Steps))*s.stepTimeout(sc) + s.judgeTimeout(sc)
}

// judgeTimeout bounds the spec that drains and judges sc (runner.Finish):
// up to three drained waits with a flush and a restart between them, then
// the late-duplicate watch (retry_max), plus specMargin. A relay that needs
// the last chance is judged, not cut off.
func (s *Suite) judgeTimeout(sc *scenarios.Scenario) time.Duration {
	t := s.Profile.Timing
	drained := runner.WaitDeadline(t, &scenarios.Wait{For: "drained"}, greylistDelay(sc), messages(sc))
	flush := t.RestartGrace.D() // a flush command gets as long as a start
	restart := runner.RestartDeadline(t, &scenarios.Restart{})
	return 3*drained + flush + restart + t.RetryMax.D() + specMargin
}

// runTimeout bounds the whole run: every spec's own timeout, with the
// relay's setup and teardown, and never less than Ginkgo's default (1h).
// A scenario the profile skips costs nothing: a skipped expiry-bounce must
// not stretch the bound by its 5-day queue lifetime.
func (s *Suite) runTimeout() time.Duration {
	g := s.Profile.Timing.RestartGrace.D()
	sum := g*2 + 5*time.Minute + g*2 + time.Minute // BeforeSuite, AfterSuite
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		if s.Profile.Scenarios[sc.Name].Skip != "" || len(s.Missing(sc)) > 0 {
			continue // skipped in BeforeAll
		}
		sum += beginTimeout + time.Duration(len(sc.Steps))*s.stepTimeout(sc) + s.judgeTimeout(sc)
	}
	return max(sum, time.Hour)
}

// beginTimeout bounds a scenario's BeforeAll (starting its fake MTA).
const beginTimeout = time.Minute

// ginkgoConfig is the Ginkgo configuration greyharness run uses: Ginkgo's
// defaults, with a suite timeout that outlasts every spec's own (Ginkgo's
// 1h would abort a pack against a relay with production timers).
func (s *Suite) ginkgoConfig() (types.SuiteConfig, types.ReporterConfig) {
	suiteCfg, repCfg := GinkgoConfiguration()
	suiteCfg.Timeout = max(suiteCfg.Timeout, s.runTimeout())
	return suiteCfg, repCfg
}

// greylistDelay is the longest greylist delay of sc's policies (its own and
// those its steps swap in); 0 without a greylist or when a policy does not
// parse (Begin reports that).
func greylistDelay(sc *scenarios.Scenario) time.Duration {
	var d time.Duration
	check := func(n *yaml.Node) {
		if n == nil || n.Kind == 0 {
			return
		}
		if p, err := fakemta.ParsePolicyNode(sc.File, n); err == nil && p.Greylist != nil {
			d = max(d, p.Greylist.Delay)
		}
	}
	check(&sc.Policy)
	for _, st := range sc.Steps {
		check(st.Policy)
	}
	return d
}

// messages is how many messages sc submits.
func messages(sc *scenarios.Scenario) int {
	n := 0
	for _, st := range sc.Steps {
		if st.Send != nil {
			n += max(st.Send.Count, 1)
		}
	}
	return n
}

// DefineSpecs declares the suite's specs; call it before RunSpecs.
func DefineSpecs(s *Suite) {
	// Specs wait for what the scheduler does, their turn included: each
	// may take as long as the whole run.
	total := s.runTimeout()
	BeforeSuite(func(ctx SpecContext) {
		if cfg, _ := GinkgoConfiguration(); cfg.ParallelTotal > 1 {
			Fail(fmt.Sprintf("ginkgo -p (%d processes) would start a relay and a fake MTA per process on the same ports: run without -p; the scenarios run at the same time anyway (-- --parallel=N caps them)", cfg.ParallelTotal))
		}
		if err := s.Relay.Setup(ctx); err != nil {
			Fail(fmt.Sprintf("relay %s setup: %v\n%s", s.Profile.Name, err, s.Relay.Logs()))
		}
		if err := s.Relay.Start(ctx); err != nil {
			Fail(fmt.Sprintf("relay %s start: %v\n%s", s.Profile.Name, err, s.Relay.Logs()))
		}
		if err := s.start(ctx); err != nil {
			Fail(fmt.Sprintf("fake MTA: %v", err))
		}
	}, NodeTimeout(s.Profile.Timing.RestartGrace.D()*2+5*time.Minute))
	AfterSuite(func(ctx SpecContext) {
		s.stop(ctx)
		s.Relay.Stop(ctx)
		if err := s.Relay.Teardown(ctx); err != nil {
			GinkgoWriter.Printf("relay teardown: %v\n", err)
		}
	}, NodeTimeout(s.Profile.Timing.RestartGrace.D()*2+2*time.Minute))

	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		describeScenario(s, sc, total)
	}
}

// skipReason says why the profile cannot run sc ("" when it can).
func (s *Suite) skipReason(sc *scenarios.Scenario) string {
	if o, ok := s.Profile.Scenarios[sc.Name]; ok && o.Skip != "" {
		return fmt.Sprintf("the %s profile skips %s: %s", s.Profile.Name, sc.Name, o.Skip)
	}
	if missing := s.Missing(sc); len(missing) > 0 {
		return fmt.Sprintf("needs %s, which the %s profile does not provide", strings.Join(missing, ", "), s.Profile.Name)
	}
	return ""
}

// jobScenario is sc as the run schedules it: a scenario that says
// `exclusive: true` shares the run when the profile says why it may
// (ScenarioOverride.Share), and why says so ("" otherwise).
func (s *Suite) jobScenario(sc *scenarios.Scenario) (run *scenarios.Scenario, why string) {
	o, ok := s.Profile.Scenarios[sc.Name]
	if !ok || o.Share == "" || !sc.Exclusive {
		return sc, ""
	}
	c := *sc
	c.Exclusive = false
	return &c, fmt.Sprintf("shares the run although it says exclusive: true: the %s profile says %s", s.Profile.Name, o.Share)
}

// start starts the shared fake MTA and schedules every scenario Ginkgo
// will run (its focus, skip and label filter select them), skipped ones aside.
func (s *Suite) start(ctx context.Context) error {
	opt := &runner.Options{Profile: s.Profile, Relay: s.Relay, ResultsDir: s.ResultsDir, Progress: s.Progress, Verbose: s.Verbose}
	hub, err := runner.NewHub(ctx, opt)
	if err != nil {
		return err
	}
	opt.Hub = hub
	s.hub = hub
	s.jobs = map[string]*runner.Job{}
	sel := ginkgoSelection()
	var jobs []*runner.Job
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		if s.skipReason(sc) != "" || !sel(sc) {
			continue
		}
		run, why := s.jobScenario(sc)
		if why != "" && s.Progress != nil {
			fmt.Fprintf(s.Progress, "[%s] %s\n", sc.Name, why)
		}
		j := runner.NewJob(run, s.scenarioTimeout(sc))
		s.jobs[sc.Name] = j
		jobs = append(jobs, j)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	runner.Schedule(ctx, opt, jobs, s.Parallel)
	return nil
}

func (s *Suite) reported(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[name]
}

// stop ends every scenario still running (each is judged on what was
// recorded) and the fake MTA.
func (s *Suite) stop(ctx context.Context) {
	if s.cancel == nil {
		return
	}
	for _, j := range s.jobs {
		select {
		case <-j.Done():
		default:
			j.Cancel()
		}
	}
	s.cancel()
	for _, j := range s.jobs {
		select {
		case <-j.Done():
		case <-ctx.Done():
			continue
		}
		// A scenario Ginkgo never judged (interrupted between its specs,
		// where no AfterAll runs) still ends with its outcome.
		if h, res, _ := j.Wait(ctx); h != nil && !s.reported(h.Scenario) {
			if h.StepError == "" {
				h.StepError = "judging did not run (the run was interrupted): judged at once, without draining"
			}
			if msg := s.report(h, res); msg != "" {
				GinkgoWriter.Println(msg)
			}
		}
	}
	s.hub.Close()
}

// ginkgoSelection tells whether Ginkgo will run any spec of a scenario,
// from its focus, skip and label filter (the CLI selects before defining
// specs and sets none of them).
func ginkgoSelection() func(*scenarios.Scenario) bool {
	cfg, _ := GinkgoConfiguration()
	var focus, skip []*regexp.Regexp
	for _, f := range cfg.FocusStrings {
		if re, err := regexp.Compile(f); err == nil {
			focus = append(focus, re)
		}
	}
	for _, f := range cfg.SkipStrings {
		if re, err := regexp.Compile(f); err == nil {
			skip = append(skip, re)
		}
	}
	labels := func([]string) bool { return true }
	if cfg.LabelFilter != "" {
		if lf, err := types.ParseLabelFilter(cfg.LabelFilter); err == nil {
			labels = lf
		}
	}
	return func(sc *scenarios.Scenario) bool {
		if !labels(sc.Labels) {
			return false
		}
		texts := []string{sc.Name + " judges every message (ledger)"}
		for i := range sc.Steps {
			texts = append(texts, sc.Name+" "+stepText(i, &sc.Steps[i]))
		}
		for _, t := range texts {
			if matchesAny(skip, t) {
				continue
			}
			if len(focus) == 0 || matchesAny(focus, t) {
				return true
			}
		}
		return false
	}
}

func matchesAny(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func stepText(i int, st *scenarios.Step) string {
	return fmt.Sprintf("step %d: %s", i+1, runner.Describe(st))
}

// describeScenario declares one scenario: an Ordered container with one
// spec per step and a last spec that judges every message. The scenario
// itself runs in the scheduler; each spec waits for its part. Every
// scenario that began ends with an outcome: a failed step skips the steps
// after it but not the judging, which judges what was recorded and shows
// the step error beside the verdicts; when judging never ran (an
// interrupt, fail-fast, a focus on some steps) AfterAll ends the scenario
// at once and judges it without draining.
func describeScenario(s *Suite, sc *scenarios.Scenario, total time.Duration) {
	Describe(sc.Name, Label(sc.Labels...), Ordered, ContinueOnFailure, func() {
		var job *runner.Job
		var run *runner.Run
		var judged atomic.Bool
		BeforeAll(func(ctx SpecContext) {
			if why := s.skipReason(sc); why != "" {
				s.record(Outcome{Scenario: sc.Name, Skipped: why})
				Skip(why)
			}
			if job = s.jobs[sc.Name]; job == nil {
				Fail(fmt.Sprintf("%s: not scheduled (the selection of the scheduler and Ginkgo's differ)", sc.Name))
			}
			var err error
			if run, err = job.Begun(ctx); err != nil {
				msg := fmt.Sprintf("%s: the scenario could not begin: %v", sc.File, err)
				judged.Store(true)
				o := Outcome{Scenario: sc.Name, Err: msg}
				if down := (*runner.RelayDownError)(nil); errors.As(err, &down) {
					// Not the relay's verdict: another scenario's failed restart.
					o.RelayDown = down.Error()
					msg = fmt.Sprintf("ERROR %s: not judged: %v", sc.Name, err)
				}
				s.record(o)
				Fail(msg)
			}
		}, NodeTimeout(total+time.Minute))
		for i := range sc.Steps {
			It(stepText(i, &sc.Steps[i]), func(ctx SpecContext) {
				err := job.Step(ctx, i)
				switch {
				case errors.Is(err, runner.ErrNotRun):
					Skip("not run: an earlier step failed: " + run.StepError())
				case ctx.Err() != nil:
					// Interrupted or timed out while the step ran: that is
					// the step error; the scenario ends and is judged at once.
					run.StepFailed(fmt.Sprintf("%s: interrupted: %v", stepText(i, &sc.Steps[i]), context.Cause(ctx)))
					job.Cancel()
					Fail(fmt.Sprintf("%s: %v", stepText(i, &sc.Steps[i]), context.Cause(ctx)))
				case err != nil:
					Fail(fmt.Sprintf("%v\n%s", err, s.Relay.Logs()))
				}
			}, SpecTimeout(total))
		}
		It("judges every message (ledger)", func(ctx SpecContext) {
			h, res, _ := job.Wait(ctx)
			if h == nil {
				Fail(fmt.Sprintf("%s: no history: %v", sc.Name, ctx.Err()))
			}
			judged.Store(true)
			if msg := s.report(h, res); msg != "" {
				Fail(msg) // Ginkgo prints it, timelines and all
			}
		}, SpecTimeout(total))
		AfterAll(func() {
			if job == nil || run == nil || judged.Swap(true) {
				return
			}
			// Judging never ran: end the scenario and judge what was recorded.
			run.StepFailed("judging did not run (the run was interrupted, or the spec was not selected): judged at once, without draining")
			job.Cancel()
			h, res, _ := job.Wait(context.Background())
			if msg := s.report(h, res); msg != "" {
				GinkgoWriter.Println(msg)
			}
		})
	})
}

// report records the scenario's outcome, saves the history of a failed
// scenario, and returns the report when the scenario failed (or passed
// although the profile expects it to fail).
func (s *Suite) report(h *history.History, res ledger.Result) string {
	name := h.Scenario
	o := Outcome{Scenario: name, History: h, Result: &res, Err: h.StepError, RelayDown: h.RelayDown}
	if ov, ok := s.Profile.Scenarios[name]; ok && ov.Expect != nil {
		o.Expect = &ov
	}
	st := status(o)
	var b strings.Builder
	switch st {
	case report.StatusExpectedFailure:
		fmt.Fprintf(&b, "EXPECTED FAILURE %s: the %s profile expects it to fail with %s: %s\n", name, s.Profile.Name, expectedVerdicts(o.Expect), o.Expect.Why)
	case report.StatusUnexpectedPass:
		fmt.Fprintf(&b, "UNEXPECTED PASS %s: the %s profile expects it to fail with %s (%s), and it passed: the relay's behaviour changed; "+
			"update or remove scenarios.%s.expect in the profile\n", name, s.Profile.Name, expectedVerdicts(o.Expect), o.Expect.Why, name)
	case "error":
		fmt.Fprintf(&b, "ERROR %s: not judged: %s\n", name, o.RelayDown)
	case "failed":
		if o.Expect != nil {
			fmt.Fprintf(&b, "the %s profile expects %s to fail with %s only (%s); it failed otherwise:\n", s.Profile.Name, name, expectedVerdicts(o.Expect), o.Expect.Why)
		}
	}
	report.Text(&b, res, h, s.Verbose)
	failed := !res.Passed || h.StepError != ""
	if failed && s.ResultsDir != "" {
		if dir, err := runner.Save(s.ResultsDir, h, res, s.Relay.Logs()); err == nil {
			o.Saved = dir
			fmt.Fprintf(&b, "history saved to %s (re-judge with: greyharness judge %s)\n", dir, dir)
		}
	}
	s.record(o)
	s.mu.Lock()
	if s.done == nil {
		s.done = map[string]bool{}
	}
	s.done[name] = true
	s.mu.Unlock()
	if st != "passed" && st != report.StatusExpectedFailure {
		return b.String()
	}
	if s.Progress != nil {
		fmt.Fprint(s.Progress, b.String())
	}
	return ""
}

// expectedVerdicts is "bad-dsn" or "stalled or lost".
func expectedVerdicts(o *profile.ScenarioOverride) string {
	vs := make([]string, len(o.Expect.Verdict))
	for i, v := range o.Expect.Verdict {
		vs[i] = string(v)
	}
	return strings.Join(vs, " or ")
}

// ProgressWriter is where live progress goes: stderr, so it is seen live
// even when Ginkgo buffers spec output.
var ProgressWriter io.Writer = os.Stderr
