package harness

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/samplerelay"
)

// Sample relay timing: seconds, not minutes, so the default pack runs in
// about half a minute. retry_max is the longest backoff plus the relay's
// scheduler tick and a margin.
const (
	sampleMinBackoff = time.Second
	sampleMaxBackoff = 2 * time.Second
	// sampleQueueLifetime bounds expiry-bounce, the pack's longest
	// scenario here (TestSampleTimingFitsThePack). It outlasts the delayed
	// DSN and the retries after it, and fakemta-outage's outage: the relay's
	// listing shows its first failed attempt within a second or two (a
	// refused connection), which ends the outage; only a relay that never
	// tries, or never lists it, meets the wait's deadline (retry_max +
	// restart_grace), longer than this lifetime, and bounces it.
	sampleQueueLifetime = 15 * time.Second
	sampleDelayWarning  = 5 * time.Second
	// sampleRestartGrace bounds a start until the relay greets: a race-built
	// test binary on a loaded 2-core machine was seen taking 10 s. The
	// runner also adds it to every wait deadline, so it is not larger.
	sampleRestartGrace = 20 * time.Second
	// sampleDoubleRestartWindow (kb950757 only) is as long as the runner
	// lets one restart take (2 × restart_grace + 10 s): the second start of
	// `restart: {times: 2}` follows the first by at most a ready wait and a
	// stop (each within restart_grace), so it is a double restart whatever
	// the machine's speed, while a drain's restart, two timed-out waits
	// later (each longer than restart_grace), is a single one.
	sampleDoubleRestartWindow = 2*sampleRestartGrace + 10*time.Second
)

// SampleProfile returns the relay profile of the built-in sample relay,
// run as `BIN sample-relay serve` (bin is the greyharness binary, or a test
// binary that re-executes itself as one) on free loopback ports, with the
// bugs named in spec ("" or "BUG[,BUG]"). workDir holds its queue.
func SampleProfile(bin, spec, workDir string, env map[string]string) (*profile.Profile, error) {
	bugs, err := samplerelay.ParseBugs(spec)
	if err != nil {
		return nil, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	submit := fmt.Sprintf("127.0.0.1:%d", ports[0])
	// Two MX hosts on one port, as a site's MX records would list them:
	// the fake MTA listens on both (MX 1 and 2), the relay tries them in
	// order. The lanes listen on the same port on addresses of their own.
	hops, err := freeMXPair(append(append([]string(nil), sampleMXHosts...), sampleLaneHosts...))
	if err != nil {
		return nil, err
	}
	next, lanes := hops[:len(sampleMXHosts)], hops[len(sampleMXHosts):]
	queue := filepath.Join(workDir, "queue")
	if err := os.MkdirAll(queue, 0o755); err != nil {
		return nil, err
	}
	var bugFlags []string
	for _, b := range bugs {
		bugFlags = append(bugFlags, "--bug "+string(b))
	}
	name := "sample"
	if spec != "" {
		name += ":" + spec
	}
	e := map[string]string{"GREYHARNESS_BIN": bin}
	for k, v := range env {
		e[k] = v
	}
	p := &profile.Profile{
		Name:        name,
		Submit:      profile.Submit{Addr: submit, Helo: "harness.greyharness.test"},
		QueueFormat: profile.QueueSample,
		NextHop:     next,
		Lanes:       lanes,
		Commands: profile.Commands{
			Start: fmt.Sprintf(`exec "$GREYHARNESS_BIN" sample-relay serve --listen %s --next-hop %s --lane %s --queue %s --min-backoff %s --max-backoff %s --queue-lifetime %s --delay-warning %s --double-restart-window %s %s`,
				submit, strings.Join(next, ","), strings.Join(lanes, ","), queue, sampleMinBackoff, sampleMaxBackoff, sampleQueueLifetime, sampleDelayWarning, sampleDoubleRestartWindow, strings.Join(bugFlags, " ")),
			StartForeground: true,
			Ready:           fmt.Sprintf(`"$GREYHARNESS_BIN" probe %s`, submit),
			Queue:           fmt.Sprintf(`"$GREYHARNESS_BIN" sample-relay queue --queue %s`, queue),
			Flush:           fmt.Sprintf(`"$GREYHARNESS_BIN" sample-relay flush --queue %s`, queue),
		},
		Timing: history.Timing{
			RetryMax:      history.Duration(sampleMaxBackoff + time.Second),
			QueueLifetime: history.Duration(sampleQueueLifetime),
			DelayWarning:  history.Duration(sampleDelayWarning),
			RestartGrace:  history.Duration(sampleRestartGrace),
		},
		Env: e,
		Dir: workDir,
	}
	return p, nil
}

// sampleMXHosts are the sample profile's MX hosts (all of 127.0.0.0/8 is loopback).
var sampleMXHosts = []string{"127.0.0.2", "127.0.0.3"}

// sampleLaneHosts are the sample profile's lanes: the relay routes the
// mail of a scenario holding lane N (its tenant label starts lN-) there.
// Not 127.0.0.2 or 127.0.0.3 (the MX hosts).
var sampleLaneHosts = []string{"127.0.0.11", "127.0.0.12", "127.0.0.13"}

// freeMXPair finds one port free on every host and returns host:port for each.
func freeMXPair(hosts []string) ([]string, error) {
	var lastErr error
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			return nil, err
		}
		port := fmt.Sprint(first.Addr().(*net.TCPAddr).Port)
		ls := []net.Listener{first}
		out := []string{first.Addr().String()}
		for _, h := range hosts[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(h, port))
			if err != nil {
				lastErr = err
				break
			}
			ls = append(ls, l)
			out = append(out, l.Addr().String())
		}
		for _, l := range ls {
			l.Close()
		}
		if len(out) == len(hosts) {
			return out, nil
		}
	}
	return nil, fmt.Errorf("no port free on all of %v: %w", hosts, lastErr)
}

// freePorts asks the kernel for n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}
