package harness

import (
	"fmt"
	"io"
	"time"

	"github.com/greyharness/greyharness/harness/relay"
)

// Probe is `greyharness probe ADDR`: it exits 0 when an SMTP server at
// ADDR answers with a 220 greeting within 2 seconds (a relay profile's
// ready command).
func Probe(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "greyharness probe: give one host:port")
		return ExitBadInput
	}
	if err := relay.Greets(args[0], 2*time.Second); err != nil {
		fmt.Fprintf(stderr, "greyharness probe %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
