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
