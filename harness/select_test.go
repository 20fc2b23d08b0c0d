package harness

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/scenarios"
)

func TestSelect(t *testing.T) {
	scs, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	names := func(scs []scenarios.Scenario) []string {
		var n []string
		for _, sc := range scs {
			n = append(n, sc.Name)
		}
		return n
	}
	for _, tc := range []struct {
		focus, skip, labels string
		want                []string
	}{
		{"^greylist-once$", "", "", []string{"greylist-once"}},
		{"greylist-once", "", "", []string{"greylist-once"}},
		{"^restart-", "during", "", []string{"restart-after-delivery", "restart-between-deferral-and-retry"}},
		{"", "", "smoke", []string{"plain-delivery"}},
		{"", ".", "", nil},
		{"^greylist-once$", "", "restart", nil},
		{"", "", "", names(scs)},
	} {
		got, err := Select(scs, tc.focus, tc.skip, tc.labels)
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("selects no scenario of the %d loaded: 421-after-ehlo, ", len(scs))) {
				t.Errorf("Select(%q, %q, %q) = %v, %v; want no scenario", tc.focus, tc.skip, tc.labels, names(got), err)
			}
			continue
		}
		if err != nil || !slices.Equal(names(got), tc.want) {
			t.Errorf("Select(%q, %q, %q) = %v, %v; want %v", tc.focus, tc.skip, tc.labels, names(got), err, tc.want)
		}
	}
}

// A profile's share override runs an exclusive scenario beside the
// others, with the reason; it changes nothing for one that is not
// exclusive, and nothing without the override.
func TestProfileShareOverride(t *testing.T) {
	scs, err := scenarios.LoadBytes("s.yaml", []byte("name: heavy\nexclusive: true\nsteps:\n  - send: {to: [a@rcpt.test]}\n---\nname: light\nsteps:\n  - send: {to: [a@rcpt.test]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := &Suite{Profile: &profile.Profile{Name: "p", Scenarios: map[string]profile.ScenarioOverride{
		"heavy": {Share: "its load is harmless at these timers"}, "light": {Share: "x"}}}}
	got, why := s.jobScenario(&scs[0])
	if got.Exclusive || !strings.Contains(why, "its load is harmless at these timers") || !scs[0].Exclusive {
		t.Errorf("heavy: exclusive %v, why %q (the loaded scenario itself exclusive: %v)", got.Exclusive, why, scs[0].Exclusive)
	}
	if iso, _ := runner.Isolate(got); iso != runner.Shared {
		t.Errorf("heavy with share: %s, want shared", iso)
	}
	if got, why := s.jobScenario(&scs[1]); got != &scs[1] || why != "" {
		t.Errorf("light: %p %q, want itself and no reason", got, why)
	}
	s.Profile.Scenarios = nil
	if got, why := s.jobScenario(&scs[0]); !got.Exclusive || why != "" {
		t.Errorf("heavy without the override: exclusive %v, why %q", got.Exclusive, why)
	}
}
