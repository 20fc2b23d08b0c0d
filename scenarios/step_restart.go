package scenarios

import (
	"context"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

var restartKind = stepKind{
	key: "restart",
	decode: func(l *loader, v *yaml.Node, _ int, st *scenarioState, step *Step) {
		step.Restart = l.restart(v, st)
	},
	action: func(step *Step) Action {
		if step.Restart == nil {
			return nil
		}
		return step.Restart
	},
}

// Describe says how often and when the relay restarts.
func (rs *Restart) Describe() string {
	t := max(rs.Times, 1)
	s := "restart the relay"
	if t > 1 {
		s = fmt.Sprintf("restart the relay %d times in a row", t)
	}
	if rs.When != "" && rs.When != "now" {
		s += " " + rs.When
	}
	return s
}

// Needs restart.
func (rs *Restart) Needs() []profile.Capability { return []profile.Capability{profile.CapRestart} }

// Run waits for the moment When names (at most three retry intervals plus
// the restart grace) and its turn among the scenarios that restart the
// relay, then restarts the relay Times times in a row.
func (rs *Restart) Run(ctx context.Context, env Env) error {
	t := env.Timing()
	switch rs.When {
	case "after-deferral":
		until := time.Now().Add(t.RetryMax.D()*3 + t.RestartGrace.D()) // as runner.RestartDeadline
		if !env.AwaitDeferral(ctx, until) {
			env.Progress("no deferral seen before the restart")
		}
	case "during-data":
		until := time.Now().Add(t.RetryMax.D()*3 + t.RestartGrace.D()) // as runner.RestartDeadline
		if !env.AwaitDataHeld(ctx, until) {
			env.Progress("the fake MTA held no DATA phase open before the restart")
		}
	}
	if err := env.RestartTurn(ctx, rs.When == "after-deferral" || rs.When == "during-data"); err != nil {
		return fmt.Errorf("waiting for its turn to restart: %w", err)
	}
	times := max(rs.Times, 1)
	for i := range times {
		err := env.Fault(history.FaultRelayRestart, fmt.Sprintf("%d of %d", i+1, times), func() error {
			return env.RestartRelay(ctx)
		})
		if err != nil {
			return fmt.Errorf("restart %d of %d: %w", i+1, times, err) // (the relay's log is in the results folder)
		}
	}
	return nil
}

func (l *loader) restart(v *yaml.Node, st *scenarioState) *Restart {
	r := &Restart{}
	if isNull(v) {
		return r
	}
	for _, kv := range l.mapping(v, "restart", []string{"times", "when"}) {
		switch kv.key {
		case "times":
			r.Times, _ = l.integer(kv.v, "restart times", 1, MaxRestartTimes)
		case "when":
			r.When, _ = l.enum(kv.v, "restart when", RestartWhens)
			if r.When == "during-data" && st.policyOK && !holdsData(st.policy) {
				l.errorf(kv.v, "restart when: during-data waits until the fake MTA holds a DATA phase open: "+
					"the policy in effect needs a rule with delay at stage data or eod")
			}
		}
	}
	return r
}

// holdsData reports whether p has a delay (tarpit) rule at stage data or eod.
func holdsData(p *fakemta.Policy) bool {
	for _, r := range p.Rules {
		if r.Action == fakemta.ActionDelay && (r.Match.Stage == fakemta.StageData || r.Match.Stage == fakemta.StageEOD) {
			return true
		}
	}
	return false
}
