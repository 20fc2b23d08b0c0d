package scenarios

import (
	"context"
	"fmt"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

var policyKind = stepKind{
	key: "policy",
	decode: func(l *loader, v *yaml.Node, _ int, st *scenarioState, step *Step) {
		step.Policy = v
		if isNull(v) {
			st.policy, st.policyOK = &fakemta.Policy{}, true
		} else {
			st.policy, st.policyOK = l.policy(v)
		}
	},
	action: func(step *Step) Action {
		if step.Policy == nil {
			return nil
		}
		return PolicyStep{Node: step.Policy, Line: step.Line}
	},
}

// PolicyStep is the step `policy: {...}`: it swaps the fake MTA's policy.
type PolicyStep struct {
	Node *yaml.Node // the new policy, in the fakemta policy format
	Line int        // the step's line, for the fault's detail
}

// Describe says the policy changes.
func (PolicyStep) Describe() string { return "swap the fake MTA policy" }

// Needs nothing: the fake MTA takes a policy in-process and by its API.
func (PolicyStep) Needs() []profile.Capability { return nil }

// Run parses the policy (errors carry the scenario file's positions) and
// installs it, recorded as a policy-swap fault.
func (p PolicyStep) Run(ctx context.Context, env Env) error {
	pol, err := fakemta.ParsePolicyNode(env.File(), p.Node)
	if err != nil {
		return err
	}
	return env.Fault(history.FaultPolicySwap, fmt.Sprintf("line %d", p.Line), func() error {
		return env.SetPolicy(ctx, pol, p.Node)
	})
}
