package runner

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/samplerelay"
	"github.com/greyharness/greyharness/scenarios"
)

func seconds(s float64) history.Duration {
	return history.Duration(time.Duration(s * float64(time.Second)))
}

func load(t *testing.T, yaml string) *scenarios.Scenario {
	t.Helper()
	scs, err := scenarios.LoadBytes("unit.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return &scs[0]
}

// TestDeadlineFromTiming: every wait's deadline derives from the profile's
// timing (and the greylist delay), or is the scenario's own timeout.
func TestDeadlineFromTiming(t *testing.T) {
	t.Parallel()
	tm := history.Timing{RetryMax: seconds(10), QueueLifetime: seconds(100), DelayWarning: seconds(50), RestartGrace: seconds(5)}
	r := &Run{timing: tm, track: newTracker()}
	r.h.GreylistDelay = seconds(2)
	s := time.Second
	for _, c := range []struct {
		w    scenarios.Wait
		want time.Duration
	}{
		{scenarios.Wait{For: "delivered", Timeout: seconds(7)}, 7 * s},
		{scenarios.Wait{For: "delivered"}, 2*s + 30*s + 5*s},
		{scenarios.Wait{For: "drained", Factor: 2}, 2*s + 20*s + 5*s},
		{scenarios.Wait{For: "deferred"}, 30*s + 5*s},
		{scenarios.Wait{For: "attempts", Attempts: 3}, 3*10*s*2 + 2*s + 5*s},
		{scenarios.Wait{For: "dsn", Action: "delayed"}, 50*s + 30*s + 5*s},
		{scenarios.Wait{For: "dsn", Action: "failed"}, 100*s + 30*s + 5*s},
		{scenarios.Wait{For: "delivered", TimeoutFrom: "queue_lifetime", Factor: 1.5}, 150*s + 5*s},
		{scenarios.Wait{For: "delivered", TimeoutFrom: "retry_max"}, 30*s + 5*s},
		{scenarios.Wait{For: "delivered", TimeoutFrom: "delay_warning", Factor: 1}, 50*s + 5*s},
	} {
		if got := r.deadline(&c.w); got != c.want {
			t.Errorf("deadline(%+v) = %s, want %s", c.w, got, c.want)
		}
	}
	// Messages still in flight add 20ms each (a loaded relay is slower).
	for _, id := range []string{"a", "b", "c"} {
		s := history.Submission{HarnessID: id, MessageID: id + "@x", Group: "g", MailFrom: "s@x", RcptTo: []string{"r@x"}}
		r.track.expect(s)
		s.Accepted = true
		r.track.submitted(s)
	}
	if got, want := r.deadline(&scenarios.Wait{For: "deferred"}), 35*s+60*time.Millisecond; got != want {
		t.Errorf("deadline with 3 pending = %s, want %s", got, want)
	}
}

// sampleRelay is the in-process sample relay (samplerelay.Run) as the
// runner's Relay: restart cancels and reruns it on the same port and
// queue, flush and queue go through its queue directory.
type sampleRelay struct {
	t      *testing.T
	cfg    samplerelay.Config
	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan error
	addr   string
	calls  []string
}

// newSampleRelay returns a sample relay, not started, retrying after
// backoff (twice that at most).
func newSampleRelay(t *testing.T, backoff time.Duration) *sampleRelay {
	s := &sampleRelay{t: t, cfg: samplerelay.Config{Listen: "127.0.0.1:0", QueueDir: filepath.Join(t.TempDir(), "q"),
		MinBackoff: backoff, MaxBackoff: 2 * backoff, QueueLifetime: 2 * time.Hour, DelayWarning: -1}}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s
}

func (s *sampleRelay) Start(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "start")
	cfg := s.cfg
	if s.addr != "" {
		cfg.Listen = s.addr
	}
	ready := make(chan string, 1)
	cfg.Ready = func(a net.Addr) { ready <- a.String() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- samplerelay.Run(ctx, cfg) }()
	select {
	case s.addr = <-ready:
	case err := <-done:
		cancel()
		return err
	}
	s.cancel, s.done = cancel, done
	return nil
}

func (s *sampleRelay) Stop(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, "stop")
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	err := <-s.done
	s.cancel = nil
	return err
}

func (s *sampleRelay) Restart(ctx context.Context) error {
	if err := s.Stop(ctx); err != nil {
		return err
	}
	return s.Start(ctx)
}

func (s *sampleRelay) Flush(context.Context) error {
	s.mu.Lock()
	s.calls = append(s.calls, "flush")
	s.mu.Unlock()
	return samplerelay.Flush(s.cfg.QueueDir, 5*time.Second)
}

func (s *sampleRelay) Queue(context.Context) history.QueueSnapshot {
	snap := history.QueueSnapshot{At: time.Now()}
	es, err := samplerelay.ListQueue(s.cfg.QueueDir, time.Now())
	if err != nil {
		snap.Err = err.Error()
	}
	for _, e := range es {
		snap.Entries = append(snap.Entries, history.QueueEntry{QueueID: e.QueueID, Sender: e.Sender, Recipients: e.Recipients,
			Arrival: e.Arrival, NextAttempt: e.NextAttempt, Reason: e.Reason, Deferred: e.Deferred, MessageID: e.MessageID, HarnessID: e.HarnessID})
	}
	return snap
}

func (s *sampleRelay) Logs() string { return "" }

// beginWithSampleRelay begins sc on an in-process fake MTA with the
// in-process sample relay in front of it.
func beginWithSampleRelay(t *testing.T, sc *scenarios.Scenario, backoff time.Duration) (*Run, *sampleRelay) {
	t.Helper()
	return beginWithSampleRelayAt(t, sc, backoff, "127.0.0.1:0")
}

// beginWithSampleRelayAt is beginWithSampleRelay with the fake MTA on next.
func beginWithSampleRelayAt(t *testing.T, sc *scenarios.Scenario, backoff time.Duration, next string) (*Run, *sampleRelay) {
	t.Helper()
	prof := &profile.Profile{Name: "sample", NextHop: []string{next}, QueueFormat: profile.QueueSample,
		Commands: profile.Commands{Queue: "(in-process)", Flush: "(in-process)", Restart: "(in-process)"},
		Timing:   history.Timing{RetryMax: seconds(0.3), QueueLifetime: seconds(60), RestartGrace: seconds(1)}}
	sr := newSampleRelay(t, backoff)
	r, err := Begin(context.Background(), &Options{Profile: prof, Relay: sr}, sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	sr.mu.Lock()
	sr.cfg.NextHop = []string{r.hub.addr()}
	sr.mu.Unlock()
	if err := sr.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	prof.Submit = profile.Submit{Addr: sr.addr}
	return r, sr
}

// TestWaitEndsOnEvents: a wait with an hour's timeout returns as soon as
// the fake MTA's journal shows the condition, not at its deadline.
func TestWaitEndsOnEvents(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: wait-events
policy:
  greylist: {delay: 300ms}
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: {for: deferred, timeout: 1h}
  - wait: {for: delivered, timeout: 1h}
`)
	r, _ := beginWithSampleRelay(t, sc, 200*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.Step(ctx, 0, &sc.Steps[0]); err != nil {
		t.Fatal(err)
	}
	for i, what := range []string{"deferred", "delivered"} {
		start := time.Now()
		if !r.wait(ctx, sc.Steps[i+1].Wait) {
			t.Fatalf("wait for %s did not hold (ctx: %v)", what, ctx.Err())
		}
		if d := time.Since(start); d > 30*time.Second {
			t.Errorf("wait for %s took %s", what, d)
		}
	}
	if !r.track.all("", waitCond(&scenarios.Wait{For: "delivered"})) {
		t.Error("the tracker does not show the message delivered after the wait returned")
	}
	h, res := r.Finish(ctx)
	if len(res.Findings) != 1 || !slices.Contains(res.Findings[0].Verdicts, ledger.Delivered) || res.Findings[0].Failed {
		t.Errorf("findings %+v, want delivered", res.Findings)
	}
	for _, f := range h.Faults {
		t.Errorf("a relay that drained needs no drain fault, got %+v", f)
	}
}

// callRelay records the order of the calls made to it.
type callRelay struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
}

func (c *callRelay) call(what string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, what)
	return c.fail[what]
}
func (c *callRelay) Start(context.Context) error   { return c.call("start") }
func (c *callRelay) Stop(context.Context) error    { return c.call("stop") }
func (c *callRelay) Restart(context.Context) error { return c.call("restart") }
func (c *callRelay) Flush(context.Context) error   { return c.call("flush") }
func (c *callRelay) Queue(context.Context) history.QueueSnapshot {
	return history.QueueSnapshot{At: time.Now(), Err: "no queue"}
}
func (c *callRelay) Logs() string { return "" }

// TestDrainFlushesThenRestarts: a relay that has not settled gets a flush,
// then a restart, each followed by another wait, before Finish judges.
func TestDrainFlushesThenRestarts(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: drain
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
`)
	rel := &callRelay{}
	prof := &profile.Profile{Name: "blackhole", Submit: profile.Submit{Addr: blackholeRelay(t)}, NextHop: []string{"127.0.0.1:0"},
		QueueFormat: profile.QueueNone, Commands: profile.Commands{Flush: "x", Restart: "x"},
		Timing: history.Timing{RetryMax: seconds(0.1), RestartGrace: seconds(0.1), QueueLifetime: seconds(10)}}
	ctx := context.Background()
	r, err := Begin(ctx, &Options{Profile: prof, Relay: rel}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Step(ctx, 0, &sc.Steps[0]); err != nil {
		t.Fatal(err)
	}
	h, res := r.Finish(ctx)
	if got := strings.Join(rel.calls, ","); got != "flush,restart" {
		t.Errorf("relay calls %q, want flush,restart", got)
	}
	var faults []string
	for _, f := range h.Faults {
		faults = append(faults, string(f.Kind)+":"+f.Detail)
	}
	if got, want := strings.Join(faults, ","), string(history.FaultFlush)+":drain,"+string(history.FaultRelayRestart)+":drain"; got != want {
		t.Errorf("faults %q, want %q", got, want)
	}
	if len(res.Findings) != 1 || !res.Findings[0].Failed {
		t.Errorf("a message the relay swallowed must fail: findings %+v", res.Findings)
	}
}

// TestDrainStopsAfterFlushThatDrains: a relay whose retry is an hour away
// delivers when flushed; that is enough, it is not restarted.
func TestDrainStopsAfterFlushThatDrains(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: drain-flush
policy:
  greylist: {delay: 300ms}
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: {for: deferred, timeout: 1h}
`)
	r, sr := beginWithSampleRelay(t, sc, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range sc.Steps {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	h, res := r.Finish(ctx)
	if got := strings.Join(sr.calls, ","); got != "start,flush" {
		t.Errorf("relay calls %q, want start,flush (no restart)", got)
	}
	if len(h.Faults) != 1 || h.Faults[0].Kind != history.FaultFlush || h.Faults[0].Detail != "drain" {
		t.Errorf("faults %+v, want the drain's flush", h.Faults)
	}
	// Delivered after the flush; the ledger also calls the wait for it
	// stalled: it was visible and untried past its retry deadline.
	if len(res.Findings) != 1 || !slices.Contains(res.Findings[0].Verdicts, ledger.Delivered) {
		t.Errorf("findings %+v, want delivered after the flush", res.Findings)
	}
}

// TestStepErrorRecordedWithFileLine: a step the harness could not carry
// out is returned and recorded once as "step N (file:line): error", the
// fault with its error, and the history is still judged.
func TestStepErrorRecordedWithFileLine(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: step-error
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - restart: {times: 2}
  - flush: true
`)
	rel := &callRelay{fail: map[string]error{"restart": errors.New("boom")}}
	prof := &profile.Profile{Name: "failing", Submit: profile.Submit{Addr: blackholeRelay(t)}, NextHop: []string{"127.0.0.1:0"},
		QueueFormat: profile.QueueNone, Timing: history.Timing{RetryMax: seconds(0.1), RestartGrace: seconds(0.1)}}
	ctx, cancel := context.WithCancel(context.Background())
	r, err := Begin(ctx, &Options{Profile: prof, Relay: rel}, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Step(ctx, 0, &sc.Steps[0]); err != nil {
		t.Fatal(err)
	}
	err = r.Step(ctx, 1, &sc.Steps[1])
	want := "step 2 (unit.yaml:4): restart 1 of 2: boom"
	if err == nil || err.Error() != want {
		t.Fatalf("step error %v, want %q", err, want)
	}
	r.StepFailed("a later failure")
	if got := r.StepError(); got != want {
		t.Errorf("StepError() = %q, want the first one, %q", got, want)
	}
	cancel() // judge at once, as an interrupted run does
	h, res := r.Finish(ctx)
	if h.StepError != want {
		t.Errorf("history step error %q, want %q", h.StepError, want)
	}
	// The failed restart, then the harness's one attempt to bring the
	// relay back for the others (stop, start), which worked.
	if len(h.Faults) != 2 || h.Faults[0].Kind != history.FaultRelayRestart || h.Faults[0].Err != "boom" || h.Faults[0].Detail != "1 of 2" ||
		h.Faults[1].Kind != history.FaultRelayRestart || h.Faults[1].Err != "" || !strings.HasPrefix(h.Faults[1].Detail, "recovery: ") {
		t.Errorf("faults %+v, want the one failed restart and the recovery", h.Faults)
	}
	if len(res.Findings) != 1 {
		t.Errorf("findings %+v, want the accepted message judged", res.Findings)
	}
	if got := strings.Join(rel.calls, ","); got != "restart,stop,start" {
		t.Errorf("relay calls %q, want restart,stop,start: the second restart must not run", got)
	}
}

// TestInterruptedWaitIsTheFailedStep: a wait ended by its context (Ctrl-C,
// a spec timeout) did not time out: it is the step that failed, named as
// such, and not "the next step did not run" (seen in CI: the job recorded
// "step 3 and after not run" while the interrupt hit step 2's wait).
func TestInterruptedWaitIsTheFailedStep(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: interrupted-wait
policy:
  rules:
    - match: {stage: rcpt}
      reply: "451 4.7.1 not now"
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: {for: delivered, timeout: 1h}
  - send: {to: [bob@rcpt.greyharness.test]}
`)
	r, _ := beginWithSampleRelay(t, sc, 200*time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := r.Step(ctx, 0, &sc.Steps[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Step(ctx, 1, &sc.Steps[1]) }()
	// Cancel once the wait has seen the first deferral: it is waiting.
	if !r.wait(context.Background(), &scenarios.Wait{For: "deferred", Timeout: seconds(60)}) {
		t.Fatal("no deferral seen")
	}
	cancel()
	err := <-done
	if err == nil || !strings.HasPrefix(err.Error(), "step 2 (unit.yaml:8): ") || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("interrupted wait returned %v, want step 2 interrupted", err)
	}
	if got := r.StepError(); got != err.Error() {
		t.Errorf("StepError() = %q, want %q", got, err.Error())
	}
}
