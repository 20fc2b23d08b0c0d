package runner

import (
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"go.yaml.in/yaml/v3"
)

// A scenario's policy node, rendered for a remote fake MTA, is always one
// policy document the API takes: a null step policy ("policy: ~", the
// empty policy) included, which the API refuses as "null".
func TestPolicyYAMLIsOneDocumentTheAPITakes(t *testing.T) {
	for _, in := range []string{"policy: ~\n", "policy:\n", "policy: {}\n", "policy: {greylist: {delay: 1m}}\n"} {
		var doc yaml.Node
		if err := yaml.Unmarshal([]byte(in), &doc); err != nil {
			t.Fatal(err)
		}
		node := doc.Content[0].Content[1]
		out := policyYAML(node)
		if _, err := fakemta.ParsePolicy("request", out); err != nil {
			t.Errorf("%q renders as %q: %v", in, out, err)
		}
	}
	if _, err := fakemta.ParsePolicy("request", policyYAML(nil)); err != nil {
		t.Errorf("nil policy: %v", err)
	}
}
