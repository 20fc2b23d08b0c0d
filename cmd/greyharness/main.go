// Command greyharness is the greylisting SMTP test harness: a fake remote
// MTA, a scenario runner that judges a relay under test message by
// message, and a sample relay with switchable bugs.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/samplerelay"
	"github.com/greyharness/greyharness/scenarios"
)

const usage = `greyharness — prove a relay never holds a greylisted message silently.

Usage:
  greyharness run [--relay FILE|sample[:BUG,...]] [--scenarios PATH]... [--label-filter EXPR]
                  [--focus REGEX] [--skip REGEX] [--junit FILE] [--json FILE] [--html FILE]
                  [--results DIR] [-v]
                                        --focus/--skip match scenario names; selecting none exits 2
  greyharness validate PATH...          check scenario files (file:line:col errors, exit 2)
  greyharness judge [-v] [--html FILE] DIR|history.json...
                                        re-judge saved histories offline
  greyharness fakemta [flags]           run the fake remote MTA (greyharness fakemta -h)
  greyharness sample-relay serve|queue|flush [flags]
                                        the built-in sample relay with switchable bugs
  greyharness conformance [--out FILE] RELAY.json...
                                        the conformance matrix (markdown) of relays' run --json files
  greyharness probe ADDR                exit 0 when an SMTP server greets on ADDR

Exit codes: 0 all passed, 1 a verdict failed, 2 bad input.
Inputs must be regular files: YAML up to 16 MiB, histories up to 256 MiB.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return harness.ExitBadInput
	}
	switch args[0] {
	case "run":
		o, err := harness.ParseRunFlags(args[1:], stderr)
		if err != nil {
			return harness.ExitBadInput
		}
		return harness.Run(o, stdout, stderr)
	case "validate":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "greyharness validate: give scenario files or folders")
			return harness.ExitBadInput
		}
		if errs := scenarios.Validate(args[1:]); len(errs) > 0 {
			for _, e := range errs {
				fmt.Fprintln(stderr, e)
			}
			return harness.ExitBadInput
		}
		fmt.Fprintln(stdout, "ok")
		return 0
	case "judge":
		verbose, htmlPath := false, ""
		var paths []string
		rest := args[1:]
		for i := 0; i < len(rest); i++ {
			switch a := rest[i]; {
			case a == "-v":
				verbose = true
			case a == "--html" || a == "-html":
				if i+1 == len(rest) {
					fmt.Fprintln(stderr, "greyharness judge: --html needs a file")
					return harness.ExitBadInput
				}
				i++
				htmlPath = rest[i]
			case strings.HasPrefix(a, "--html=") || strings.HasPrefix(a, "-html="):
				_, htmlPath, _ = strings.Cut(a, "=")
			case strings.HasPrefix(a, "-"):
				fmt.Fprintf(stderr, "greyharness judge: unknown flag %s\n", a)
				return harness.ExitBadInput
			default:
				paths = append(paths, a)
			}
		}
		return harness.Judge(paths, stdout, stderr, verbose, htmlPath)
	case "conformance":
		return harness.Conformance(args[1:], stdout, stderr)
	case "fakemta":
		return fakemta.Main(args[1:], stdout, stderr)
	case "sample-relay":
		return samplerelay.Main(args[1:], stdout, stderr)
	case "probe":
		return harness.Probe(args[1:], stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "greyharness: unknown command %q\n\n%s", args[0], usage)
	return harness.ExitBadInput
}
