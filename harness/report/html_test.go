package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// load builds a load scenario's Result by hand: n messages, each greylisted
// once and delivered on its retry; the first failing ones are held.
func load(n, failing int) (ledger.Result, *history.History) {
	h := &history.History{Scenario: "load-5000", Relay: "postfix", Started: t0, Ended: at(400),
		Timing: history.Timing{RetryMax: history.Duration(60 * time.Second), QueueLifetime: history.Duration(time.Hour)}}
	r := ledger.Result{Passed: failing == 0, Counts: map[ledger.Verdict]int{}}
	for i := 0; i < n; i++ {
		sub := at(float64(i) * 0.02)
		id := fmt.Sprintf("gh-%05d", i)
		f := ledger.Finding{HarnessID: id, MessageID: id + "@h.test", Group: "burst", Rcpt: "bob@r.test", SubmittedAt: sub,
			Expected: "delivered",
			Timeline: []ledger.TimelineEntry{
				{At: sub, What: ledger.WhatSubmitted, Detail: "MAIL FROM:<a+" + id + "@s.test> RCPT TO:<bob@r.test>, relay replied 250"},
				{At: sub.Add(time.Second), What: ledger.WhatAttempt, Detail: "conn 1: RCPT TO:<bob@r.test> got 451 4.7.1 greylisted (greylist deferred, attempt 1)"},
			}}
		if i < failing {
			f.Verdicts, f.Primary, f.Failed = []ledger.Verdict{ledger.HeldSilently}, ledger.HeldSilently, true
			f.Why = "held-silently: no delivery attempt from +1.000s until the end"
			f.Timeline = append(f.Timeline, ledger.TimelineEntry{At: sub.Add(92 * time.Second), What: ledger.WhatDeadline, Detail: "retry deadline"},
				ledger.TimelineEntry{At: sub.Add(100 * time.Second), What: ledger.WhatQueueMissing, Detail: "not in the queue listing (0 entries)"})
		} else {
			// Latency 20s..39s in whole seconds, 250 messages each.
			d := sub.Add(time.Duration(20+20*i/n) * time.Second)
			f.Verdicts, f.Primary = []ledger.Verdict{ledger.Delivered}, ledger.Delivered
			f.Why = "delivered"
			f.Timeline = append(f.Timeline, ledger.TimelineEntry{At: d, What: ledger.WhatAttempt, Detail: "conn 2: RCPT TO:<bob@r.test> got 250 (greylist passed, attempt 2)"},
				ledger.TimelineEntry{At: d, What: ledger.WhatReply, Detail: "after the final dot: 250 2.0.0 ok"})
		}
		r.Counts[f.Primary]++
		r.Findings = append(r.Findings, f)
	}
	return r, h
}

func TestHTMLLoadPageSize(t *testing.T) {
	for _, c := range []struct {
		name          string
		failing, want int
	}{{"all pass", 0, 0}, {"all fail", 5000, MaxDrawn}} {
		t.Run(c.name, func(t *testing.T) {
			r, h := load(5000, c.failing)
			status := "passed"
			if c.failing > 0 {
				status = "failed"
			}
			var buf bytes.Buffer
			if err := HTML(&buf, "greyharness: relay postfix", []ScenarioReport{{Name: h.Scenario, Status: status, Result: &r, History: h}}); err != nil {
				t.Fatal(err)
			}
			const limit = 300 << 10
			if buf.Len() > limit {
				t.Errorf("page of 5,000 messages is %d bytes, over %d", buf.Len(), limit)
			}
			t.Logf("%d bytes", buf.Len())
			out := buf.String()
			if n := strings.Count(out, `<svg class="lane"`); n != c.want {
				t.Errorf("%d lanes drawn, want %d", n, c.want)
			}
			if c.failing > 0 && !strings.Contains(out, fmt.Sprintf("… and %d more failing or warning finding(s), not shown", 5000-MaxDrawn-MaxListed)) {
				t.Error("the findings not shown are not counted")
			}
			if c.failing == 0 {
				for _, want := range []string{
					`<span class="k">passing</span> <b>5000</b> finding(s), 5000 delivered`,
					`<span class="k">attempts per message</span> 2 attempts: 5000`,
					"p50 <b>29.0s</b> · p90 <b>37.0s</b> · max <b>39.0s</b>",
					// gaps are 19s..38s after the greylist deferral, retry_max 60s, bound 60s+31s
					"retry gaps</span> (5000) p90 36.0s · longest <b>38.0s</b> = 63% of retry_max 1m00s (bound 1m31s)",
					`<svg class="hist"`, `<svg class="gauge"`,
				} {
					if !strings.Contains(out, want) {
						t.Errorf("page lacks %s", want)
					}
				}
				if strings.Contains(out, "gh-00042") {
					t.Error("a passing message is listed")
				}
			}
		})
	}
}

func TestReplyClass(t *testing.T) {
	for detail, want := range map[string]string{
		"conn 1: RCPT TO:<b@r.test> got 451 4.7.1 greylisted":                   Class4xx,
		"conn 1: RCPT TO:<b@r.test> got 250":                                    Class2xx,
		"conn 1: MAIL FROM:<a@s.test> got 550 5.7.1 no, no RCPT":                Class5xx,
		"conn 1: RCPT TO:<b@r.test> got dropped without reply":                  ClassDropped,
		"conn 4: no transaction, fake MTA replied 421 4.3.2 shutting down":      Class4xx,
		"conn 4: no transaction, connection ended without QUIT":                 ClassDropped,
		"after the final dot: 554 5.6.0 rejected":                               Class5xx,
		"line dropped after the body was received, before any reply (RFC 1047)": ClassDropped,
	} {
		if got := replyClass(detail); got != want {
			t.Errorf("replyClass(%q) = %s, want %s", detail, got, want)
		}
	}
}

func TestAttemptsTakeTheReplyAfterTheDot(t *testing.T) {
	f := ledger.Finding{Timeline: []ledger.TimelineEntry{
		{At: at(1), What: ledger.WhatAttempt, Detail: "conn 1: RCPT TO:<b@r.test> got 250"},
		{At: at(1), What: ledger.WhatReply, Detail: "after the final dot: 451 4.3.0 try later"},
		{At: at(9), What: ledger.WhatAttempt, Detail: "conn 2: RCPT TO:<b@r.test> got 250"},
		{At: at(9), What: ledger.WhatReply, Detail: "line dropped after the body was received, before any reply (RFC 1047)"},
		{At: at(20), What: ledger.WhatAttempt, Detail: "conn 3: RCPT TO:<b@r.test> got 250"},
		{At: at(20), What: ledger.WhatReply, Detail: "after the final dot: 250"},
	}}
	as := attempts(f)
	if len(as) != 3 || as[0].Class != Class4xx || as[1].Class != ClassDropped || as[2].Class != Class2xx {
		t.Errorf("attempts %+v", as)
	}
	f.Verdicts = []ledger.Verdict{ledger.Delivered}
	if d, ok := delivery(f); !ok || !d.Equal(at(20)) {
		t.Errorf("delivery %v %v", d, ok)
	}
}
