package report

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// Reply classes of a delivery attempt, as the page colours them.
const (
	Class2xx     = "c2xx"
	Class4xx     = "c4xx"
	Class5xx     = "c5xx"
	ClassDropped = "cdrop"
)

// attemptMark is one delivery attempt read back from a finding's timeline.
type attemptMark struct {
	At     time.Time
	Class  string
	Detail string
}

// attempts returns the attempts on f's timeline, one per attempt entry, each
// classed by its final reply: the reply after the final dot when the
// transaction had a body, else the RCPT (or MAIL, or connection) reply.
func attempts(f ledger.Finding) []attemptMark {
	var out []attemptMark
	for i, e := range f.Timeline {
		if e.What != ledger.WhatAttempt {
			continue
		}
		m := attemptMark{At: e.At, Class: replyClass(e.Detail), Detail: e.Detail}
		if i+1 < len(f.Timeline) && f.Timeline[i+1].What == ledger.WhatReply && f.Timeline[i+1].At.Equal(e.At) {
			m.Class = replyClass(f.Timeline[i+1].Detail)
			m.Detail += "; " + f.Timeline[i+1].Detail
		}
		out = append(out, m)
	}
	return out
}

// replyClass reads the reply class out of an attempt or reply entry's detail
// (the ledger writes "got 451 4.7.1 ...", "replied 421 ...", "after the final
// dot: 250", "dropped without reply", "line dropped ..."). A connection that
// ended without any reply counts as dropped.
func replyClass(detail string) string {
	for _, key := range []string{" got ", " replied ", "final dot: "} {
		if i := strings.Index(detail, key); i >= 0 {
			rest := detail[i+len(key):]
			if len(rest) >= 3 {
				if _, err := strconv.Atoi(rest[:3]); err == nil {
					switch rest[0] {
					case '2':
						return Class2xx
					case '4':
						return Class4xx
					case '5':
						return Class5xx
					}
				}
			}
			return ClassDropped
		}
	}
	return ClassDropped
}

// delivery returns when f was delivered: its first attempt whose final
// reply was 2xx.
func delivery(f ledger.Finding) (time.Time, bool) {
	if !f.Has(ledger.Delivered) {
		return time.Time{}, false
	}
	for _, a := range attempts(f) {
		if a.Class == Class2xx {
			return a.At, true
		}
	}
	return time.Time{}, false
}

// passStats sums up a scenario's passing findings: how many, how fast they
// were delivered, how many attempts they took, and how long the relay waited
// between attempts compared with the profile's retry_max.
type passStats struct {
	Passing, Failing, Warning int
	Delivered                 int
	Latency                   []time.Duration // sorted
	Attempts                  map[int]int     // attempts per message -> messages
	Gaps                      []time.Duration // sorted; every gap after a failed attempt, every finding
	RetryMax                  time.Duration
}

func statsOf(r *ledger.Result, h *history.History) passStats {
	s := passStats{Attempts: map[int]int{}}
	if h != nil {
		s.RetryMax = h.Timing.RetryMax.D()
	}
	if r == nil {
		return s
	}
	for _, f := range r.Findings {
		as := attempts(f)
		for i := 1; i < len(as); i++ {
			if as[i-1].Class != Class2xx {
				s.Gaps = append(s.Gaps, as[i].At.Sub(as[i-1].At))
			}
		}
		switch {
		case f.Failed:
			s.Failing++
			continue
		case f.Warn:
			s.Warning++
			continue
		}
		s.Passing++
		if f.HarnessID != "" && !f.Has(ledger.NotAccepted) {
			s.Attempts[len(as)]++
		}
		if at, ok := delivery(f); ok && !f.SubmittedAt.IsZero() {
			s.Delivered++
			s.Latency = append(s.Latency, at.Sub(f.SubmittedAt))
		}
	}
	sort.Slice(s.Latency, func(i, j int) bool { return s.Latency[i] < s.Latency[j] })
	sort.Slice(s.Gaps, func(i, j int) bool { return s.Gaps[i] < s.Gaps[j] })
	return s
}

// quantile returns the q-quantile (nearest rank) of sorted ds.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := int(q*float64(len(ds))+0.999999) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(ds) {
		i = len(ds) - 1
	}
	return ds[i]
}

// short formats d for the page: "850ms", "12.3s", "4m05s".
func short(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	d = d.Round(time.Second)
	return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
}

// attemptsLine is "1 attempt: 480 · 2 attempts: 20".
func (s passStats) attemptsLine() string {
	var ns []int
	for n := range s.Attempts {
		ns = append(ns, n)
	}
	sort.Ints(ns)
	var parts []string
	for _, n := range ns {
		w := "attempts"
		if n == 1 {
			w = "attempt"
		}
		parts = append(parts, fmt.Sprintf("%d %s: %d", n, w, s.Attempts[n]))
	}
	return strings.Join(parts, " · ")
}
