package runner

import (
	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/scenarios"
)

// Alone reports whether a scenario must run with no other beside it, and
// why: it says so (`exclusive: true`), or it does what touches every
// scenario on the relay and the fake MTA — restarts the relay, stops or
// restarts the fake MTA — or its policy (at the start or swapped in) acts
// where the fake MTA cannot tell scenarios apart: at connect, helo,
// starttls or quit (before any address is known), or on connection numbers.
//
// Flushes, policy swaps and greylist wipes do not: a flush is recorded in
// every running scenario's history, and the others touch the scenario's
// own tenant only.
func Alone(sc *scenarios.Scenario) (bool, string) {
	if sc.Exclusive {
		return true, "exclusive: true"
	}
	for i := range sc.Steps {
		st := &sc.Steps[i]
		switch {
		case st.Restart != nil:
			return true, "it restarts the relay"
		case st.FakeMTA == "stop" || st.FakeMTA == "start" || st.FakeMTA == "restart":
			return true, "it stops or restarts the fake MTA"
		}
	}
	if sc.Policy.Kind != 0 {
		if p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy); err == nil && connectionLevel(p) {
			return true, "its policy acts before any address is known or on connection numbers"
		}
	}
	for i := range sc.Steps {
		if n := sc.Steps[i].Policy; n != nil {
			if p, err := fakemta.ParsePolicyNode(sc.File, n); err == nil && connectionLevel(p) {
				return true, "a policy it swaps in acts before any address is known or on connection numbers"
			}
		}
	}
	return false, ""
}

// connectionLevel reports whether a rule of p acts where the fake MTA
// cannot attribute traffic to a tenant.
func connectionLevel(p *fakemta.Policy) bool {
	for _, r := range p.Rules {
		switch r.Match.Stage {
		case fakemta.StageConnect, fakemta.StageHelo, fakemta.StageStartTLS, fakemta.StageQuit:
			return true
		}
		if r.Match.Connection != nil {
			return true
		}
	}
	return false
}
