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
// retryMax (the late-duplicate watch's length) and edit applied to the
// profile, and the history.
func finishTook(t *testing.T, sc *scenarios.Scenario, retryMax time.Duration, edit func(*profile.Profile)) (time.Duration, *history.History) {
	t.Helper()
	r, _ := beginWithSampleRelay(t, sc, 100*time.Millisecond)
	r.timing.RetryMax = history.Duration(retryMax)
	if edit != nil {
		edit(r.opt.Profile)
	}
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
	took, h := finishTook(t, sc, 30*time.Second, nil)
	if took > 15*time.Second {
		t.Errorf("Finish took %s for a scenario whose only recipient bounced: it waited out the late-duplicate watch (retry_max 30s)", took.Round(time.Millisecond))
	}
	if h.Ended.IsZero() {
		t.Error("history not ended")
	}
}

// A delivery whose final reply reached the relay (it sent a command after
// it on that connection), with no relay restart since and a queue listing
// that no longer shows the message, leaves nothing a relay would send
// again: no watch.
func TestNoWatchWhenTheRelayHadEveryReply(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: delivered
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: delivered
`)
	if took, _ := finishTook(t, sc, 30*time.Second, nil); took > 15*time.Second {
		t.Errorf("Finish took %s after a delivery the relay acknowledged: it waited out the late-duplicate watch (retry_max 30s)", took.Round(time.Millisecond))
	}
}

// A relay restart after a delivery may lose the relay's record of it (a
// relay that had not synced it sends the copy again): the whole watch.
func TestWatchAfterARestartThatFollowsADelivery(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: restart-after
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: delivered
  - restart: {}
`)
	const watch = time.Second
	r, _ := beginWithSampleRelay(t, sc, 100*time.Millisecond)
	r.timing.RetryMax = history.Duration(watch)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 2 {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The restart must come after the relay had the 250 (its QUIT), or the
	// relay may rightly send the copy again after it.
	never := func(time.Time) bool { return false }
	for !r.track.settled(never) {
		select {
		case <-r.track.wait():
		case <-ctx.Done():
			t.Fatal("the relay never sent a command after the 250")
		}
	}
	if err := r.Step(ctx, 2, &sc.Steps[2]); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	r.Finish(ctx)
	if took := time.Since(start); took < watch {
		t.Errorf("Finish took %s: less than the late-duplicate watch (retry_max %s) after a restart that followed the delivery", took.Round(time.Millisecond), watch)
	}
}

// Without a queue listing nothing says the relay let the message go: the
// whole watch.
func TestWatchWithoutAQueueListing(t *testing.T) {
	t.Parallel()
	sc := load(t, `name: no-queue
steps:
  - send: {to: [alice@rcpt.greyharness.test]}
  - wait: delivered
`)
	const watch = time.Second
	noQueue := func(p *profile.Profile) { p.Commands.Queue = "" }
	if took, _ := finishTook(t, sc, watch, noQueue); took < watch {
		t.Errorf("Finish took %s: less than the late-duplicate watch (retry_max %s) with no queue listing", took.Round(time.Millisecond), watch)
	}
}
