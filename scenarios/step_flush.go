package scenarios

import (
	"context"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

var flushKind = stepKind{
	key: "flush",
	decode: func(l *loader, v *yaml.Node, _ int, _ *scenarioState, step *Step) {
		if b, ok := l.boolean(v, "flush"); ok {
			if !b {
				l.errorf(v, "flush must be true (leave the step out otherwise)")
			}
			step.Flush = b
		}
	},
	action: func(step *Step) Action {
		if !step.Flush {
			return nil
		}
		return FlushStep{}
	},
}

// FlushStep is the step `flush: true`: the relay retries its queue now.
type FlushStep struct{}

// Describe says the queue is flushed.
func (FlushStep) Describe() string { return "flush the relay's queue" }

// Needs flush.
func (FlushStep) Needs() []profile.Capability { return []profile.Capability{profile.CapFlush} }

// Run flushes the relay's queue, recorded as a flush fault.
func (FlushStep) Run(ctx context.Context, env Env) error {
	return env.Fault(history.FaultFlush, "", func() error { return env.FlushRelay(ctx) })
}
