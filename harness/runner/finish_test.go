package runner

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// stubRelay is a relay under test with nothing to control (no queue, no
// flush, no restart commands in the profile).
type stubRelay struct{}

func (stubRelay) Start(context.Context) error   { return nil }
func (stubRelay) Stop(context.Context) error    { return nil }
func (stubRelay) Restart(context.Context) error { return nil }
func (stubRelay) Flush(context.Context) error   { return nil }
func (stubRelay) Queue(context.Context) history.QueueSnapshot {
	return history.QueueSnapshot{At: time.Now(), Err: "no queue"}
}
func (stubRelay) Logs() string { return "" }

// A scenario whose send step was refused has nothing in flight: judging it
// must not wait out the drain deadlines first.
func TestFinishWithNothingAcceptedDoesNotWait(t *testing.T) {
	scs, err := scenarios.LoadBytes("refused.yaml", []byte(`name: refused
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
`))
	if err != nil {
		t.Fatal(err)
	}
	prof := &profile.Profile{Name: "refusing", Submit: profile.Submit{Addr: refusingRelay(t)}, NextHop: []string{"127.0.0.1:0"},
		QueueFormat: profile.QueueNone, Timing: history.Timing{RetryMax: history.Duration(20 * time.Second), RestartGrace: history.Duration(10 * time.Second)}}
	ctx := context.Background()
	r, err := Begin(ctx, &Options{Profile: prof, Relay: stubRelay{}}, &scs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Step(ctx, 0, &scs[0].Steps[0]); err == nil || !strings.Contains(err.Error(), "550 5.7.1 relay access denied") {
		t.Fatalf("step error %v: want the refusal", err)
	}
	start := time.Now()
	h, res := r.Finish(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Finish took %s with nothing accepted (drain deadlines waited out)", d.Round(time.Millisecond))
	}
	if !strings.Contains(h.StepError, "step 1") || len(res.Findings) != 1 || res.Findings[0].Primary != "not-accepted" || !res.Findings[0].Failed {
		t.Errorf("step error %q findings %+v", h.StepError, res.Findings)
	}
}

// finishTook begins sc with the in-process sample relay, runs its steps,
// and returns how long Finish took with the profile's retry_max set to
// retryMax (the late-duplicate watch's length), and the findings.
func finishTook(t *testing.T, sc *scenarios.Scenario, retryMax time.Duration) (time.Duration, *history.History) {
	t.Helper()
	r, _ := beginWithSampleRelay(t, sc, 100*time.Millisecond)
	r.timing.RetryMax = history.Duration(retryMax)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i := range sc.Steps {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	h, _ := r.Finish(ctx)
	return time.Since(start), h
}

// A scenario whose every recipient bounced, none ever reached by a body,
// has nothing a relay could deliver twice: it ends without the
// late-duplicate watch (which would add retry_max to the run).
func TestNoWatchWhenNothingReachedARecipient(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: all-bounced
policy:
  rules:
    - match: {stage: rcpt, rcpt: "*@gone.greyharness.test"}
      reply: "550 5.1.1 no such user"
steps:
  - send: {to: [oscar@gone.greyharness.test]}
  - wait: {for: dsn, action: failed, timeout: 1m}
`)
	took, h := finishTook(t, sc, 30*time.Second)
	if took > 15*time.Second {
		t.Errorf("Finish took %s for a scenario whose only recipient bounced: it waited out the late-duplicate watch (retry_max 30s)", took.Round(time.Millisecond))
	}
	if h.Ended.IsZero() {
		t.Error("history not ended")
	}
}

// A scenario with a delivered message keeps the whole watch: its relay
// could send that message again within retry_max.
func TestWatchAfterADelivery(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: delivered
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: delivered
`)
	const watch = 2 * time.Second
	if took, _ := finishTook(t, sc, watch); took < watch {
		t.Errorf("Finish took %s: less than the late-duplicate watch (retry_max %s) after a delivery", took.Round(time.Millisecond), watch)
	}
}
