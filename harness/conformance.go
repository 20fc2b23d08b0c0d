package harness

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/greyharness/greyharness/harness/report"
)

// Conformance is `greyharness conformance [--out FILE] RELAY.json...`: the
// conformance matrix (markdown) of the relays' `greyharness run --json`
// files, each named by its file (postfix.json is relay postfix), with
// RELAY.wall (seconds) and RELAY.args (a reduced set) beside it when present.
func Conformance(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("greyharness conformance", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the matrix here (default: stdout)")
	if err := fs.Parse(args); err != nil {
		return ExitBadInput
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "greyharness conformance: give the relays' greyharness run --json files")
		return ExitBadInput
	}
	var runs []report.RelayRun
	for _, p := range fs.Args() {
		r, err := report.LoadRelayRun(p)
		if err != nil {
			fmt.Fprintf(stderr, "greyharness conformance: %v\n", err)
			return ExitBadInput
		}
		runs = append(runs, r)
	}
	var b bytes.Buffer
	if err := report.Conformance(&b, runs, time.Now()); err != nil {
		fmt.Fprintln(stderr, err)
		return ExitBadInput
	}
	if *out == "" {
		_, err := stdout.Write(b.Bytes())
		if err != nil {
			return ExitBadInput
		}
		return ExitPassed
	}
	if err := os.WriteFile(*out, b.Bytes(), 0o644); err != nil {
		fmt.Fprintln(stderr, err)
		return ExitBadInput
	}
	return ExitPassed
}
