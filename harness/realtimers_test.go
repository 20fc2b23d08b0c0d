package harness

import (
	"bufio"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

// ci/postfix-realtimers states in its timing what its main.cf overlay sets
// (the retry bound is the backoff plus one deferred-queue scan), has ports
// and a work dir of its own that its commands see too, and skips with a
// reason what cannot finish within a run.
func TestRealTimersProfileMatchesItsMainCf(t *testing.T) {
	t.Setenv("SUBMIT_PORT", "")
	t.Setenv("NEXT_HOP_PORT", "")
	t.Setenv("GREYHARNESS_WORK", "")
	p, err := profile.Load("../ci/postfix-realtimers/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("../ci/postfix-realtimers/main.cf")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cf := map[string]time.Duration{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		d, err := history.ParseDuration(value)
		if err != nil {
			t.Fatalf("main.cf %s: %v", line, err)
		}
		cf[strings.TrimSpace(name)] = d
	}
	tm := p.Timing
	want := map[string]time.Duration{
		"minimal_backoff_time": 300 * time.Second, "maximal_backoff_time": 4000 * time.Second,
		"queue_run_delay": 300 * time.Second, "maximal_queue_lifetime": 5 * 24 * time.Hour,
		"bounce_queue_lifetime": 5 * 24 * time.Hour, "delay_warning_time": 0,
	}
	for k, v := range want {
		if got, ok := cf[k]; !ok || got != v {
			t.Errorf("main.cf %s = %v (set: %v); want Debian's %v", k, got, ok, v)
		}
	}
	if tm.RetryMax.D() != cf["minimal_backoff_time"]+cf["queue_run_delay"] {
		t.Errorf("retry_max %s; want minimal_backoff_time + queue_run_delay", tm.RetryMax)
	}
	if tm.QueueLifetime.D() != cf["maximal_queue_lifetime"] || tm.DelayWarning.D() != cf["delay_warning_time"] {
		t.Errorf("timing %+v does not state main.cf's lifetime and delay warning", tm)
	}
	if p.Submit.Addr != "127.0.0.1:2585" || p.NextHop[0] != "127.0.0.1:2586" ||
		p.Env["SUBMIT_PORT"] != "2585" || p.Env["NEXT_HOP_PORT"] != "2586" ||
		p.Env["GREYHARNESS_WORK"] != "/tmp/greyharness-postfix-realtimers" || p.Env["POSTFIX_MAIN_CF"] != "./main.cf" {
		t.Errorf("defaults: submit %s, next_hop %v, env %v", p.Submit.Addr, p.NextHop, p.Env)
	}
	if p.Scenarios["expiry-bounce"].Skip == "" {
		t.Error("expiry-bounce is not skipped: it would wait 5 days")
	}
	// On lanes, the connection-level scenarios and the fake-MTA outage run
	// beside the others, not one retry interval each alone.
	if len(p.Lanes) != 3 || p.Env["LANE_HOSTS"] != "127.0.0.11 127.0.0.12 127.0.0.13" || p.Scenarios["fakemta-outage"].Skip != "" {
		t.Errorf("lanes %v, LANE_HOSTS %q, fakemta-outage skip %q", p.Lanes, p.Env["LANE_HOSTS"], p.Scenarios["fakemta-outage"].Skip)
	}
	if p.Scenarios["load-500"].Share == "" {
		t.Error("load-500 would run alone: one more retry interval (5-10m) for the pack")
	}
	if p.Has(profile.CapDelayWarning) {
		t.Error("delay-warning would run: Debian's Postfix sends no delay notice")
	}

	t.Setenv("SUBMIT_PORT", "2660")
	t.Setenv("NEXT_HOP_PORT", "2661")
	if p, err = profile.Load("../ci/postfix-realtimers/relay.yaml"); err != nil {
		t.Fatal(err)
	}
	if p.Submit.Addr != "127.0.0.1:2660" || p.NextHop[0] != "127.0.0.1:2661" || p.Env["SUBMIT_PORT"] != "2660" {
		t.Errorf("ports from the environment: submit %s, next_hop %v, env %v", p.Submit.Addr, p.NextHop, p.Env)
	}
}
