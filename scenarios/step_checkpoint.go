package scenarios

import (
	"context"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/profile"
)

var checkpointKind = stepKind{
	key: "checkpoint",
	decode: func(l *loader, v *yaml.Node, i int, _ *scenarioState, step *Step) {
		step.Checkpoint = l.checkpoint(v, i)
	},
	action: func(step *Step) Action {
		if step.Checkpoint == nil {
			return nil
		}
		return step.Checkpoint
	},
}

// Describe names the checkpoint.
func (c *Checkpoint) Describe() string { return "checkpoint " + c.Name }

// Needs queue: a checkpoint is judged on a queue listing.
func (c *Checkpoint) Needs() []profile.Capability { return []profile.Capability{profile.CapQueue} }

// Run takes the checkpoint's queue listing.
func (c *Checkpoint) Run(ctx context.Context, env Env) error {
	env.Checkpoint(ctx, c.Name)
	return nil
}

func (l *loader) checkpoint(v *yaml.Node, i int) *Checkpoint {
	c := &Checkpoint{}
	switch {
	case isNull(v):
	case v.Kind == yaml.ScalarNode:
		c.Name, _ = l.name(v, "checkpoint name")
	default:
		for _, kv := range l.mapping(v, "checkpoint", []string{"name"}) {
			c.Name, _ = l.name(kv.v, "checkpoint name")
		}
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("step-%d", i+1)
	}
	return c
}
