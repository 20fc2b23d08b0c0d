// Package harness drives a relay under test through the scenarios with
// Ginkgo: one Ordered container per scenario, one spec per step, and a
// last spec that judges every message with the ledger. The same specs run
// under `go test`/`ginkgo run ./harness` and inside `greyharness run`.
package harness

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"

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
	History  *history.History
	Result   *ledger.Result
	Saved    string // results folder, on failure
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

// scenarioTimeout bounds a whole scenario from the profile's timing.
func (s *Suite) scenarioTimeout(sc *scenarios.Scenario) time.Duration {
	t := s.Profile.Timing
	per := t.RetryMax.D()*6 + t.RestartGrace.D()*2 + t.QueueLifetime.D() + t.DelayWarning.D() + 2*time.Minute
	return per
}

// DefineSpecs declares the suite's specs; call it before RunSpecs.
func DefineSpecs(s *Suite) {
	BeforeSuite(func(ctx SpecContext) {
		if err := s.Relay.Setup(ctx); err != nil {
			Fail(fmt.Sprintf("relay %s setup: %v\n%s", s.Profile.Name, err, s.Relay.Logs()))
		}
		if err := s.Relay.Start(ctx); err != nil {
			Fail(fmt.Sprintf("relay %s start: %v\n%s", s.Profile.Name, err, s.Relay.Logs()))
		}
	}, NodeTimeout(s.Profile.Timing.RestartGrace.D()*2+5*time.Minute))
	AfterSuite(func(ctx SpecContext) {
		s.Relay.Stop(ctx)
		if err := s.Relay.Teardown(ctx); err != nil {
			GinkgoWriter.Printf("relay teardown: %v\n", err)
		}
	}, NodeTimeout(s.Profile.Timing.RestartGrace.D()*2+time.Minute))

	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		describeScenario(s, sc)
	}
}

// describeScenario declares one scenario: an Ordered container with one
// spec per step and a last spec that judges every message. Every scenario
// that began ends with an outcome: the container continues on failure, a
// failed step (or a step spec that timed out) skips the steps after it but
// not the judging, which judges what was recorded and shows the step error
// beside the verdicts; when judging never started (an interrupt, fail-fast)
// AfterAll judges at once.
func describeScenario(s *Suite, sc *scenarios.Scenario) {
	opt := &runner.Options{Profile: s.Profile, Relay: s.Relay, ResultsDir: s.ResultsDir, Progress: s.Progress, Verbose: s.Verbose}
	timeout := s.scenarioTimeout(sc)
	Describe(sc.Name, Label(sc.Labels...), Ordered, ContinueOnFailure, func() {
		var run *runner.Run
		var judging atomic.Bool
		BeforeAll(func(ctx SpecContext) {
			if o, ok := s.Profile.Scenarios[sc.Name]; ok && o.Skip != "" {
				s.record(Outcome{Scenario: sc.Name, Skipped: o.Skip})
				Skip(fmt.Sprintf("the %s profile skips %s: %s", s.Profile.Name, sc.Name, o.Skip))
			}
			if missing := s.Missing(sc); len(missing) > 0 {
				why := fmt.Sprintf("needs %s, which the %s profile does not provide", strings.Join(missing, ", "), s.Profile.Name)
				s.record(Outcome{Scenario: sc.Name, Skipped: why})
				Skip(why)
			}
			var err error
			run, err = runner.Begin(ctx, opt, sc)
			if err != nil {
				msg := fmt.Sprintf("%s: the scenario could not begin: %v", sc.File, err)
				s.record(Outcome{Scenario: sc.Name, Err: msg})
				Fail(msg)
			}
			DeferCleanup(run.Close)
		}, NodeTimeout(time.Minute))
		// A step spec that failed without a step error (timed out, panicked)
		// is a step error too: the steps after it must not run.
		AfterEach(func() {
			if rep := CurrentSpecReport(); run != nil && !judging.Load() && rep.Failed() {
				run.StepFailed(fmt.Sprintf("%s: %s: %s", rep.LeafNodeText, rep.State, rep.Failure.Message))
			}
		})
		for i := range sc.Steps {
			st := &sc.Steps[i]
			It(fmt.Sprintf("step %d: %s", i+1, runner.Describe(st)), func(ctx SpecContext) {
				if e := run.StepError(); e != "" {
					Skip("not run: an earlier step failed: " + e)
				}
				if err := run.Step(ctx, i, st); err != nil {
					Fail(fmt.Sprintf("%v\n%s", err, s.Relay.Logs()))
				}
			}, SpecTimeout(timeout))
		}
		It("judges every message (ledger)", func(ctx SpecContext) {
			judging.Store(true)
			if msg := s.judge(ctx, sc, run); msg != "" {
				Fail(msg) // Ginkgo prints it, timelines and all
			}
		}, SpecTimeout(timeout))
		AfterAll(func() {
			if run == nil || judging.Swap(true) {
				return
			}
			// Judging never started: judge what was recorded, without draining.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			run.StepFailed("judging did not run (the run was interrupted, or the spec was not selected): judged at once, without draining")
			if msg := s.judge(ctx, sc, run); msg != "" {
				GinkgoWriter.Println(msg)
			}
		})
	})
}

// judge finishes run, records the scenario's outcome, saves the history
// of a failed scenario, and returns the report when the scenario failed.
func (s *Suite) judge(ctx context.Context, sc *scenarios.Scenario, run *runner.Run) string {
	h, res := run.Finish(ctx)
	o := Outcome{Scenario: sc.Name, History: h, Result: &res, Err: h.StepError}
	if ov, ok := s.Profile.Scenarios[sc.Name]; ok && ov.Expect != nil {
		o.Expect = &ov
	}
	st := status(o)
	var b strings.Builder
	switch st {
	case report.StatusExpectedFailure:
		fmt.Fprintf(&b, "EXPECTED FAILURE %s: the %s profile expects it to fail with %s: %s\n", sc.Name, s.Profile.Name, expectedVerdicts(o.Expect), o.Expect.Why)
	case report.StatusUnexpectedPass:
		fmt.Fprintf(&b, "UNEXPECTED PASS %s: the %s profile expects it to fail with %s (%s), and it passed: the relay's behaviour changed; "+
			"update or remove scenarios.%s.expect in the profile\n", sc.Name, s.Profile.Name, expectedVerdicts(o.Expect), o.Expect.Why, sc.Name)
	case "failed":
		if o.Expect != nil {
			fmt.Fprintf(&b, "the %s profile expects %s to fail with %s only (%s); it failed otherwise:\n", s.Profile.Name, sc.Name, expectedVerdicts(o.Expect), o.Expect.Why)
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
