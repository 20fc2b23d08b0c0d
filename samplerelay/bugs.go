package samplerelay

import (
	"fmt"
	"sort"
	"strings"
)

// Bug names a deliberate defect the sample relay can be started with, so
// that each harness verdict can be shown to fire when its bug is present.
// Every bug is off by default.
type Bug string

// The bugs. docs/sample-relay.md says which verdict each one should produce.
const (
	// BugKB950757 reproduces the seed incident (Exchange 2003, Microsoft KB
	// 950757): after a double restart the start-up handshake runs twice, the
	// stamps disagree, and a message deferred with 4.7.1 is dropped from the
	// retry schedule and from the queue listing until the next restart.
	BugKB950757 Bug = "kb950757"
	// BugDropOn4xx deletes a message on any 4xx reply (no retry, no DSN).
	BugDropOn4xx Bug = "drop-on-4xx"
	// BugBounceOn4xx turns a 4xx reply into an immediate failure DSN.
	BugBounceOn4xx Bug = "bounce-on-4xx"
	// BugNoRetry never retries deferred recipients; they stay listed with
	// next_attempt null and reason "retry disabled".
	BugNoRetry Bug = "no-retry"
	// BugStallVisible never retries deferred recipients; they stay listed
	// with a next_attempt that is always in the future.
	BugStallVisible Bug = "stall-visible"
	// BugHammer says RCPT TO again at once after a 4xx to it, in the same
	// transaction, and retries every 200 ms regardless of the backoff.
	BugHammer Bug = "hammer"
	// BugLoseQueueOnRestart wipes the queue on start.
	BugLoseQueueOnRestart Bug = "lose-queue-on-restart"
	// BugRedeliverAfterRestart sets delivered recipients back to pending on
	// start, so they are delivered again.
	BugRedeliverAfterRestart Bug = "redeliver-after-restart"
	// BugResendAcceptedRcpts retries a partially deferred message to all its
	// recipients, including those already accepted.
	BugResendAcceptedRcpts Bug = "resend-accepted-rcpts"
	// BugNoDSNOnExpiry deletes an expired message without a failure DSN.
	BugNoDSNOnExpiry Bug = "no-dsn-on-expiry"
	// BugDSNToNullSender writes DSNs about null-sender messages (to <>) and
	// leaves the original headers out of failure DSNs.
	BugDSNToNullSender Bug = "dsn-to-null-sender"
	// BugNoMXFailover stops at the first MX host: a 4xx there defers the
	// recipients without trying the next MX, so a primary MX that keeps
	// deferring keeps the mail from a backup MX that would take it.
	BugNoMXFailover Bug = "no-mx-failover"
)

// AllBugs lists every bug, in documentation order.
var AllBugs = []Bug{
	BugKB950757, BugDropOn4xx, BugBounceOn4xx, BugNoRetry, BugStallVisible,
	BugHammer, BugLoseQueueOnRestart, BugRedeliverAfterRestart,
	BugResendAcceptedRcpts, BugNoDSNOnExpiry, BugDSNToNullSender, BugNoMXFailover,
}

func validBugNames() string {
	names := make([]string, len(AllBugs))
	for i, b := range AllBugs {
		names[i] = string(b)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// ParseBug checks one bug name.
func ParseBug(name string) (Bug, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for _, b := range AllBugs {
		if string(b) == n {
			return b, nil
		}
	}
	return "", fmt.Errorf("unknown bug %q (valid: %s)", name, validBugNames())
}

// ParseBugs parses a comma-separated list of bug names ("" gives none).
// Duplicates are removed.
func ParseBugs(list string) ([]Bug, error) {
	var out []Bug
	seen := map[Bug]bool{}
	for _, part := range strings.Split(list, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		b, err := ParseBug(part)
		if err != nil {
			return nil, err
		}
		if !seen[b] {
			seen[b] = true
			out = append(out, b)
		}
	}
	return out, nil
}

type bugSet map[Bug]bool

func newBugSet(bugs []Bug) bugSet {
	s := bugSet{}
	for _, b := range bugs {
		s[b] = true
	}
	return s
}
