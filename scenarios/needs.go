package scenarios

import (
	"slices"

	"github.com/greyharness/greyharness/harness/profile"
)

// capabilityOrder is the order Needs lists capabilities in.
var capabilityOrder = []profile.Capability{
	profile.CapRestart, profile.CapStop, profile.CapQueue, profile.CapFlush,
	profile.CapFakeMTAControl, profile.CapDelayWarning, profile.CapMultiMX,
}

// Needs returns the profile capabilities the scenario requires: those
// declared under `needs` plus those its steps and expectations imply:
//   - each step needs what its Action's Needs says (restart: restart;
//     fakemta: fakemta-control; flush: flush; checkpoint: queue; a wait
//     for a DSN with Action: delayed: delay-warning);
//   - an expected verdict that only a queue listing can tell
//     (held-silently, stalled, lost) needs queue;
//   - an expected DSN with Action: delayed or an expected delayed-notice
//     verdict needs delay-warning.
//
// The result is in a fixed order without repeats; nil when it needs nothing.
func (s Scenario) Needs() []profile.Capability {
	want := map[profile.Capability]bool{}
	for _, n := range s.DeclaredNeeds {
		want[profile.Capability(n)] = true
	}
	for i := range s.Steps {
		if a := s.Steps[i].Action(); a != nil {
			for _, c := range a.Needs() {
				want[c] = true
			}
		}
	}
	for _, m := range s.Expect.Messages {
		switch m.Verdict {
		case "held-silently", "stalled", "lost":
			want[profile.CapQueue] = true
		case "delayed-notice":
			want[profile.CapDelayWarning] = true
		}
		if m.DSN != nil && m.DSN.Action == "delayed" {
			want[profile.CapDelayWarning] = true
		}
	}
	var out []profile.Capability
	for _, c := range capabilityOrder {
		if want[c] {
			out = append(out, c)
			delete(want, c)
		}
	}
	// Capabilities this package does not know (set by hand, not by the
	// loader) come last, sorted.
	var rest []profile.Capability
	for c := range want {
		rest = append(rest, c)
	}
	slices.Sort(rest)
	return append(out, rest...)
}
