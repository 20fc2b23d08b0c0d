package harness_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/samplerelay"
	"github.com/greyharness/greyharness/scenarios"
)

// bugCase is one row of the bug zoo: the scenario that must catch the bug
// and the verdict it must report.
type bugCase struct {
	bug      samplerelay.Bug
	scenario string
	verdict  ledger.Verdict
	// fails is false for a verdict that only warns (retry-too-soon).
	fails bool
}

var bugZoo = []bugCase{
	{samplerelay.BugKB950757, "double-restart-then-greylist", ledger.HeldSilently, true},
	{samplerelay.BugDropOn4xx, "greylist-once", ledger.Lost, true},
	{samplerelay.BugBounceOn4xx, "greylist-multi-recipient", ledger.PrematureBounce, true},
	{samplerelay.BugNoRetry, "greylist-once", ledger.Stalled, true},
	{samplerelay.BugStallVisible, "greylist-once", ledger.Stalled, true},
	{samplerelay.BugHammer, "greylist-once", ledger.RetryTooSoon, false},
	{samplerelay.BugLoseQueueOnRestart, "restart-between-deferral-and-retry", ledger.Lost, true},
	{samplerelay.BugRedeliverAfterRestart, "restart-after-delivery", ledger.Duplicate, true},
	{samplerelay.BugResendAcceptedRcpts, "greylist-multi-recipient", ledger.Duplicate, true},
	{samplerelay.BugNoDSNOnExpiry, "expiry-bounce", ledger.Lost, true},
	{samplerelay.BugDSNToNullSender, "expiry-bounce", ledger.BadDSN, true},
	// The primary MX defers every retry and the bug never tries the backup:
	// neither the message nor, at the queue lifetime, its DSN gets through.
	{samplerelay.BugNoMXFailover, "multi-mx-split-state", ledger.Lost, true},
}

// quietScenario must pass whatever the bug: a relay bug that makes the
// plain baseline fail is a false alarm of the harness or a broken relay.
const quietScenario = "plain-delivery"

// matrixRow is what the test observed for one bug.
type matrixRow struct {
	bug, scenario     string
	expected          ledger.Verdict
	observed          []string
	caught, quietPass bool
	quietNote         string
	why               string        // the reason of the first finding with the expected verdict
	took              time.Duration // baseline and scenario
}

// TestBugMatrix runs the sample relay with each bug switched on and checks
// that the scenario meant to catch it reports the expected verdict, and
// that the baseline scenario stays quiet. It prints the bug × scenario →
// verdict matrix (shown in README).
func TestBugMatrix(t *testing.T) {
	endToEnd(t)
	sampleOnly(t)
	t.Parallel() // its relays and fake MTAs use their own ports
	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*scenarios.Scenario{}
	for i := range pack {
		byName[pack[i].Name] = &pack[i]
	}
	if len(bugZoo) != len(samplerelay.AllBugs) {
		t.Fatalf("the bug zoo lists %d bugs, the sample relay has %d: every bug needs a row", len(bugZoo), len(samplerelay.AllBugs))
	}
	rows := make([]matrixRow, len(bugZoo))
	sem := make(chan struct{}, 6) // relays run side by side: most of a scenario is waiting out a bug
	starting := &sync.Mutex{}     // but start one at a time: six race-built starts at once outlast any grace
	var wg sync.WaitGroup
	for i, bc := range bugZoo {
		sc, quiet := byName[bc.scenario], byName[quietScenario]
		if sc == nil || quiet == nil {
			t.Fatalf("scenario %q or %q missing from the default pack", bc.scenario, quietScenario)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i] = runBug(t, bc, sc, quiet, starting)
		}()
	}
	wg.Wait()
	printMatrix(t, rows)
	for _, r := range rows {
		if !r.caught {
			t.Errorf("bug %s: scenario %s reported %v, want %s", r.bug, r.scenario, r.observed, r.expected)
		}
		if !r.quietPass {
			t.Errorf("bug %s: the baseline %s cried wolf: %s", r.bug, quietScenario, r.quietNote)
		}
	}
}

func runBug(t *testing.T, bc bugCase, sc, quiet *scenarios.Scenario, starting *sync.Mutex) (row matrixRow) {
	row = matrixRow{bug: string(bc.bug), scenario: sc.Name, expected: bc.verdict}
	start := time.Now()
	defer func() { row.took = time.Since(start) }()
	bin, env := testBin()
	prof, cleanup, err := harness.LoadRelay("sample:"+string(bc.bug), bin, env)
	if err != nil {
		row.observed = []string{"profile error: " + err.Error()}
		return row
	}
	defer cleanup()
	logDir, err := os.MkdirTemp("", "greyharness-matrix-")
	if err != nil {
		row.observed = []string{err.Error()}
		return row
	}
	defer os.RemoveAll(logDir)
	rc := relay.New(prof, logDir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := rc.Setup(ctx); err != nil {
		row.observed = []string{"setup: " + err.Error()}
		return row
	}
	defer rc.Teardown(context.Background())
	starting.Lock()
	err = rc.Start(ctx)
	starting.Unlock()
	if err != nil {
		row.observed = []string{"start: " + err.Error()}
		return row
	}
	defer rc.Stop(context.Background())
	opt := &runner.Options{Profile: prof, Relay: rc}

	// The baseline and the scenario at the same time on one relay and one
	// fake MTA, as a pack runs: the catch must not depend on running alone,
	// and the baseline must stay quiet beside a scenario that trips a bug.
	hs, results, errs := runner.RunScenarios(ctx, opt, []*scenarios.Scenario{quiet, sc}, 0)
	qres, qerr := results[0], errs[0]
	row.quietPass = qerr == nil && (qres.Passed || neighbourTruth(hs[0], qres, bc.verdict))
	if row.quietPass && !qres.Passed {
		row.quietNote = fmt.Sprintf("its only failures are %s, beside the neighbour's fault: the bug's, the truth", bc.verdict)
	}
	if !row.quietPass {
		var b strings.Builder
		for _, f := range qres.Failed() {
			fmt.Fprintf(&b, "%s: %s; ", f.Primary, f.Why)
		}
		if qerr != nil {
			b.WriteString(qerr.Error())
		}
		row.quietNote = b.String()
	}
	res, err := results[1], errs[1]
	if err != nil {
		row.observed = append(row.observed, "step error: "+err.Error())
	}
	seen := map[string]bool{}
	for _, f := range res.Findings {
		if f.Failed || f.Warn {
			for _, v := range f.Verdicts {
				if v != ledger.Delivered && v != ledger.Bounced && v != ledger.DelayedNotice {
					seen[string(v)] = true
				}
			}
			if row.why == "" && f.Has(bc.verdict) {
				row.why = f.Why
			}
		}
	}
	for v := range seen {
		row.observed = append(row.observed, v)
	}
	sort.Strings(row.observed)
	row.caught = seen[string(bc.verdict)] && (!bc.fails || !res.Passed)
	if !row.caught {
		t.Logf("bug %s, scenario %s:\n%s", bc.bug, sc.Name, rc.Logs())
	}
	return row
}

// neighbourTruth reports whether every failure of the baseline is the
// bug's own verdict and the baseline's history holds a fault of the
// neighbour (its restart):
// the bug hit the baseline's messages too, which is the truth about the
// relay, not a false alarm (redeliver-after-restart sends every message it
// had delivered again, whoever submitted it).
func neighbourTruth(h *history.History, res ledger.Result, v ledger.Verdict) bool {
	if h == nil || len(res.Failed()) == 0 {
		return false
	}
	var first time.Time
	for _, f := range h.Faults {
		if strings.HasPrefix(f.Detail, "by neighbour ") && (first.IsZero() || f.Start.Before(first)) {
			first = f.Start
		}
	}
	if first.IsZero() {
		return false
	}
	for _, f := range res.Failed() {
		if f.Primary != v {
			return false
		}
	}
	return true
}

func printMatrix(t *testing.T, rows []matrixRow) {
	var b strings.Builder
	b.WriteString("\n| bug | scenario that catches it | expected verdict | reported | baseline (plain-delivery) |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		caught := "✗ " + strings.Join(r.observed, ", ")
		if r.caught {
			caught = "✓ " + strings.Join(r.observed, ", ")
		}
		quiet := "passes"
		if r.quietPass && r.quietNote != "" {
			quiet = "passes (" + r.quietNote + ")"
		}
		if !r.quietPass {
			quiet = "FAILS: " + r.quietNote
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", r.bug, r.scenario, r.expected, caught, quiet)
	}
	t.Log(b.String())
	// How each row caught its bug, and in what time: the margins a loaded
	// machine eats into.
	for _, r := range rows {
		t.Logf("%s: %s in %s: %s", r.bug, r.scenario, r.took.Round(time.Second), r.why)
	}
	fmt.Print(b.String())
}

// slowRestart is a relay on a machine too slow for any short window: its
// restart begins only once the sample relay has made its next attempt at
// every message it deferred (logged as delivered, or as deferred again).
type slowRestart struct {
	*relay.Controller
}

// sampleOutcome matches the sample relay's log line for one attempt's result.
var sampleOutcome = regexp.MustCompile(`(\S+) <[^>]*> (?:delivered:|deferred \(attempt (\d+),)`)

// retriedAll reports whether every message the sample relay deferred was
// tried again, as far as its log shows.
func retriedAll(logs string) bool {
	retried := map[string]bool{}
	for _, m := range sampleOutcome.FindAllStringSubmatch(logs, -1) {
		n, _ := strconv.Atoi(m[2])
		retried[m[1]] = retried[m[1]] || m[2] == "" || n >= 2
	}
	for _, ok := range retried {
		if !ok {
			return false
		}
	}
	return len(retried) > 0
}

func (s slowRestart) Restart(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !retriedAll(s.Logs()) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("slow restart: the relay never tried its deferred messages again: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return s.Controller.Restart(ctx)
}

// TestRestartScenarioOutlastsSlowRestart runs the scenario that catches
// lose-queue-on-restart with a restart that comes only after the relay's
// next retry, as on a loaded machine: the bug must still lose the message,
// and a correct relay must still pass.
func TestRestartScenarioOutlastsSlowRestart(t *testing.T) {
	endToEnd(t)
	sampleOnly(t)
	t.Parallel()
	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	var sc *scenarios.Scenario
	for i := range pack {
		if pack[i].Name == "restart-between-deferral-and-retry" {
			sc = &pack[i]
		}
	}
	if sc == nil {
		t.Fatal("restart-between-deferral-and-retry missing from the default pack")
	}
	for _, tc := range []struct {
		bug  string
		want ledger.Verdict // "" for a passing scenario
	}{
		{string(samplerelay.BugLoseQueueOnRestart), ledger.Lost},
		{"", ""},
	} {
		t.Run("bug="+tc.bug, func(t *testing.T) {
			t.Parallel()
			bin, env := testBin()
			spec := "sample"
			if tc.bug != "" {
				spec += ":" + tc.bug
			}
			prof, cleanup, err := harness.LoadRelay(spec, bin, env)
			if err != nil {
				t.Fatal(err)
			}
			defer cleanup()
			rc := relay.New(prof, "")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := rc.Setup(ctx); err != nil {
				t.Fatal(err)
			}
			defer rc.Teardown(context.Background())
			if err := rc.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer rc.Stop(context.Background())
			_, res, err := runner.RunScenario(ctx, &runner.Options{Profile: prof, Relay: slowRestart{rc}}, sc)
			if err != nil {
				t.Fatalf("step error: %v\n%s", err, rc.Logs())
			}
			var got []string
			caught := false
			for _, f := range res.Findings {
				if f.Failed || f.Warn {
					got = append(got, fmt.Sprintf("%s (%s)", f.Primary, f.Why))
				}
				for _, v := range f.Verdicts {
					caught = caught || (tc.want != "" && v == tc.want)
				}
			}
			switch {
			case tc.want == "" && !res.Passed:
				t.Errorf("correct relay failed: %v\n%s", got, rc.Logs())
			case tc.want != "" && (res.Passed || !caught):
				t.Errorf("bug %s: got %v (passed %v), want %s\n%s", tc.bug, got, res.Passed, tc.want, rc.Logs())
			}
		})
	}
}

// TestSampleProfileDoubleRestartWindow: kb950757 is caught only when the
// scenario's two restarts fall inside the sample relay's double-restart
// window, so the window must outlast the longest gap between two starts in
// a row that the runner lets pass (a ready wait and a stop, each within
// restart_grace), not a fast machine's.
func TestSampleProfileDoubleRestartWindow(t *testing.T) {
	p, err := harness.SampleProfile("greyharness", string(samplerelay.BugKB950757), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`--double-restart-window (\S+)`).FindStringSubmatch(p.Commands.Start)
	window := samplerelay.DefaultDoubleRestartWindow
	if m != nil {
		if window, err = time.ParseDuration(m[1]); err != nil {
			t.Fatalf("start command %q: %v", p.Commands.Start, err)
		}
	}
	gap := 2 * p.Timing.RestartGrace.D()
	if window <= gap {
		t.Errorf("double-restart window %s, not longer than the gap between two starts the runner allows (%s): a slow machine misses kb950757", window, gap)
	}
}

// listingRelay is a relay that does nothing but count its queue listings.
type listingRelay struct {
	mu sync.Mutex
	n  int
}

func (*listingRelay) Start(context.Context) error   { return nil }
func (*listingRelay) Stop(context.Context) error    { return nil }
func (*listingRelay) Restart(context.Context) error { return nil }
func (*listingRelay) Flush(context.Context) error   { return nil }
func (*listingRelay) Logs() string                  { return "" }
func (l *listingRelay) Queue(context.Context) history.QueueSnapshot {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	return history.QueueSnapshot{At: time.Now(), Err: fmt.Sprintf("listing %d", l.n)}
}

// TestCheckpointJudgedOnItsOwnListing: the ledger judges a checkpoint on the
// first listing at or after it. That must be the listing the checkpoint step
// takes, not whichever poll comes next: the next one may come seconds later,
// after a restart, racing the delivery it should have preceded (a correct
// Exim was called held-silently so).
func TestCheckpointJudgedOnItsOwnListing(t *testing.T) {
	endToEnd(t)
	ports, err := freeLoopbackAddr()
	if err != nil {
		t.Fatal(err)
	}
	prof := &profile.Profile{Name: "listing-only", NextHop: []string{ports},
		Timing: history.Timing{RetryMax: history.Duration(time.Millisecond)}}
	sc := &scenarios.Scenario{Name: "checkpoint-only", Steps: []scenarios.Step{{Checkpoint: &scenarios.Checkpoint{Name: "cp"}}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, _, err := runner.RunScenario(ctx, &runner.Options{Profile: prof, Relay: &listingRelay{}}, sc)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Checkpoints) != 1 {
		t.Fatalf("checkpoints %+v, want one", h.Checkpoints)
	}
	cp := h.Checkpoints[0]
	for _, s := range h.Queue {
		if !s.At.Before(cp.At) {
			if s.Err != "listing 1" {
				t.Errorf("first listing at or after the checkpoint is %q, want the checkpoint's own (listing 1)", s.Err)
			}
			return
		}
	}
	t.Errorf("no listing at or after the checkpoint at %s (listings %+v): the ledger cannot use the checkpoint's own", cp.At.Format("15:04:05.000000"), h.Queue)
}

func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
