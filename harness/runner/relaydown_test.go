package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
)

// flakyRelay is the in-process sample relay whose next `fails` starts
// fail (as a relay that does not come back within its restart grace),
// leaving it stopped; before a restart it calls hold, so a test can let
// it go once a neighbour runs.
type flakyRelay struct {
	*sampleRelay
	mu    sync.Mutex
	fails int
	hold  func()
}

func (f *flakyRelay) Start(ctx context.Context) error {
	f.mu.Lock()
	fail := f.fails > 0
	f.fails--
	f.mu.Unlock()
	if fail {
		return errors.New("relay did not come back within timing.restart_grace 1s")
	}
	return f.sampleRelay.Start(ctx)
}

func (f *flakyRelay) Restart(ctx context.Context) error {
	if f.hold != nil {
		f.hold()
	}
	if err := f.Stop(ctx); err != nil {
		return err
	}
	return f.Start(ctx)
}

// flakyHub starts a hub and the sample relay in front of it, whose next
// `fails` restarts fail.
func flakyHub(t *testing.T, fails int) (*Options, *flakyRelay) {
	t.Helper()
	prof := &profile.Profile{Name: "sample", NextHop: []string{freeAddr(t)}, QueueFormat: profile.QueueSample,
		Commands: profile.Commands{Queue: "(in-process)", Flush: "(in-process)", Restart: "(in-process)"},
		Timing:   history.Timing{RetryMax: seconds(0.3), QueueLifetime: seconds(60), RestartGrace: seconds(1)}}
	rel := &flakyRelay{sampleRelay: newSampleRelay(t, 200*time.Millisecond), fails: fails}
	opt := &Options{Profile: prof, Relay: rel}
	hub, err := NewHub(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	opt.Hub = hub
	rel.cfg.NextHop = []string{hub.addr()}
	if err := rel.sampleRelay.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	prof.Submit = profile.Submit{Addr: rel.addr}
	return opt, rel
}

// scheduleWithNeighbour schedules a neighbour that is running (begun,
// its message greylisted) when the first restart happens, the scenario
// whose restart fails, and a later one that begins after it, and waits
// for all three.
func scheduleWithNeighbour(t *testing.T, opt *Options, rel *flakyRelay) (neighbour, restarts, later *Job) {
	t.Helper()
	neighbour = NewJob(load(t, `name: neighbour
policy:
  greylist: {delay: 1s}
steps:
  - send: {to: [nina@rcpt.greyharness.test]}
  - wait: {for: delivered, timeout: 8s}
  - send: {to: [nora@rcpt.greyharness.test]}
`), 0)
	restarts = NewJob(load(t, `name: restarts
steps:
  - send: {to: [rita@rcpt.greyharness.test]}
  - wait: {for: drained, timeout: 5s}
  - restart: {}
`), 0)
	later = NewJob(load(t, `name: later
steps:
  - send: {to: [lou@rcpt.greyharness.test]}
  - wait: {for: drained, timeout: 5s}
  - restart: {}
`), 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	rel.hold = func() {
		if _, err := neighbour.Begun(ctx); err != nil {
			t.Errorf("the neighbour did not begin: %v", err)
		}
	}
	// Two at a time: the later one begins once one of the others ended,
	// and its restart waits for the disruptive one before it.
	Schedule(ctx, opt, []*Job{neighbour, restarts, later}, 2)
	for _, j := range []*Job{neighbour, restarts, later} {
		if _, _, err := j.Wait(ctx); ctx.Err() != nil {
			t.Fatalf("%s did not end: %v", j.Scenario.Name, err)
		}
	}
	return neighbour, restarts, later
}

// notAccepted lists the findings that blame the relay for refusing mail.
func notAccepted(res ledger.Result) []ledger.Finding {
	var out []ledger.Finding
	for _, f := range res.Findings {
		if f.Has(ledger.NotAccepted) {
			out = append(out, f)
		}
	}
	return out
}

// A relay that does not come back from a scenario's restart, not even
// when the harness tries once more, is down for the rest of the run. The
// scenario whose restart failed keeps that failure; a later scenario does
// not run and says why, naming the cause, and one running at the time ends
// its steps there, saying the same — none of them is judged not-accepted
// for submissions a stopped relay refused (seen with OpenSMTPD under load:
// one failed restart, then 13 cells of not-accepted).
func TestRelayDownAfterFailedRestartIsNamed(t *testing.T) {
	t.Parallel()
	opt, rel := flakyHub(t, 2) // the step's restart and the harness's attempt both fail
	neighbour, restarts, later := scheduleWithNeighbour(t, opt, rel)

	h, _, err := restarts.Wait(context.Background())
	if err == nil || !strings.Contains(err.Error(), "restart 1 of 1: relay did not come back") {
		t.Errorf("the scenario whose restart failed: step error %v, want its own restart failure", err)
	}
	if h != nil && h.RelayDown != "" {
		t.Errorf("the scenario whose restart failed is the cause, not a victim: relay_down %q", h.RelayDown)
	}
	cause := "relay down since restarts step 3 (unit.yaml:5): restart failed: relay did not come back"

	h, res, err := later.Wait(context.Background())
	if err == nil || !strings.Contains(err.Error(), cause) || !strings.Contains(err.Error(), "not run") {
		t.Errorf("the later scenario: error %v, want it not run, naming %q", err, cause)
	}
	if h != nil {
		if len(h.Submissions) > 0 || len(notAccepted(res)) > 0 {
			t.Errorf("the later scenario submitted to a relay that was down: %d submission(s), findings %+v", len(h.Submissions), res.Findings)
		}
	}

	h, res, err = neighbour.Wait(context.Background())
	if h == nil {
		t.Fatalf("the neighbour has no history: %v", err)
	}
	if !strings.Contains(h.RelayDown, cause) {
		t.Errorf("the neighbour's relay_down %q, want %q", h.RelayDown, cause)
	}
	if err == nil || !strings.Contains(err.Error(), cause) {
		t.Errorf("the neighbour's step error %v, want it naming %q", err, cause)
	}
	if len(h.Submissions) != 1 || len(notAccepted(res)) > 0 {
		t.Errorf("the neighbour submitted to a relay that was down: %d submission(s), findings %+v", len(h.Submissions), res.Findings)
	}
	for _, f := range res.Findings {
		if f.Failed || f.Primary != ledger.Pending || !strings.Contains(f.Why, cause) {
			t.Errorf("the neighbour's message, in the relay when it went down for good, must be pending and not judged, naming the cause: %s failed %v: %s", f.Primary, f.Failed, f.Why)
		}
	}
	var recovery *history.Fault
	for i, f := range h.Faults {
		if f.Kind == history.FaultRelayRestart && strings.Contains(f.Detail, "bring the relay back") {
			recovery = &h.Faults[i]
		}
	}
	if recovery == nil || recovery.Err == "" {
		t.Errorf("the neighbour's history lacks the harness's failed attempt to bring the relay back: %+v", h.Faults)
	}
}

// A relay that does not come back from a scenario's restart but does when
// the harness tries once more runs on: that attempt is a fault recorded
// in every running scenario's history (it touches everyone), the
// neighbour's greylisted message is delivered and passes, and the later
// scenario runs normally. The scenario whose restart failed keeps that
// failure.
func TestRelayBroughtBackAfterFailedRestart(t *testing.T) {
	t.Parallel()
	opt, rel := flakyHub(t, 1)
	neighbour, restarts, later := scheduleWithNeighbour(t, opt, rel)

	if _, _, err := restarts.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "relay did not come back") {
		t.Errorf("the scenario whose restart failed: step error %v, want its own restart failure", err)
	}
	for _, j := range []*Job{neighbour, later} {
		h, res, err := j.Wait(context.Background())
		if h == nil {
			t.Fatalf("%s: no history: %v", j.Scenario.Name, err)
		}
		if err != nil || h.RelayDown != "" || !res.Passed {
			t.Errorf("%s: error %v, relay_down %q, passed %v: the relay was back, it must run normally: %+v", j.Scenario.Name, err, h.RelayDown, res.Passed, res.Findings)
		}
	}
	h, _, _ := neighbour.Wait(context.Background())
	var failed, back bool
	for _, f := range h.Faults {
		if f.Kind != history.FaultRelayRestart {
			continue
		}
		switch {
		case strings.Contains(f.Detail, "bring the relay back") && f.Err == "":
			back = true
			if !strings.HasPrefix(f.Detail, "by neighbour restarts") {
				t.Errorf("the attempt's detail %q does not name the scenario that caused it", f.Detail)
			}
		case f.Err != "":
			failed = true
		}
	}
	if !failed || !back {
		t.Errorf("the neighbour's history must show the failed restart and the harness bringing the relay back: %+v", h.Faults)
	}
}

// Once the relay is down for good, a running scenario carries out no
// step, and one that has not begun does not begin: each names the cause.
func TestRelayDownRefusesStepsAndBeginnings(t *testing.T) {
	t.Parallel()
	opt, _ := flakyHub(t, 0)
	sc := load(t, "name: x\nsteps:\n  - send: {to: [a@rcpt.greyharness.test]}\n")
	r, err := Begin(context.Background(), opt, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	down := &RelayDownError{Scenario: "restarts", Where: "step 1 (unit.yaml:3)", Err: "boom", Back: "boom again"}
	opt.Hub.mu.Lock()
	opt.Hub.lost = down
	opt.Hub.mu.Unlock()
	want := "step 1 (unit.yaml:3): not run: " + down.Error()
	if err := r.Step(context.Background(), 0, &sc.Steps[0]); err == nil || err.Error() != want {
		t.Errorf("Step with the relay down: %v, want %q", err, want)
	}
	h, _ := r.Finish(context.Background())
	if h.RelayDown != down.Error() || h.StepError != want || len(h.Submissions) != 0 {
		t.Errorf("relay_down %q, step_error %q, %d submission(s): want the cause recorded and nothing submitted", h.RelayDown, h.StepError, len(h.Submissions))
	}
	other := load(t, "name: y\nsteps:\n  - send: {to: [b@rcpt.greyharness.test]}\n")
	if _, err := Begin(context.Background(), opt, other); err == nil || err.Error() != "not run: "+down.Error() {
		t.Errorf("Begin with the relay down: %v, want %q", err, "not run: "+down.Error())
	}
}

// A restart that failed because the run is being interrupted is no sign
// of a relay down: the harness does not stop and start it again.
func TestInterruptedRestartIsNotRecovered(t *testing.T) {
	t.Parallel()
	sc := load(t, "name: interrupted-restart\nsteps:\n  - send: {to: [a@rcpt.greyharness.test]}\n  - restart: {}\n")
	rel := &callRelay{fail: map[string]error{"restart": fmt.Errorf("relay restart: %w", context.Canceled)}}
	prof := &profile.Profile{Name: "t", Submit: profile.Submit{Addr: blackholeRelay(t)}, NextHop: []string{"127.0.0.1:0"},
		QueueFormat: profile.QueueNone, Timing: history.Timing{RetryMax: seconds(0.1), RestartGrace: seconds(0.1)}}
	ctx := context.Background()
	r, err := Begin(ctx, &Options{Profile: prof, Relay: rel}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range sc.Steps {
		r.Step(ctx, i, &sc.Steps[i])
	}
	if got := strings.Join(rel.calls, ","); got != "restart" {
		t.Errorf("relay calls %q, want restart only", got)
	}
	if lost, _ := r.hub.relayLost(); lost != nil {
		t.Errorf("relay down for good after an interrupted restart: %v", lost)
	}
}
