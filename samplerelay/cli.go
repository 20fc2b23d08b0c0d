package samplerelay

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const usage = `usage: greyharness sample-relay <command> [flags]

commands:
  serve --listen ADDR --next-hop ADDR --queue DIR [--bug NAME]...
        [--hostname NAME] [--min-backoff 1s] [--max-backoff 2s]
        [--queue-lifetime 30s] [--delay-warning 10s] [--double-restart-window 10s]
        run the sample relay in the foreground until SIGTERM/SIGINT
  queue --queue DIR
        print the queue listing as a JSON array
  flush --queue DIR [--timeout 10s]
        make the running relay retry every queued message now

bugs (each off by default): ` + "%s\n"

// Main implements `greyharness sample-relay ...`: args are the words after
// "sample-relay". It returns the process exit code: 0 ok, 1 failure,
// 2 bad usage.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, usage, validBugNames())
		return 2
	}
	switch args[0] {
	case "serve":
		return mainServe(args[1:], stdout, stderr)
	case "queue":
		return mainQueue(args[1:], stdout, stderr)
	case "flush":
		return mainFlush(args[1:], stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprintf(stdout, usage, validBugNames())
		return 0
	default:
		fmt.Fprintf(stderr, "sample-relay: unknown command %q\n", args[0])
		fmt.Fprintf(stderr, usage, validBugNames())
		return 2
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sample-relay "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses and reports a usage problem (already printed) as false.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) bool {
	if err := fs.Parse(args); err != nil {
		return false // flag printed the error and usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return false
	}
	return true
}

func required(fs *flag.FlagSet, stderr io.Writer, names ...string) bool {
	ok := true
	for _, n := range names {
		if fs.Lookup(n).Value.String() == "" {
			fmt.Fprintf(stderr, "%s: --%s is required\n", fs.Name(), n)
			ok = false
		}
	}
	return ok
}

func mainServe(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("serve", stderr)
	var cfg Config
	fs.StringVar(&cfg.Listen, "listen", "", "SMTP listen address (host:port)")
	fs.Var((*hopList)(&cfg.NextHop), "next-hop", "next hop address (host:port) for all mail and DSNs; repeatable, or a comma list: MX hosts tried in order")
	fs.Var((*hopList)(&cfg.Lanes), "lane", "lane address (host:port); repeatable, or a comma list: lane N takes the recipients whose domain's first label starts lN-")
	fs.StringVar(&cfg.QueueDir, "queue", "", "queue directory")
	fs.StringVar(&cfg.Hostname, "hostname", DefaultHostname, "host name (EHLO, Reporting-MTA)")
	fs.DurationVar(&cfg.MinBackoff, "min-backoff", DefaultMinBackoff, "first retry delay")
	fs.DurationVar(&cfg.MaxBackoff, "max-backoff", DefaultMaxBackoff, "longest retry delay")
	fs.DurationVar(&cfg.QueueLifetime, "queue-lifetime", DefaultQueueLifetime, "bounce undelivered mail after this")
	fs.DurationVar(&cfg.DelayWarning, "delay-warning", DefaultDelayWarning, "send one delayed DSN after this (negative: never)")
	fs.DurationVar(&cfg.DoubleRestartWindow, "double-restart-window", DefaultDoubleRestartWindow, "kb950757: a start this soon after the previous one is a double restart")
	fs.Func("bug", "enable a bug (repeatable, or a comma list): "+validBugNames(), func(s string) error {
		bugs, err := ParseBugs(s)
		if err != nil {
			return err
		}
		cfg.Bugs = append(cfg.Bugs, bugs...)
		return nil
	})
	if !parseFlags(fs, args, stderr) || !required(fs, stderr, "listen", "next-hop", "queue") {
		return 2
	}
	for name, d := range map[string]time.Duration{"min-backoff": cfg.MinBackoff, "max-backoff": cfg.MaxBackoff, "queue-lifetime": cfg.QueueLifetime, "double-restart-window": cfg.DoubleRestartWindow} {
		if d <= 0 {
			fmt.Fprintf(stderr, "%s: --%s must be positive, got %s\n", fs.Name(), name, d)
			return 2
		}
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		fmt.Fprintf(stderr, "%s: --max-backoff %s is shorter than --min-backoff %s\n", fs.Name(), cfg.MaxBackoff, cfg.MinBackoff)
		return 2
	}
	if cfg.DelayWarning == 0 {
		cfg.DelayWarning = -1 // explicit 0 on the command line: disabled
	}
	for _, a := range append(append([]string{cfg.Listen}, cfg.NextHop...), cfg.Lanes...) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			fmt.Fprintf(stderr, "%s: bad address %q: %v\n", fs.Name(), a, err)
			return 2
		}
	}
	lg := log.New(stderr, "sample-relay: ", log.LstdFlags|log.Lmicroseconds)
	cfg.Logf = lg.Printf
	cfg.Ready = func(a net.Addr) { fmt.Fprintf(stdout, "sample-relay: listening on %s\n", a) }
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := Run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "sample-relay: %v\n", err)
		return 1
	}
	return 0
}

func mainQueue(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("queue", stderr)
	dir := fs.String("queue", "", "queue directory")
	if !parseFlags(fs, args, stderr) || !required(fs, stderr, "queue") {
		return 2
	}
	if st, err := os.Stat(*dir); err != nil || !st.IsDir() {
		fmt.Fprintf(stderr, "sample-relay queue: %s is not a queue directory\n", *dir)
		return 1
	}
	list, err := ListQueue(*dir, time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "sample-relay queue: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(list); err != nil {
		fmt.Fprintf(stderr, "sample-relay queue: %v\n", err)
		return 1
	}
	return 0
}

func mainFlush(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("flush", stderr)
	dir := fs.String("queue", "", "queue directory")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the relay's acknowledgement")
	if !parseFlags(fs, args, stderr) || !required(fs, stderr, "queue") {
		return 2
	}
	if err := Flush(*dir, *timeout); err != nil {
		fmt.Fprintf(stderr, "sample-relay flush: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "sample-relay: flush acknowledged")
	return 0
}

// ErrFlushTimeout is returned by Flush when no running relay acknowledged.
var ErrFlushTimeout = errors.New("no running sample relay acknowledged the flush request")

// Flush asks the relay running on dir to retry every queued message now: it
// writes a flush request file that the relay picks up within about 100 ms
// and waits (up to timeout) for the relay's acknowledgement.
func Flush(dir string, timeout time.Duration) error {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%s is not a queue directory", dir)
	}
	s := &store{dir: dir}
	req := filepath.Join(dir, "flush-"+randHex(6)+".req")
	if err := writeFileSync(req, []byte(time.Now().UTC().Format(time.RFC3339Nano)+"\n")); err != nil {
		return err
	}
	ack := s.flushAck(req)
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if _, err := os.Stat(ack); err == nil {
			os.Remove(ack)
			return nil
		}
		if time.Now().After(deadline) {
			os.Remove(req)
			if _, err := os.Stat(ack); err == nil { // acknowledged at the last moment
				os.Remove(ack)
				return nil
			}
			return fmt.Errorf("%w within %s (is it running on %s?)", ErrFlushTimeout, timeout, strings.TrimSuffix(dir, "/"))
		}
		<-t.C
	}
}

// hopList is --next-hop: repeatable, each a host:port or a comma list.
type hopList []string

func (h *hopList) String() string { return strings.Join(*h, ",") }

func (h *hopList) Set(v string) error {
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*h = append(*h, a)
		}
	}
	return nil
}
