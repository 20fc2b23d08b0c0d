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
// about a minute. retry_max is the longest backoff plus the relay's
// scheduler tick and a margin.
const (
	sampleMinBackoff = time.Second
	sampleMaxBackoff = 2 * time.Second
	// sampleQueueLifetime outlasts fakemta-outage's outage (retry_max +
	// restart_grace) and the retry after it, with room to spare.
	sampleQueueLifetime = 30 * time.Second
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
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	submit, next := fmt.Sprintf("127.0.0.1:%d", ports[0]), fmt.Sprintf("127.0.0.1:%d", ports[1])
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
		NextHop:     []string{next},
		Commands: profile.Commands{
			Start: fmt.Sprintf(`exec "$GREYHARNESS_BIN" sample-relay serve --listen %s --next-hop %s --queue %s --min-backoff %s --max-backoff %s --queue-lifetime %s --delay-warning %s --double-restart-window %s %s`,
				submit, next, queue, sampleMinBackoff, sampleMaxBackoff, sampleQueueLifetime, sampleDelayWarning, sampleDoubleRestartWindow, strings.Join(bugFlags, " ")),
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
