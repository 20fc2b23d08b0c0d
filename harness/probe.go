package harness

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// Probe is `greyharness probe ADDR`: it exits 0 when an SMTP server at
// ADDR answers with a 220 greeting within 2 seconds (a relay profile's
// ready command).
func Probe(args []string, stderr io.Writer) int {
	if len(args) != 1 {
		fmt.Fprintln(stderr, "greyharness probe: give one host:port")
		return ExitBadInput
	}
	if err := probe(args[0], 2*time.Second); err != nil {
		fmt.Fprintf(stderr, "greyharness probe %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func probe(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", strings.TrimSpace(line))
	}
	fmt.Fprint(c, "QUIT\r\n")
	return nil
}
