package harness_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/scenarios"
)

// sampleRelay starts a sample relay (with an optional remote fake MTA
// reference set by mod) for one test.
func sampleRelay(t *testing.T, mod func(*profile.Profile)) (*profile.Profile, *relay.Controller) {
	t.Helper()
	bin, env := testBin()
	prof, cleanup, err := harness.LoadRelay("sample", bin, env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	if mod != nil {
		mod(prof)
	}
	logDir, err := os.MkdirTemp("", "greyharness-conc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(logDir) })
	rc := relay.New(prof, logDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := rc.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Teardown(context.Background()) })
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Stop(context.Background()) })
	return prof, rc
}

func loadScenario(t *testing.T, src string) *scenarios.Scenario {
	t.Helper()
	scs, err := scenarios.LoadBytes("test.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return &scs[0]
}

// Two scenarios with opposite policies for the same recipient address run
// at the same time on one relay and one fake MTA: one gets 550 for every
// attempt (and a bounce), the other 250; neither history holds a
// transaction of the other.
const (
	refuseScenario = `name: refuses
policy:
  rules:
    - match: {rcpt: "same@rcpt.greyharness.test"}
      reply: "550 5.1.1 No such user"
steps:
  - send: {count: 3, to: [same@rcpt.greyharness.test]}
  - wait: {for: dsn, action: failed}
expect:
  messages:
    - verdict: bounced
`
	acceptScenario = `name: accepts
steps:
  - send: {count: 3, to: [same@rcpt.greyharness.test]}
  - wait: delivered
expect:
  messages:
    - verdict: delivered
`
)

func oppositePolicies(t *testing.T, prof *profile.Profile, rc *relay.Controller) {
	t.Helper()
	refuse, accept := loadScenario(t, refuseScenario), loadScenario(t, acceptScenario)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hs, res, errs := runner.RunScenarios(ctx, &runner.Options{Profile: prof, Relay: rc}, []*scenarios.Scenario{refuse, accept}, 0)
	for i, name := range []string{"refuses", "accepts"} {
		if errs[i] != nil {
			t.Fatalf("%s: %v", name, errs[i])
		}
		if !res[i].Passed || len(res[i].Foreign) > 0 || len(res[i].HarnessErrors) > 0 {
			t.Errorf("%s: passed %v, foreign %v, harness errors %v, failed %+v", name, res[i].Passed, res[i].Foreign, res[i].HarnessErrors, res[i].Failed())
		}
	}
	if !hs[0].Started.Before(hs[1].Ended) || !hs[1].Started.Before(hs[0].Ended) {
		t.Fatalf("the two scenarios did not overlap: %s–%s and %s–%s", hs[0].Started, hs[0].Ended, hs[1].Started, hs[1].Ended)
	}
	codes := func(h *history.History) map[int]int {
		n := map[int]int{}
		for _, ev := range h.Journal {
			if ev.Kind == fakemta.EventTransaction && ev.Transaction.MailFrom != "" {
				for _, r := range ev.Transaction.Rcpts {
					n[r.Reply.Code]++
				}
			}
		}
		return n
	}
	if c := codes(hs[0]); c[550] != 3 || len(c) != 1 {
		t.Errorf("refusing scenario's RCPT replies %v, want three 550 and nothing else", c)
	}
	if c := codes(hs[1]); c[250] != 3 || len(c) != 1 {
		t.Errorf("accepting scenario's RCPT replies %v, want three 250 and nothing else", c)
	}
	for i, h := range hs {
		for _, ev := range h.Journal {
			if ev.Tenant != "" && (ev.Kind == fakemta.EventTransaction) && !strings.Contains(ev.Transaction.Rcpts[0].Addr, "@"+ev.Tenant+".") {
				t.Errorf("scenario %d: transaction of tenant %s to %s", i, ev.Tenant, ev.Transaction.Rcpts[0].Addr)
			}
		}
	}
}

func TestConcurrentOppositePolicies(t *testing.T) {
	endToEnd(t)
	sampleOnly(t)
	t.Parallel()
	prof, rc := sampleRelay(t, nil)
	oppositePolicies(t, prof, rc)
}

// The same with the fake MTA deployed beside the relay, driven over its API.
func TestConcurrentOppositePoliciesRemote(t *testing.T) {
	endToEnd(t)
	sampleOnly(t)
	t.Parallel()
	prof, rc := sampleRelay(t, func(p *profile.Profile) {
		const token = "conc-token"
		p.FakeMTA = &profile.FakeMTARef{API: startDeployedFakeMTA(t, p.NextHop, token), Token: token}
	})
	oppositePolicies(t, prof, rc)
}

// A neighbour's restart: a scenario that restarts the relay runs beside a
// shared one; the restart waits until no submission is under way, is in
// both histories (the neighbour's names who caused it), and the shared one
// still passes.
func TestConcurrentNeighbourRestart(t *testing.T) {
	endToEnd(t)
	sampleOnly(t)
	t.Parallel()
	prof, rc := sampleRelay(t, nil)
	restarter := loadScenario(t, `name: restarter
steps:
  - send: {count: 2, to: [r@rcpt.greyharness.test]}
  - restart: {times: 2}
  - send: {count: 2, to: [r@rcpt.greyharness.test]}
  - wait: delivered
expect:
  messages:
    - verdict: delivered
`)
	sender := loadScenario(t, `name: sender
policy:
  greylist: {delay: 1s, auto_whitelist_after: 0}
steps:
  - send: {count: 5, to: [s@rcpt.greyharness.test]}
  - send: {count: 5, to: [s@rcpt.greyharness.test]}
  - send: {count: 5, to: [s@rcpt.greyharness.test]}
  - wait: delivered
expect:
  messages:
    - verdict: delivered
`)
	if iso, _ := runner.Isolate(restarter); iso != runner.Disruptive {
		t.Fatalf("a restarting scenario is %s, want disruptive", iso)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hs, res, errs := runner.RunScenarios(ctx, &runner.Options{Profile: prof, Relay: rc}, []*scenarios.Scenario{sender, restarter}, 0)
	for i := range hs {
		if errs[i] != nil || !res[i].Passed {
			t.Errorf("%s: step error %v, passed %v: %+v", hs[i].Scenario, errs[i], res[i].Passed, res[i].Failed())
		}
	}
	var restarts []history.Fault
	for _, f := range hs[0].Faults {
		if f.Kind == history.FaultRelayRestart {
			restarts = append(restarts, f)
			if !strings.Contains(f.Detail, "by neighbour restarter") {
				t.Errorf("the neighbour's restart is recorded as %q, want it to name the restarter", f.Detail)
			}
		}
	}
	if len(restarts) != 2 {
		t.Fatalf("the shared scenario's history has %d relay restarts, want the neighbour's 2 (%+v)", len(restarts), hs[0].Faults)
	}
	for _, s := range hs[0].Submissions {
		for _, f := range restarts {
			if !s.SubmittedAt.Before(f.Start) && s.SubmittedAt.Before(f.End) {
				t.Errorf("submission %s at %s during the neighbour's restart %s–%s", s.HarnessID, s.SubmittedAt, f.Start, f.End)
			}
		}
	}
	if hs[0].Started.After(restarts[0].Start) || hs[0].Ended.Before(restarts[1].End) {
		t.Errorf("the restarts did not happen while the shared scenario ran")
	}
}

// Scenarios that touch everyone are told apart.
func TestIsolateThePack(t *testing.T) {
	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]runner.Isolation{
		"421-after-ehlo": runner.Alone, "starttls-failure": runner.Alone, "load-500": runner.Alone,
		"double-restart-then-greylist": runner.Disruptive, "fakemta-outage": runner.Alone,
		"restart-after-delivery": runner.Disruptive, "restart-between-deferral-and-retry": runner.Disruptive,
		"restart-during-delivery": runner.Disruptive,
		"greylist-once":           runner.Shared, "plain-delivery": runner.Shared, "expiry-bounce": runner.Shared,
		"delay-warning": runner.Shared, "drop-after-final-dot": runner.Shared, "greylist-multi-recipient": runner.Shared,
		"submission-ehlo-twice": runner.Shared, "rspamd-greylist-at-eod": runner.Shared, "greylisted-dsn": runner.Shared,
		"multi-mx-split-state": runner.Alone, "multi-mx-shared-state": runner.Alone, // backup MX hosts answer only for them
	}
	for i := range pack {
		got, why := runner.Isolate(&pack[i])
		w, ok := want[pack[i].Name]
		if !ok {
			t.Errorf("%s: not in this test (%s, %s)", pack[i].Name, got, why)
		}
		if ok && got != w {
			t.Errorf("%s: %s (%s), want %s", pack[i].Name, got, why, w)
		}
		// The two about MX hosts hold the relay together; no other alone
		// scenario has company.
		wantGroup := ""
		if strings.HasPrefix(pack[i].Name, "multi-mx-") {
			wantGroup = runner.AloneGroupMX
		}
		if g := runner.AloneGroup(&pack[i]); g != wantGroup {
			t.Errorf("%s: alone group %q, want %q", pack[i].Name, g, wantGroup)
		}
		// Only the outage lets the others go before it ends: once its
		// fake MTA is back (its step 4), with the fake MTA running.
		for k := range pack[i].Steps {
			want := pack[i].Name == "fakemta-outage" && k >= 3
			if got := runner.FreeAfter(&pack[i], k, true); got != want {
				t.Errorf("%s: FreeAfter(step %d) = %v, want %v", pack[i].Name, k+1, got, want)
			}
			if runner.FreeAfter(&pack[i], k, false) {
				t.Errorf("%s: free after step %d with the fake MTA stopped", pack[i].Name, k+1)
			}
		}
	}
}
