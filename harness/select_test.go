package harness

import (
	"fmt"
	"slices"
	"strings"
	"testing"

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
