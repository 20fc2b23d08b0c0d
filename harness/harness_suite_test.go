package harness_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/samplerelay"
)

// Suite flags, parsed before RunSpecs (ginkgo run ./harness -- --relay=... --scenarios=...).
var (
	relayFlag     = flag.String("relay", "sample", "relay profile file, or sample[:BUG,...]")
	scenariosFlag = flag.String("scenarios", "", "comma-separated scenario files or folders (default: the embedded pack)")
	resultsFlag   = flag.String("results", "", "folder for failed scenarios' histories (default: a temp folder)")
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
		}
		fmt.Fprintf(os.Stderr, "unknown re-exec command %q\n", os.Args[1])
		os.Exit(2)
	}
	flag.Parse()
	os.Exit(m.Run())
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
	t.Parallel() // the bug matrix runs beside it on other ports
	RegisterFailHandler(Fail)
	var paths []string
	if *scenariosFlag != "" {
		paths = strings.Split(*scenariosFlag, ",")
	}
	scs, err := harness.LoadScenarios(paths)
	if err != nil {
		t.Fatalf("scenarios: %v", err)
	}
	bin, env := testBin()
	prof, cleanup, err := harness.LoadRelay(*relayFlag, bin, env)
	if err != nil {
		t.Fatalf("relay profile: %v", err)
	}
	t.Cleanup(cleanup)
	results := *resultsFlag
	if results == "" {
		results = t.TempDir()
	}
	s := &harness.Suite{Profile: prof, Relay: relay.New(prof, t.TempDir()), Scenarios: scs, ResultsDir: results, Progress: GinkgoWriter}
	harness.DefineSpecs(s)
	RunSpecs(t, "greyharness: "+prof.Name)
}
