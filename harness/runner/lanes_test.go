package runner

import (
	"context"
	"net"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// freeOn is a free port on a loopback host now, as host:port.
func freeOn(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuf is a progress sink several scenarios write to at once.
type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// packScenario returns the default pack's scenario name.
func packScenario(t *testing.T, name string) *scenarios.Scenario {
	t.Helper()
	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	for i := range pack {
		if pack[i].Name == name {
			return &pack[i]
		}
	}
	t.Fatalf("no scenario %s in the pack", name)
	return nil
}

// laneRun runs scs on a hub over the in-process sample relay, with lanes
// when lanes is true (the relay routes them), and returns the histories;
// every scenario must pass.
func laneRun(t *testing.T, lanes bool, scs ...*scenarios.Scenario) ([]*history.History, string) {
	t.Helper()
	hs, res, progress := laneRunRouted(t, lanes, lanes, scs...)
	for i := range hs {
		if !res[i].Passed || hs[i].StepError != "" {
			t.Errorf("%s: step error %q, passed %v: %+v", scs[i].Name, hs[i].StepError, res[i].Passed, res[i].Failed())
		}
	}
	return hs, progress
}

// laneRunRouted is laneRun; route says whether the relay routes the lanes.
func laneRunRouted(t *testing.T, lanes, route bool, scs ...*scenarios.Scenario) ([]*history.History, []ledger.Result, string) {
	t.Helper()
	return sampleHubRun(t, 0.6, 200*time.Millisecond, lanes, route, scs...)
}

// sampleHubRun runs scs together on one in-process sample relay (its
// backoff given) and fake MTA, as a pack runs, with retryMax in the
// profile; lanes gives the profile two lanes, route has the relay route
// them.
func sampleHubRun(t *testing.T, retryMax float64, backoff time.Duration, lanes, route bool, scs ...*scenarios.Scenario) ([]*history.History, []ledger.Result, string) {
	t.Helper()
	prof := &profile.Profile{Name: "sample", NextHop: []string{freeAddr(t)}, QueueFormat: profile.QueueSample,
		Commands: profile.Commands{Queue: "(in-process)", Flush: "(in-process)", Restart: "(in-process)"},
		Timing:   history.Timing{RetryMax: seconds(retryMax), QueueLifetime: seconds(60), RestartGrace: seconds(1)}}
	if lanes {
		prof.Lanes = []string{freeOn(t, "127.0.0.11"), freeOn(t, "127.0.0.12")}
	}
	sr := newSampleRelay(t, backoff)
	var progress syncBuf
	opt := &Options{Profile: prof, Relay: sr, Progress: &progress}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hub, err := NewHub(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	sr.cfg.NextHop = prof.NextHop
	if route {
		sr.cfg.Lanes = prof.Lanes
	}
	if err := sr.Start(ctx); err != nil {
		t.Fatal(err)
	}
	prof.Submit = profile.Submit{Addr: sr.addr}
	o := *opt
	o.Hub = hub
	hs, res, _ := RunScenarios(ctx, &o, scs, 0)
	return hs, res, progress.String()
}

// lastTx is when the last transaction in h's journal ended.
func lastTx(h *history.History) time.Time {
	var at time.Time
	for _, ev := range h.Journal {
		if ev.Kind == fakemta.EventTransaction && ev.Tenant != "" {
			at = ev.Time
		}
	}
	return at
}

func regexpMatch(s, re string) bool { return regexp.MustCompile(re).MatchString(s) }

// heloReplies lists the replies to EHLO/HELO in h's journal with the
// address the connection came to.
func heloReplies(h *history.History) map[int][]string {
	local := map[uint64]string{}
	ehlo := map[uint64]bool{}
	out := map[int][]string{}
	for _, ev := range h.Journal {
		switch ev.Kind {
		case fakemta.EventConnect:
			local[ev.Conn] = ev.Local
		case fakemta.EventCommand:
			c := strings.ToUpper(ev.Command)
			ehlo[ev.Conn] = strings.HasPrefix(c, "EHLO") || strings.HasPrefix(c, "HELO")
		case fakemta.EventReply:
			if ehlo[ev.Conn] && ev.Reply != nil {
				out[ev.Reply.Code] = append(out[ev.Reply.Code], local[ev.Conn])
				ehlo[ev.Conn] = false
			}
		}
	}
	return out
}

// TestLanesRunConnectionLevelBesideShared: with lanes in the profile,
// 421-after-ehlo and starttls-failure each hold a lane and run beside a
// shared scenario; the 421 meets 421-after-ehlo's own first connection,
// on its lane, and is in no neighbour's history; all pass. Without lanes
// they run alone.
func TestLanesRunConnectionLevelBesideShared(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scenarios over the in-process sample relay (about 10 s)")
	}
	t.Parallel()
	shared := load(t, `name: shared
policy:
  greylist: {delay: 1s, auto_whitelist_after: 0}
steps:
  - send: {count: 3, to: [s@rcpt.greyharness.test]}
  - wait: delivered
expect:
  messages:
    - verdict: delivered
`)
	ehlo, tls := packScenario(t, "421-after-ehlo"), packScenario(t, "starttls-failure")
	t.Run("lanes", func(t *testing.T) {
		t.Parallel()
		hs, progress := laneRun(t, true, ehlo, tls, shared)
		// Alone, each would hold the others back until it drained (its
		// delivery); on lanes the shared one starts before that.
		for _, h := range hs[:2] {
			if d := lastTx(h); !hs[2].Started.Before(d) {
				t.Errorf("the shared scenario started at %s, after %s was delivered (%s): not beside it", hs[2].Started, h.Scenario, d)
			}
		}
		got := heloReplies(hs[0])
		if len(got[421]) != 1 || !strings.HasPrefix(got[421][0], "127.0.0.1") || strings.HasPrefix(got[421][0], "127.0.0.1:") {
			t.Errorf("421-after-ehlo's 421 at EHLO came on %v, want once on a lane (127.0.0.1N)", got[421])
		}
		for _, h := range hs[1:] {
			if r := heloReplies(h); len(r[421]) > 0 {
				t.Errorf("%s's history has the neighbour's 421 at EHLO (on %v)", h.Scenario, r[421])
			}
		}
		for _, name := range []string{"421-after-ehlo", "starttls-failure"} {
			if !strings.Contains(progress, "["+name+" ") || !regexpMatch(progress, `\[`+name+` \+[^]]*\] runs on lane [12] `) {
				t.Errorf("no progress line saying %s runs on a lane:\n%s", name, progress)
			}
		}
	})
	// A profile that lists lanes the relay does not route: the laned
	// scenario's mail comes to the next hop, where its fault cannot meet
	// it. That is no pass: the scenario fails and says why.
	t.Run("relay ignores the lanes", func(t *testing.T) {
		t.Parallel()
		hs, _, _ := laneRunRouted(t, true, false, ehlo, shared)
		if !strings.Contains(hs[0].StepError, "lanes: the relay delivered this scenario's mail") || !strings.Contains(hs[0].StepError, "to a next hop") {
			t.Errorf("421-after-ehlo's step error %q, want the misrouting named", hs[0].StepError)
		}
		if hs[1].StepError != "" {
			t.Errorf("shared: step error %q", hs[1].StepError)
		}
	})
	t.Run("no lanes", func(t *testing.T) {
		t.Parallel()
		hs, progress := laneRun(t, false, ehlo, tls, shared)
		for _, name := range []string{"421-after-ehlo", "starttls-failure"} {
			if !regexpMatch(progress, `\[`+name+` \+[^]]*\] runs alone \(its policy acts`) {
				t.Errorf("no progress line saying %s runs alone:\n%s", name, progress)
			}
		}
		for _, h := range hs[:2] {
			if d := lastTx(h); hs[2].Started.Before(d) {
				t.Errorf("the shared scenario started at %s, before %s was delivered (%s), without lanes", hs[2].Started, h.Scenario, d)
			}
		}
		if got := heloReplies(hs[0]); len(got[421]) != 1 {
			t.Errorf("421-after-ehlo without lanes: 421 at EHLO on %v, want once", got[421])
		}
	})
}

// TestLaneable: which scenarios take a lane instead of running alone.
func TestLaneable(t *testing.T) {
	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"421-after-ehlo": true, "starttls-failure": true, "fakemta-outage": true}
	for i := range pack {
		if got := Laneable(&pack[i]); got != want[pack[i].Name] {
			t.Errorf("%s: Laneable %v, want %v", pack[i].Name, got, want[pack[i].Name])
		}
	}
	for _, c := range []struct {
		yaml string
		want bool
	}{
		// A whole fake MTA's stop and start is also a greylist-persistence
		// fault: with a greylist, only the whole fake MTA will do.
		{"name: g\npolicy:\n  greylist: {delay: 1s}\nsteps:\n  - fakemta: stop\n  - send: {to: [a@r.test]}\n  - fakemta: start\n  - wait: delivered\n", false},
		{"name: g2\nsteps:\n  - fakemta: stop\n  - send: {to: [a@r.test]}\n  - fakemta: start\n  - policy:\n      greylist: {delay: 1s}\n  - wait: delivered\n", false},
		{"name: r\nsteps:\n  - send: {to: [a@r.test]}\n  - fakemta: restart\n  - wait: delivered\n", false},
		{"name: x\nexclusive: true\npolicy:\n  rules: [{match: {stage: helo}, close: \"421 4.3.2 bye\"}]\nsteps:\n  - send: {to: [a@r.test]}\n", false},
		{"name: h\npolicy:\n  rules: [{match: {stage: helo}, close: \"421 4.3.2 bye\"}]\nsteps:\n  - fakemta: stop\n  - send: {to: [a@r.test]}\n  - fakemta: start\n", true},
		{"name: s\nsteps:\n  - send: {to: [a@r.test]}\n", false},
	} {
		sc := load(t, c.yaml)
		if got := Laneable(sc); got != c.want {
			t.Errorf("%s: Laneable %v, want %v", sc.Name, got, c.want)
		}
	}
}

// TestLaneOutage: with lanes, fakemta-outage holds a lane and its stop and
// start close and reopen only that lane's listener: a shared scenario
// runs beside it and is delivered during the outage, with no outage in
// its history; the outage's history says it was the lane's listener.
func TestLaneOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs scenarios over the in-process sample relay (about 5 s)")
	}
	t.Parallel()
	shared := load(t, "name: shared\nsteps:\n  - send: {count: 2, to: [s@rcpt.greyharness.test]}\n  - wait: delivered\n")
	hs, progress := laneRun(t, true, packScenario(t, "fakemta-outage"), shared)
	if !regexpMatch(progress, `\[fakemta-outage \+[^]]*\] runs on lane 1 `) {
		t.Errorf("no progress line saying fakemta-outage runs on a lane:\n%s", progress)
	}
	var stop, start *history.Fault
	for i, f := range hs[0].Faults {
		switch f.Kind {
		case history.FaultFakeMTAStop:
			stop = &hs[0].Faults[i]
		case history.FaultFakeMTAStart:
			start = &hs[0].Faults[i]
		}
	}
	if stop == nil || start == nil {
		t.Fatalf("the outage's faults: %+v", hs[0].Faults)
	}
	for _, f := range []*history.Fault{stop, start} {
		if !strings.Contains(f.Detail, "lane 1's listener") {
			t.Errorf("%s: detail %q, want it to say lane 1's listener", f.Kind, f.Detail)
		}
	}
	for _, f := range hs[1].Faults {
		t.Errorf("the shared scenario's history has %s %q", f.Kind, f.Detail)
	}
	if d := lastTx(hs[1]); !d.After(stop.End) || !d.Before(start.Start) {
		t.Errorf("the shared scenario was delivered at %s, not during the lane's outage %s–%s", d, stop.End, start.Start)
	}
}
