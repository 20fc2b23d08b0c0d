package scenarios

import (
	"context"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/traffic"
)

// Action is one step kind, in the way etcd's robustness failpoints are:
// each kind is a type in its own file (step_KIND.go) that says what it
// does, which relay capabilities it needs, and how it runs against an
// Env. The loader decodes it from YAML by its entry in stepKinds.
type Action interface {
	// Describe says what the step does, for spec names and progress lines.
	Describe() string
	// Needs lists the profile capabilities the step cannot run without.
	Needs() []profile.Capability
	// Run carries the step out. It returns an error only when the harness
	// could not do what the step says; verdicts are the ledger's business.
	Run(ctx context.Context, env Env) error
}

// Env is what a running step may do: the runner (harness/runner)
// implements it over the relay under test, the fake MTA and the history.
type Env interface {
	// File is the scenario's file, for policy errors.
	File() string
	// Timing is the relay profile's timing, from which deadlines derive.
	Timing() history.Timing
	// Progress prints a live progress line.
	Progress(format string, args ...any)
	// Fault runs f and records it in the history as a fault of kind.
	Fault(kind history.FaultKind, detail string, f func() error) error

	// Submit submits msgs to the relay (concurrency conversations at once)
	// and records every submission; results come back in msgs' order.
	Submit(ctx context.Context, msgs []*traffic.Message, concurrency int) []history.Submission
	// LastSubmitted returns the messages of the previous send step.
	LastSubmitted() []*traffic.Message

	// Wait blocks until w holds or its timing-derived deadline passes;
	// it reports whether w holds.
	Wait(ctx context.Context, w *Wait) bool
	// AwaitDeferral waits until the fake MTA deferred some attempt.
	AwaitDeferral(ctx context.Context, until time.Time) bool
	// AwaitDataHeld waits until the fake MTA holds a DATA phase open.
	AwaitDataHeld(ctx context.Context, until time.Time) bool
	// Checkpoint takes a queue listing and marks a checkpoint on it.
	Checkpoint(ctx context.Context, name string)

	// RestartTurn waits until the scenario may restart the relay: no
	// neighbour's messages would be disturbed (timed: the restart is due
	// at a moment of its own, after AwaitDeferral or AwaitDataHeld).
	RestartTurn(ctx context.Context, timed bool) error
	// RestartRelay restarts the relay under test (bounded by its timing).
	RestartRelay(ctx context.Context) error
	// FlushRelay asks the relay to retry its whole queue now.
	FlushRelay(ctx context.Context) error

	// StartFakeMTA, StopFakeMTA, WipeGreylist and SetPolicy drive the
	// fake MTA (in-process or remote).
	StartFakeMTA(ctx context.Context) error
	StopFakeMTA(ctx context.Context) error
	WipeGreylist(ctx context.Context) error
	SetPolicy(ctx context.Context, p *fakemta.Policy, node *yaml.Node) error
}

// stepKind registers a step kind: its YAML key, how the loader decodes it
// into a Step, and how a Step holding it yields its Action.
type stepKind struct {
	key    string
	decode func(l *loader, v *yaml.Node, i int, st *scenarioState, step *Step)
	action func(step *Step) Action // nil when step is not of this kind
}

// stepKinds are the step kinds, in the order the docs and errors list
// them. A new kind is a file step_KIND.go (its type, decode, Describe,
// Needs, Run; decode sets Step.Other, action may be nil) and one line
// here. The first kinds keep typed fields in Step, which tests read.
var stepKinds = []stepKind{
	sendKind,
	waitKind,
	restartKind,
	fakemtaKind,
	policyKind,
	flushKind,
	checkpointKind,
}

// stepKeys are the YAML keys of the step kinds.
var stepKeys = func() []string {
	keys := make([]string, len(stepKinds))
	for i, k := range stepKinds {
		keys[i] = k.key
	}
	return keys
}()

// Action returns the step's action, nil when no action field is set.
func (s *Step) Action() Action {
	if s.Other != nil {
		return s.Other
	}
	for _, k := range stepKinds {
		if k.action == nil {
			continue
		}
		if a := k.action(s); a != nil {
			return a
		}
	}
	return nil
}

// Describe says what the step does, for spec names and progress lines.
func (s *Step) Describe() string {
	if a := s.Action(); a != nil {
		return a.Describe()
	}
	return "?"
}

func (l *loader) step(n *yaml.Node, i int, st *scenarioState) Step {
	step := Step{Line: n.Line, Col: n.Column}
	kvs := l.mapping(n, "step", stepKeys)
	if n.Kind != yaml.MappingNode {
		return step
	}
	for _, kv := range kvs {
		if kv.key == "send" {
			st.mentionsSend = true
		}
	}
	switch len(kvs) {
	case 0:
		if len(n.Content) == 0 {
			l.errorf(n, "step has no action (one of: %s)", strings.Join(stepKeys, ", "))
		}
		return step
	case 1:
	default:
		var names []string
		for _, kv := range kvs {
			names = append(names, kv.key)
		}
		l.errorf(n, "step has %d actions (%s): give exactly one per step", len(kvs), strings.Join(names, ", "))
		return step
	}
	kv := kvs[0]
	for _, k := range stepKinds {
		if k.key == kv.key {
			k.decode(l, kv.v, i, st, &step)
		}
	}
	return step
}
