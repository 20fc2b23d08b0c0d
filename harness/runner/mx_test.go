package runner

import (
	"slices"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// TestMXListeners: the fake MTA listens on every MX host of the profile
// only for a scenario about MX hosts; the others see one next hop, so a
// relay's failover meets a closed port instead of a second chance that
// would undo the scenario's fault.
func TestMXListeners(t *testing.T) {
	two := &profile.Profile{NextHop: []string{"127.0.0.2:2631", "127.0.0.3:2631"}}
	one := &profile.Profile{NextHop: []string{"127.0.0.1:2631"}}
	plain := &scenarios.Scenario{Name: "greylist-once"}
	needs := &scenarios.Scenario{Name: "x", DeclaredNeeds: []string{"multi-mx"}}
	withMX := &fakemta.Policy{MX: &fakemta.MX{State: fakemta.MXSplit}}
	for _, tc := range []struct {
		name string
		p    *profile.Profile
		sc   *scenarios.Scenario
		pol  *fakemta.Policy
		want []string
	}{
		{"plain scenario, two MX hosts", two, plain, &fakemta.Policy{}, two.NextHop[:1]},
		{"policy with mx", two, plain, withMX, two.NextHop},
		{"needs multi-mx", two, needs, nil, two.NextHop},
		{"one next hop", one, needs, withMX, one.NextHop},
	} {
		if got := mxListeners(tc.p, tc.sc, tc.pol); !slices.Equal(got, tc.want) {
			t.Errorf("%s: listens on %v, want %v", tc.name, got, tc.want)
		}
	}
}
