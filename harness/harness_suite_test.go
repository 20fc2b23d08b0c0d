package harness_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/samplerelay"
)

// Suite flags, parsed before RunSpecs (ginkgo run ./harness -- --relay=... --scenarios=...).
var (
	relayFlag     = flag.String("relay", "sample", "relay profile file, or sample[:BUG,...]")
	scenariosFlag = flag.String("scenarios", "", "comma-separated scenario files or folders (default: the embedded pack)")
	resultsFlag   = flag.String("results", "", "folder for failed scenarios' histories (default: a temp folder)")
	parallelFlag  = flag.Int("parallel", 0, "most scenarios running at the same time (0: as many as isolation allows; 1: one after another)")
)

// TestMain lets the test binary stand in for the greyharness binary when
// the sample relay profile runs it as `BIN sample-relay ...` or `BIN probe`.
func TestMain(m *testing.M) {
	if os.Getenv("GREYHARNESS_REEXEC") == "1" && len(os.Args) > 1 {
		switch os.Args[1] {
		case "sample-relay":
			os.Exit(samplerelay.Main(os.Args[2:], os.Stdout, os.Stderr))
		case "probe":
			os.Exit(harness.Probe(os.Args[2:], os.Stderr))
		case "fakemta":
			os.Exit(fakemta.Main(os.Args[2:], os.Stdout, os.Stderr))
		}
		fmt.Fprintf(os.Stderr, "unknown re-exec command %q\n", os.Args[1])
		os.Exit(2)
	}
	flag.Parse()
	os.Exit(m.Run())
}

// fromRoot resolves a relative path given to the suite: go test runs it in
// the package folder, but `ginkgo run ./harness -- --relay=ci/...` is typed
// at the module root. A path that does not exist here is taken from there.
func fromRoot(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	if _, err := os.Stat(p); err == nil {
		return p
	}
	for dir, _ := os.Getwd(); ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, p)
		}
		up := filepath.Dir(dir)
		if up == dir {
			return p // not in a module: the error names the path as given
		}
		dir = up
	}
}

// sampleOnly skips a test about the built-in sample relay and the default
// pack when the suite is aimed at another relay or other scenarios
// (ginkgo run ./harness -- --relay=ci/postfix/relay.yaml): such a run is
// about that relay, and the bug matrix alone would add minutes to it.
func sampleOnly(t *testing.T) {
	t.Helper()
	if *relayFlag != "sample" || *scenariosFlag != "" {
		t.Skipf("about the built-in sample relay and the default pack; this run targets --relay=%s --scenarios=%q", *relayFlag, *scenariosFlag)
	}
}

// endToEnd skips an end-to-end run (a whole pack against a relay and fake
// MTAs, minutes) in the -short inner loop.
func endToEnd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end run; make test (go test without -short) runs it")
	}
}

// testBin is the running test binary with the re-exec switch.
func testBin() (string, map[string]string) {
	exe, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return exe, map[string]string{"GREYHARNESS_REEXEC": "1"}
}

func TestHarness(t *testing.T) {
	endToEnd(t)
	t.Parallel() // the bug matrix runs beside it on other ports
	RegisterFailHandler(Fail)
	var paths []string
	if *scenariosFlag != "" {
		for _, p := range strings.Split(*scenariosFlag, ",") {
			paths = append(paths, fromRoot(p))
		}
	}
	scs, err := harness.LoadScenarios(paths)
	if err != nil {
		t.Fatalf("scenarios: %v", err)
	}
	bin, env := testBin()
	relayArg := *relayFlag
	if !strings.HasPrefix(relayArg, "sample") {
		relayArg = fromRoot(relayArg)
	}
	prof, cleanup, err := harness.LoadRelay(relayArg, bin, env)
	if err != nil {
		t.Fatalf("relay profile: %v", err)
	}
	t.Cleanup(cleanup)
	results := *resultsFlag
	if results == "" {
		results = t.TempDir()
	}
	s := &harness.Suite{Profile: prof, Relay: relay.New(prof, t.TempDir()), Scenarios: scs, ResultsDir: results, Progress: GinkgoWriter, Parallel: *parallelFlag}
	harness.DefineSpecs(s)
	RunSpecs(t, "greyharness: "+prof.Name)
}

func TestFromRootResolvesModuleRelativePaths(t *testing.T) {
	p := fromRoot("ci/postfix/relay.yaml") // typed at the module root; go test runs in harness/
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fromRoot(ci/postfix/relay.yaml) = %s: %v", p, err)
	}
	if got := fromRoot("harness_suite_test.go"); got != "harness_suite_test.go" {
		t.Errorf("a path that exists here stays as given, got %s", got)
	}
	if got := fromRoot("no/such/file.yaml"); got == "no/such/file.yaml" || !filepath.IsAbs(got) {
		t.Errorf("a missing path is taken from the module root, got %s", got)
	}
}
