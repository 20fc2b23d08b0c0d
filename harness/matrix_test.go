package harness_test

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/ledger"
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
	sem := make(chan struct{}, 3) // relays run side by side: most of a scenario is waiting
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
			rows[i] = runBug(t, bc, sc, quiet)
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

func runBug(t *testing.T, bc bugCase, sc, quiet *scenarios.Scenario) matrixRow {
	row := matrixRow{bug: string(bc.bug), scenario: sc.Name, expected: bc.verdict}
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
	if err := rc.Start(ctx); err != nil {
		row.observed = []string{"start: " + err.Error()}
		return row
	}
	defer rc.Stop(context.Background())
	opt := &runner.Options{Profile: prof, Relay: rc}

	// The baseline first: kb950757 counts starts, and a later restart
	// must not be mistaken for part of a double restart.
	_, qres, qerr := runner.RunScenario(ctx, opt, quiet)
	row.quietPass = qerr == nil && qres.Passed
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
	// Let the double-restart window of kb950757 pass since the relay's start.
	_, res, err := runner.RunScenario(ctx, opt, sc)
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

func printMatrix(t *testing.T, rows []matrixRow) {
	var b strings.Builder
	b.WriteString("\n| bug | scenario that catches it | expected verdict | reported | baseline (plain-delivery) |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		caught := "✗ " + strings.Join(r.observed, ", ")
		if r.caught {
			caught = "✓ " + strings.Join(r.observed, ", ")
		}
		quiet := "passes"
		if !r.quietPass {
			quiet = "FAILS: " + r.quietNote
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", r.bug, r.scenario, r.expected, caught, quiet)
	}
	t.Log(b.String())
	fmt.Print(b.String())
}
