package runner

import (
	"slices"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// Isolation is how a scenario shares the relay and the fake MTA.
type Isolation int

const (
	// Shared scenarios run beside any other but an Alone one: they send,
	// wait, flush, checkpoint, swap their policy and wipe their greylist
	// state, all of which the fake MTA keeps to their tenant (a flush is
	// recorded in every running scenario's history).
	Shared Isolation = iota
	// Disruptive scenarios restart the relay: they run beside Shared ones
	// and each other, their restarts taking turns (turns); a restart waits
	// until no submission is under way and is recorded in the history of
	// every scenario running, where the ledger judges it as an outage of
	// its own.
	Disruptive
	// Alone scenarios run with no other beside them: they say so
	// (`exclusive: true`), they stop the fake MTA (an outage as long as
	// their steps make it, which outlasts a short queue lifetime: a
	// neighbour's message would bounce), their policy acts where the
	// fake MTA cannot tell scenarios apart — at connect, helo, starttls or
	// quit (before any address is known), or on connection numbers — or
	// they are about several MX hosts (AboutMX): the backup MX hosts
	// answer only while such a scenario runs. With lanes in the profile,
	// one alone only for its connection-level policy or its fake-MTA
	// stop and start (Laneable) holds a lane instead and runs as
	// LaneIsolation says: Isolate says what it would be without lanes.
	Alone
)

func (i Isolation) String() string {
	switch i {
	case Disruptive:
		return "disruptive"
	case Alone:
		return "alone"
	}
	return "shared"
}

// Isolate says how a scenario shares the relay and the fake MTA, and why.
func Isolate(sc *scenarios.Scenario) (Isolation, string) {
	return isolate(sc, true)
}

// AloneGroupMX is the group of the scenarios alone only because they are
// about several MX hosts (AloneGroup).
const AloneGroupMX = "multi-mx"

// AloneGroup names the group an Alone scenario runs with: the members of
// one group hold the relay and the fake MTA together, nothing else beside
// them; "" when it runs with no other at all. The scenarios alone only
// because they are about several MX hosts are a group: what makes them
// alone is that the backup MX hosts answer while they run, which they all
// need; their policies (greylist state per MX, rules) are each its own
// tenant's, and none acts where the fake MTA cannot tell tenants apart. One
// that is also alone for another reason (exclusive, a connection-level
// policy, a fake MTA stop, a relay restart) stays alone.
func AloneGroup(sc *scenarios.Scenario) string {
	if !AboutMX(sc) {
		return ""
	}
	if iso, _ := isolate(sc, false); iso != Shared {
		return ""
	}
	return AloneGroupMX
}

// FreeAfter reports whether a scenario that runs alone touches no one
// after step i (0-based) has been carried out: it is alone only because it
// stops or starts the fake MTA, none of the later steps does, and the fake
// MTA is up by then (running says whether it is). Its later steps, drain
// and watch need no more than a shared scenario's, so the next scenarios
// may start.
func FreeAfter(sc *scenarios.Scenario, i int, running bool) bool {
	if !running {
		return false
	}
	if iso, _ := isolate(sc, true); iso != Alone || AboutMX(sc) || sc.Exclusive {
		return false
	}
	for k := range sc.Steps {
		f := sc.Steps[k].FakeMTA
		control := f == "stop" || f == "start" || f == "restart"
		if control && k > i {
			return false
		}
		if sc.Steps[k].Restart != nil {
			return false
		}
	}
	// Without its fake MTA steps, it would share the run.
	rest := *sc
	rest.Steps = nil
	for k := range sc.Steps {
		if f := sc.Steps[k].FakeMTA; f != "stop" && f != "start" && f != "restart" {
			rest.Steps = append(rest.Steps, sc.Steps[k])
		}
	}
	iso, _ := isolate(&rest, true)
	return iso == Shared
}

// Laneable reports whether a scenario runs alone only because its policy
// (or one it swaps in) acts where the fake MTA cannot tell tenants apart
// (at connect, helo, starttls or quit, or on connection numbers), or
// because it stops and starts the fake MTA with no greylist in any policy
// of its (a stop of the whole fake MTA is also a greylist-persistence
// fault; a lane's is not). With lanes in the profile (and the in-process
// fake MTA) such a scenario holds a lane instead: the relay routes its
// mail, and its DSNs, to the lane's address only, so every connection
// there is its own, the fake MTA gives it that lane's connection-level
// stages, and its `fakemta: stop` and `start` close and reopen that lane's
// listener only. It then runs beside the others as LaneIsolation says. An
// exclusive one, one about MX hosts, one that restarts the fake MTA, or
// one that stops it with a greylist stays alone.
func Laneable(sc *scenarios.Scenario) bool {
	if iso, _ := isolate(sc, true); iso != Alone || sc.Exclusive || AboutMX(sc) {
		return false
	}
	for i := range sc.Steps {
		if sc.Steps[i].FakeMTA == "restart" {
			return false
		}
	}
	return !laneOutage(sc) || !greylists(sc)
}

// laneOutage reports whether a scenario stops or starts the fake MTA: on
// a lane, its lane's listener.
func laneOutage(sc *scenarios.Scenario) bool {
	for i := range sc.Steps {
		if f := sc.Steps[i].FakeMTA; f == "stop" || f == "start" {
			return true
		}
	}
	return false
}

// greylists reports whether a policy of the scenario (at the start or
// swapped in) has a greylist block.
func greylists(sc *scenarios.Scenario) bool {
	if sc.Policy.Kind != 0 {
		if p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy); err != nil || p.Greylist != nil {
			return true
		}
	}
	for i := range sc.Steps {
		if n := sc.Steps[i].Policy; n != nil {
			if p, err := fakemta.ParsePolicyNode(sc.File, n); err != nil || p.Greylist != nil {
				return true
			}
		}
	}
	return false
}

// laneWhy is why a Laneable scenario holds a lane, from why it would be alone.
func laneWhy(sc *scenarios.Scenario, why string) string {
	if laneOutage(sc) {
		return why + "; on its lane its fakemta stop and start close and reopen only the lane's listener"
	}
	return why
}

// LaneIsolation is how a Laneable scenario holding a lane shares the run:
// Disruptive when it restarts the relay, else Shared.
func LaneIsolation(sc *scenarios.Scenario) Isolation {
	for i := range sc.Steps {
		if sc.Steps[i].Restart != nil {
			return Disruptive
		}
	}
	return Shared
}

// isolate is Isolate; mx says whether being about MX hosts counts.
func isolate(sc *scenarios.Scenario, mx bool) (Isolation, string) {
	if sc.Exclusive {
		return Alone, "exclusive: true"
	}
	if mx && AboutMX(sc) {
		return Alone, "it is about several MX hosts: the fake MTA answers on MX 2 and on only while it runs (beside other such scenarios only)"
	}
	if sc.Policy.Kind != 0 {
		if p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy); err == nil && connectionLevel(p) {
			return Alone, "its policy acts before any address is known or on connection numbers"
		}
	}
	for i := range sc.Steps {
		if n := sc.Steps[i].Policy; n != nil {
			if p, err := fakemta.ParsePolicyNode(sc.File, n); err == nil && connectionLevel(p) {
				return Alone, "a policy it swaps in acts before any address is known or on connection numbers"
			}
		}
	}
	for i := range sc.Steps {
		if f := sc.Steps[i].FakeMTA; f == "stop" || f == "start" || f == "restart" {
			return Alone, "it stops or restarts the fake MTA"
		}
	}
	for i := range sc.Steps {
		if sc.Steps[i].Restart != nil {
			return Disruptive, "it restarts the relay"
		}
	}
	return Shared, ""
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

// AboutMX reports whether a scenario works with several MX hosts: its
// policy (or one it swaps in) has mx, or it needs multi-mx. Only such a
// scenario has the fake MTA listening on every next hop of the profile;
// the others see the first only, so a relay that tries its next MX after
// a 4xx meets a closed port and must retry later, as with one next hop:
// each scenario keeps the meaning it was written with (a fault on
// attempt 1 is not undone by attempt 2 at the backup MX a moment later).
//
// A closed port cannot be a tenant's alone (at connect the fake MTA does
// not know whose traffic it is, and a 4xx from MX 2 would be an attempt
// of its own, counted and judged), so such a scenario runs alone, and
// MX 2 and on are open only while it holds the relay and the fake MTA.
func AboutMX(sc *scenarios.Scenario) bool {
	if slices.Contains(sc.Needs(), profile.CapMultiMX) {
		return true
	}
	if sc.Policy.Kind != 0 {
		if p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy); err == nil && p.MX != nil {
			return true
		}
	}
	for i := range sc.Steps {
		if n := sc.Steps[i].Policy; n != nil {
			if p, err := fakemta.ParsePolicyNode(sc.File, n); err == nil && p.MX != nil {
				return true
			}
		}
	}
	return false
}
