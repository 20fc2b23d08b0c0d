package scenarios

import (
	"context"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

var fakemtaKind = stepKind{
	key: "fakemta",
	decode: func(l *loader, v *yaml.Node, _ int, st *scenarioState, step *Step) {
		if s, ok := l.enum(v, "fakemta", FakeMTAActions); ok {
			step.FakeMTA = s
			l.fakemtaState(v, s, st)
		}
	},
	action: func(step *Step) Action {
		if step.FakeMTA == "" {
			return nil
		}
		return FakeMTAStep(step.FakeMTA)
	},
}

// FakeMTAStep is the step `fakemta: ACTION` (stop, start, restart,
// wipe-state): a fault of the relay's next hop.
type FakeMTAStep string

// Describe names the action.
func (a FakeMTAStep) Describe() string { return "fake MTA: " + string(a) }

// Needs fakemta-control.
func (a FakeMTAStep) Needs() []profile.Capability {
	return []profile.Capability{profile.CapFakeMTAControl}
}

// Run stops, starts, restarts the fake MTA or wipes its greylist.
func (a FakeMTAStep) Run(ctx context.Context, env Env) error {
	switch a {
	case "stop":
		return env.Fault(history.FaultFakeMTAStop, "", func() error { return env.StopFakeMTA(ctx) })
	case "start":
		return env.Fault(history.FaultFakeMTAStart, "", func() error { return env.StartFakeMTA(ctx) })
	case "restart":
		return env.Fault(history.FaultFakeMTARestart, "", func() error {
			if err := env.StopFakeMTA(ctx); err != nil {
				return err
			}
			return env.StartFakeMTA(ctx)
		})
	case "wipe-state":
		return env.Fault(history.FaultFakeMTAWipe, "", func() error { return env.WipeGreylist(ctx) })
	}
	return fmt.Errorf("unknown fakemta action %q", string(a))
}

func (l *loader) fakemtaState(v *yaml.Node, action string, st *scenarioState) {
	switch action {
	case "stop":
		if !st.fakeRunning {
			l.errorf(v, "fakemta: stop, but the fake MTA is already stopped")
		}
		st.fakeRunning = false
	case "start":
		if st.fakeRunning {
			l.errorf(v, "fakemta: start, but the fake MTA is already running (use restart)")
		}
		st.fakeRunning = true
	case "restart":
		st.fakeRunning = true
	case "wipe-state":
		if !st.fakeRunning {
			l.errorf(v, "fakemta: wipe-state needs a running fake MTA (start it first)")
		}
	}
}
