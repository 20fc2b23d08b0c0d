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
//   - a restart step needs restart;
//   - a fakemta step (stop, start, restart, wipe-state) needs fakemta-control;
//   - a flush step needs flush;
//   - a checkpoint step, or an expected verdict that only a queue listing
//     can tell (held-silently, stalled, lost), needs queue;
//   - a DSN with Action: delayed (waited for or expected) or an expected
//     delayed-notice verdict needs delay-warning.
//
// The result is in a fixed order without repeats; nil when it needs nothing.
func (s Scenario) Needs() []profile.Capability {
	want := map[profile.Capability]bool{}
	for _, n := range s.DeclaredNeeds {
		want[profile.Capability(n)] = true
	}
	for _, st := range s.Steps {
		switch {
		case st.Restart != nil:
			want[profile.CapRestart] = true
		case st.FakeMTA != "":
			want[profile.CapFakeMTAControl] = true
		case st.Flush:
			want[profile.CapFlush] = true
		case st.Checkpoint != nil:
			want[profile.CapQueue] = true
		case st.Wait != nil && st.Wait.For == "dsn" && st.Wait.Action == "delayed":
			want[profile.CapDelayWarning] = true
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
