package greyharness_test

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/greyharness/greyharness/"

// layers states the module's layers, leaf first (docs/architecture.md).
// A package may import only packages of a strictly lower layer: so two
// packages of one layer never import each other, the systems (the fake MTA
// and the sample relay under test) import nothing of the harness, and the
// run's record (history, ledger, report) knows nothing of traffic or
// relays. A new package must be given a layer here.
var layers = [][]string{
	{"internal/inputfile", "internal/yamlcheck", "fakemta/dsn", "queuelist"}, // leaf data and helpers
	{"fakemta/record"},                   // journal records
	{"fakemta", "samplerelay"},           // the fake MTA; the system under test
	{"harness/history"},                  // what happened in a run
	{"harness/ledger"},                   // verdicts
	{"harness/profile"},                  // relay profiles (their expected outcomes name verdicts)
	{"harness/report", "harness/queue"},  // reports; queue listings
	{"harness/relay", "harness/traffic"}, // relays; traffic and faults
	{"scenarios"},
	{"harness/runner"},
	{"harness"},
	{"cmd/greyharness", "fakemta/bench"},
}

// pure packages hold the record of a run: none may depend, even indirectly,
// on the fake MTA's server or on net/http.
var pure = []string{"fakemta/record", "harness/history", "harness/ledger", "harness/report"}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func listPackages(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json=ImportPath,Imports,Deps", "./...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestLayers fails when a package imports a package of its own or a higher
// layer, or a package of the module has no layer.
func TestLayers(t *testing.T) {
	rank := map[string]int{}
	for i, l := range layers {
		for _, p := range l {
			rank[p] = i
		}
	}
	for _, p := range listPackages(t) {
		name, ok := strings.CutPrefix(p.ImportPath, module)
		if !ok {
			continue // the module root holds only this test
		}
		r, ok := rank[name]
		if !ok {
			t.Errorf("%s has no layer: add it to layers in layers_test.go and docs/architecture.md", name)
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			if dr, ok := rank[dep]; ok && dr >= r {
				t.Errorf("%s (layer %d) imports %s (layer %d): imports must point to a lower layer", name, r, dep, dr)
			}
		}
		for _, pp := range pure {
			if name != pp {
				continue
			}
			for _, d := range p.Deps {
				if d == module+"fakemta" || d == "net/http" {
					t.Errorf("%s depends on %s: the record of a run must not pull in the server", name, d)
				}
			}
		}
	}
}
