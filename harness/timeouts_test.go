package harness

import (
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// realTimers is ci/postfix-realtimers: Debian's Postfix timers, retry_max
// 10m, queue_lifetime 5d, no delay warning, restart_grace 30s.
func realTimers(t *testing.T) (*Suite, map[string]*scenarios.Scenario) {
	t.Helper()
	p, err := profile.Load("../ci/postfix-realtimers/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if p.Timing.RetryMax.D() != 10*time.Minute || p.Timing.QueueLifetime.D() != 5*24*time.Hour {
		t.Fatalf("ci/postfix-realtimers timing = %+v; this test assumes retry_max 10m, queue_lifetime 5d", p.Timing)
	}
	scs, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*scenarios.Scenario{}
	for i := range scs {
		byName[scs[i].Name] = &scs[i]
	}
	return &Suite{Profile: p, Scenarios: scs}, byName
}

// A step spec's timeout is a bound for a stuck step. At real timers it
// must cover the step's own deadline, and no more than that: a scenario
// that never waits for the queue lifetime must not hang for 5 days.
func TestStepTimeoutAtRealTimers(t *testing.T) {
	s, sc := realTimers(t)
	tm := s.Profile.Timing
	rm, grace, ql := tm.RetryMax.D(), tm.RestartGrace.D(), tm.QueueLifetime.D()
	for _, tc := range []struct {
		scenario string
		atLeast  time.Duration // the longest wait deadline its steps derive
		atMost   time.Duration
	}{
		// wait delivered: greylist delay 1s + 3 x retry_max + restart_grace
		{"greylist-once", time.Second + 3*rm + grace, 2 * time.Hour},
		{"plain-delivery", 3*rm + grace, 2 * time.Hour},
		// wait delivered with factor 6 and 500 messages (20ms each)
		{"load-500", time.Second + 6*rm + grace + 500*20*time.Millisecond, 2 * time.Hour},
		// wait dsn failed, timeout_from queue_lifetime, factor 1.5
		{"expiry-bounce", time.Duration(1.5*float64(ql)) + grace, 8 * 24 * time.Hour},
	} {
		got := s.stepTimeout(sc[tc.scenario])
		if got < tc.atLeast || got > tc.atMost {
			t.Errorf("%s: step timeout %s; want between %s (its longest wait deadline) and %s", tc.scenario, got, tc.atLeast, tc.atMost)
		}
	}
}

// The judging spec drains: up to three drained waits (each greylist delay +
// 3 x retry_max + restart_grace + 20ms a message), with a flush and a
// restart (2 x restart_grace + 10s) between them, then the late-duplicate
// watch (retry_max). Its timeout must let all of that run, so a relay that
// needs the last chance is judged, not cut off by Ginkgo.
func TestJudgeTimeoutCoversDrainAtRealTimers(t *testing.T) {
	s, sc := realTimers(t)
	tm := s.Profile.Timing
	rm, grace := tm.RetryMax.D(), tm.RestartGrace.D()
	for _, tc := range []struct {
		name     string
		messages int // what the pack's scenario submits
	}{{"greylist-once", 1}, {"load-500", 500}, {"restart-between-deferral-and-retry", 2}} {
		msgs := time.Duration(tc.messages) * 20 * time.Millisecond
		drain := 3*(time.Second+3*rm+grace+msgs) + 2*grace + 10*time.Second + rm
		got := s.judgeTimeout(sc[tc.name])
		if got < drain || got > 3*time.Hour {
			t.Errorf("%s: judging timeout %s; want between %s (drain with flush and restart, then the watch) and 3h", tc.name, got, drain)
		}
	}
}

// greyharness run gives Ginkgo a suite timeout no shorter than the sum of
// its specs' own timeouts: Ginkgo's default (1h) would abort a real-timer
// pack that every spec lets run.
func TestRunTimeoutOutlastsTheSpecs(t *testing.T) {
	s, _ := realTimers(t)
	var sum time.Duration
	for i := range s.Scenarios {
		sc := &s.Scenarios[i]
		if s.Profile.Scenarios[sc.Name].Skip != "" || len(s.Missing(sc)) > 0 {
			continue
		}
		sum += time.Duration(len(sc.Steps))*s.stepTimeout(sc) + s.judgeTimeout(sc)
	}
	cfg, _ := s.ginkgoConfig()
	if cfg.Timeout < sum || cfg.Timeout < time.Hour {
		t.Errorf("suite timeout %s; want at least the specs' %s (and Ginkgo's 1h default)", cfg.Timeout, sum)
	}
	// expiry-bounce (5 days) is skipped by the profile: it must not stretch
	// the bound of a run that never waits for it.
	if cfg.Timeout > 2*sum {
		t.Errorf("suite timeout %s; want about the %s of the scenarios that run", cfg.Timeout, sum)
	}
}

// TestSampleTimingFitsThePack: the sample relay's queue lifetime bounds
// expiry-bounce, the pack's longest scenario on it, so it is short enough
// for the pack to run in about half a minute, and long enough for what
// must happen before it: the delayed DSN and a few retries after it, and
// the fake MTA outage as the relay's listing ends it (its first failed
// attempt seen within a couple of listings, a start, a retry).
func TestSampleTimingFitsThePack(t *testing.T) {
	p, err := SampleProfile("greyharness", "", t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	tm := p.Timing
	ql, dw, rm := tm.QueueLifetime.D(), tm.DelayWarning.D(), tm.RetryMax.D()
	if ql > 15*time.Second {
		t.Errorf("queue_lifetime %s: expiry-bounce alone takes longer than the pack may (15s)", ql)
	}
	if ql < dw+3*rm {
		t.Errorf("queue_lifetime %s: less than the delay warning %s and three retries (retry_max %s)", ql, dw, rm)
	}
	if ql < 4*rm {
		t.Errorf("queue_lifetime %s: a fake MTA outage seen in the listing (about 2 × retry_max %s) and the retry after it do not fit", ql, rm)
	}
}
