package runner

import (
	"context"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
)

// FakeMTA is a fake MTA driven whole, for one scenario at a time (the
// remote one by its API implements it). Runs share theirs through a Hub,
// as tenants.
type FakeMTA interface {
	// Start starts it with the policy last set and delivers every journal
	// event from then on to sink, in order, until Stop.
	Start(ctx context.Context, sink func(fakemta.Event)) error
	// Stop stops it; when Stop returns every event has reached sink.
	// Stopping a stopped fake MTA does nothing.
	Stop(ctx context.Context) error
	// SetPolicy replaces the policy, now if running, and for the next Start.
	SetPolicy(ctx context.Context, p *fakemta.Policy, node *yaml.Node) error
	// WipeGreylist forgets every greylist triplet.
	WipeGreylist(ctx context.Context) error
}

var _ FakeMTA = (*remoteFakeMTA)(nil)
