// Package report renders a ledger.Result: Text for the terminal (one
// summary line per scenario, the whole timeline of every failed message) and
// JSON for machines. Passing messages get a count, never a timeline, unless
// verbose.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// Summary is the one-line verdict for a scenario, e.g.
//
//	FAIL greylist-restart (relay postfix): 12 checked, 2 failed: 10 delivered, 1 held-silently, 1 lost
func Summary(r ledger.Result, h *history.History) string {
	status := "PASS"
	switch {
	case h != nil && h.RelayDown != "":
		status = "ERROR" // no verdict on the relay: it was down by another scenario's doing
	case !r.Passed || (h != nil && h.StepError != ""):
		status = "FAIL"
	}
	name, relay := "", ""
	if h != nil {
		name, relay = h.Scenario, h.Relay
	}
	s := status + " " + name
	if relay != "" {
		s += " (relay " + relay + ")"
	}
	failed, warned := 0, 0
	for _, f := range r.Findings {
		if f.Failed {
			failed++
		} else if f.Warn {
			warned++
		}
	}
	s += fmt.Sprintf(": %d checked", len(r.Findings))
	if failed > 0 {
		s += fmt.Sprintf(", %d failed", failed)
	}
	if warned > 0 {
		s += fmt.Sprintf(", %d warned", warned)
	}
	if c := Counts(r); c != "" {
		s += ": " + c
	}
	return s
}

// Counts formats r.Counts from the worst verdict to the mildest, zero counts
// omitted: "1 held-silently, 10 delivered".
func Counts(r ledger.Result) string {
	var parts []string
	for _, v := range ledger.AllVerdicts() {
		if n := r.Counts[v]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, v))
		}
	}
	return strings.Join(parts, ", ")
}

// Text writes the summary line, then for each failed finding its verdict,
// the reason, what was expected and the whole timeline with times relative
// to h.Started. Passing findings with a warning get one line; with verbose,
// every finding gets its timeline.
func Text(w io.Writer, r ledger.Result, h *history.History, verbose bool) error {
	if h == nil {
		h = &history.History{}
	}
	ew := &errWriter{w: w}
	ew.printf("%s\n", Summary(r, h))
	if h.RelayDown != "" {
		ew.printf("  NOT JUDGED (an error, no verdict on the relay here: another scenario's restart left it down for good; "+
			"the steps from then on did not run, and messages still in it are pending): %s\n", h.RelayDown)
	}
	if h.StepError != "" {
		// Beside the verdicts: they judge only what was recorded until then.
		ew.printf("  STEP FAILED (the steps after it did not run; judged on what was recorded): %s\n", h.StepError)
	}
	// A load scenario can fail or warn for hundreds of messages the same
	// way: show the first few in full and count the rest (result.json
	// has them all).
	var failed, warned, moreFailed, moreWarned int
	for _, f := range r.Findings {
		switch {
		case verbose:
			tag := "ok"
			if f.Failed {
				tag = "FAIL"
			} else if f.Warn {
				tag = "WARN"
			}
			finding(ew, tag, f, h)
		case f.Failed:
			failed++
			switch {
			case failed <= MaxTimelines:
				finding(ew, "FAIL", f, h)
			case failed <= MaxTimelines+MaxLines:
				ew.printf("FAIL %s %s: %s\n", f.Primary, subject(f), f.Why)
			default:
				moreFailed++
			}
		case f.Warn:
			warned++
			if warned <= MaxLines/4 {
				ew.printf("WARN %s %s: %s\n", f.Primary, subject(f), f.Why)
			} else {
				moreWarned++
			}
		}
	}
	if moreFailed > 0 {
		ew.printf("... and %d more failing message(s), not shown\n", moreFailed)
	}
	if moreWarned > 0 {
		ew.printf("... and %d more warning(s), not shown\n", moreWarned)
	}
	return ew.err
}

// How much of a long result Text prints: whole timelines for the first
// MaxTimelines failing messages, one line each for the next MaxLines.
const (
	MaxTimelines = 5
	MaxLines     = 20
)

func subject(f ledger.Finding) string {
	if f.HarnessID == "" {
		s := "scenario"
		if f.Rcpt != "" {
			s += " (to " + f.Rcpt + ")"
		}
		return s
	}
	s := "message " + f.HarnessID
	if f.MessageID != "" {
		s += " <" + f.MessageID + ">"
	}
	if f.Group != "" {
		s += " group " + f.Group
	}
	return s + " rcpt " + f.Rcpt
}

func finding(ew *errWriter, tag string, f ledger.Finding, h *history.History) {
	verdicts := make([]string, len(f.Verdicts))
	for i, v := range f.Verdicts {
		verdicts[i] = string(v)
	}
	ew.printf("\n%s %s %s [%s]\n", tag, f.Primary, subject(f), strings.Join(verdicts, ", "))
	ew.printf("  why: %s\n", f.Why)
	if f.Expected != "" {
		ew.printf("  expected: %s\n", f.Expected)
	}
	width := 0
	for _, e := range f.Timeline {
		if n := len(ledger.Rel(h.Started, e.At)); n > width {
			width = n
		}
	}
	for _, e := range f.Timeline {
		ew.printf("  %*s  %-13s %s\n", width, ledger.Rel(h.Started, e.At), e.What, e.Detail)
	}
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err != nil {
		return
	}
	_, e.err = fmt.Fprintf(e.w, format, args...)
}

// JSON writes r as indented JSON: passed, counts and every finding with its
// verdicts, reason and timeline (absolute RFC 3339 times).
func JSON(w io.Writer, r ledger.Result) error {
	if r.Findings == nil {
		r.Findings = []ledger.Finding{}
	}
	if r.Counts == nil {
		r.Counts = map[ledger.Verdict]int{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
