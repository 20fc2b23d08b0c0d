package report

import (
	"bytes"
	"encoding/json"
	"errors"
	"html"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// seed builds the seed incident: "held" is greylisted, vanishes from the
// queue past its deadline and is released by a restart; "fine" is delivered.
func seed() *history.History {
	h := &history.History{
		Scenario: "greylist-restart", Relay: "postfix",
		Timing:  history.Timing{RetryMax: history.Duration(20 * time.Second)},
		Started: t0, Ended: at(80),
	}
	for _, id := range []string{"fine", "held"} {
		h.Submissions = append(h.Submissions, history.Submission{
			HarnessID: id, MessageID: id + "@h.test", MailFrom: "a+gh-" + id + "@s.test",
			RcptTo: []string{"bob@r.test"}, SubmittedAt: at(0), Accepted: true,
			Reply: fakemta.Reply{Code: 250},
		})
	}
	txn := func(seq uint64, sec float64, id string, rcpt fakemta.Reply, data *fakemta.Reply) {
		tr := &fakemta.Transaction{MailFrom: "a+gh-" + id + "@s.test",
			Rcpts: []fakemta.RcptAttempt{{Addr: "bob@r.test", Attempt: 1, Reply: rcpt}}, Data: data}
		if data != nil {
			tr.Message = &fakemta.Message{HarnessID: id, MessageID: id + "@h.test", Accepted: true}
		}
		h.Journal = append(h.Journal, fakemta.Event{Seq: seq, Time: at(sec), Kind: fakemta.EventTransaction, Conn: seq, Transaction: tr})
	}
	grey := fakemta.Reply{Code: 451, Enhanced: "4.7.1", Text: "greylisted"}
	ok := fakemta.Reply{Code: 250}
	txn(1, 1, "held", grey, nil)
	txn(2, 1.5, "fine", ok, &ok)
	txn(3, 64.25, "held", ok, &ok)
	h.Queue = []history.QueueSnapshot{{At: at(40), Entries: []history.QueueEntry{}}}
	h.Faults = []history.Fault{{Kind: history.FaultRelayRestart, Start: at(60), End: at(62)}}
	return h
}

func TestTextFailedTimelineOnly(t *testing.T) {
	h := seed()
	r := ledger.Judge(h)
	var buf bytes.Buffer
	if err := Text(&buf, r, h, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(out, "\n")
	if want := "FAIL greylist-restart (relay postfix): 2 checked, 1 failed: 1 held-silently, 1 delivered"; lines[0] != want {
		t.Errorf("summary %q, want %q", lines[0], want)
	}
	for _, s := range []string{
		"FAIL held-silently message held <held@h.test> rcpt bob@r.test [delivered, held-silently]",
		"why: held-silently: no delivery attempt from +1.000s",
		"expected: delivered",
		"+0.000s  submitted",
		"+1.000s  attempt       conn 1: RCPT TO:<bob@r.test> got 451 4.7.1 greylisted",
		"+32.000s  deadline",
		"+40.000s  queue-missing",
		"+60.000s  fault         relay-restart until +62.000s",
		"+64.250s  reply         after the final dot: 250",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "message fine") {
		t.Errorf("passing message printed:\n%s", out)
	}
	buf.Reset()
	if err := Text(&buf, r, h, true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "ok delivered message fine <fine@h.test> rcpt bob@r.test") {
		t.Errorf("verbose lacks the passing message:\n%s", buf.String())
	}
}

func TestTextPassAndWarn(t *testing.T) {
	h := seed()
	h.Submissions = h.Submissions[:1]
	r := ledger.Judge(h)
	r.Findings[0].Warn, r.Findings[0].Why = true, "retry-too-soon: retried at +1.000s"
	var buf bytes.Buffer
	if err := Text(&buf, r, h, false); err != nil {
		t.Fatal(err)
	}
	want := "PASS greylist-restart (relay postfix): 1 checked, 1 warned: 1 delivered\n" +
		"WARN delivered message fine <fine@h.test> rcpt bob@r.test: retry-too-soon: retried at +1.000s\n"
	if buf.String() != want {
		t.Errorf("got\n%s\nwant\n%s", buf.String(), want)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestTextWriteError(t *testing.T) {
	h := seed()
	if err := Text(failWriter{}, ledger.Judge(h), h, false); err == nil || err.Error() != "disk full" {
		t.Errorf("err %v", err)
	}
}

func TestJSON(t *testing.T) {
	h := seed()
	r := ledger.Judge(h)
	var buf bytes.Buffer
	if err := JSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var back ledger.Result
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Passed || back.Counts[ledger.HeldSilently] != 1 || len(back.Findings) != 2 {
		t.Errorf("round trip: %+v", back)
	}
	f := back.Findings[1]
	if f.HarnessID != "held" || f.Primary != ledger.HeldSilently || !f.Failed || len(f.Timeline) == 0 || !f.Timeline[0].At.Equal(t0) {
		t.Errorf("finding %+v", f)
	}
	if !strings.Contains(buf.String(), `"primary": "held-silently"`) {
		t.Errorf("json:\n%s", buf.String())
	}
	buf.Reset()
	if err := JSON(&buf, ledger.Result{}); err != nil || !strings.Contains(buf.String(), `"findings": []`) {
		t.Errorf("empty result: %v %s", err, buf.String())
	}
}

func TestHTMLShowsFailingTimelineOpenAndEscapes(t *testing.T) {
	h := seed()
	r := ledger.Judge(h)
	var buf bytes.Buffer
	err := HTML(&buf, "greyharness: postfix <test>", []ScenarioReport{
		{Name: h.Scenario, Status: "failed", Result: &r, History: h, Saved: "results/greylist-restart"},
		{Name: "needs-restart", Status: "skipped", Skipped: "the profile has no restart command"},
	})
	if err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{
		"<title>greyharness: postfix &lt;test&gt;</title>", // titles and details are escaped
		`<span class="badge failed">failed</span><h2>greylist-restart</h2>`,
		Summary(r, h),
		"skipped: the profile has no restart command",
		"<code>results/greylist-restart</code>",
		"&lt;held@h.test&gt;", // message ids in the subject, escaped
		"relay <b>postfix</b> · timing retry_max 20s",
		"run time 1m20s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if strings.Contains(out, "<script") || strings.Contains(out, "src=") || strings.Contains(out, "href=\"http") {
		t.Error("the page is not self-contained")
	}
	// The summary table: the failing scenario links to its section, the
	// skipped one gives its reason.
	for _, want := range []string{
		`<tr><td><a href="#s1">greylist-restart</a></td><td><span class="badge failed">failed</span></td><td class="n">1</td><td class="n nf">1</td><td class="n z">0</td><td class="n">1m20s</td><td class="note">1 held-silently, 1 delivered</td></tr>`,
		`<tr><td>needs-restart</td><td><span class="badge skipped">skipped</span></td>`,
		`<td class="note">the profile has no restart command</td>`,
		`<section id="s1">`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary table lacks %s", want)
		}
	}
	// The held message is open with its whole timeline and its lane.
	held := section(t, out, "message held")
	if !strings.HasPrefix(held, "<details open") || !strings.Contains(held, string(ledger.HeldSilently)) {
		t.Errorf("held message not open with its verdict:\n%s", held)
	}
	text := html.UnescapeString(held)
	for _, e := range r.Failed()[0].Timeline {
		if !strings.Contains(text, ledger.Rel(h.Started, e.At)) || !strings.Contains(text, e.What+"</td><td>"+e.Detail) {
			t.Errorf("held message's timeline lacks %s %s %s in\n%s", ledger.Rel(h.Started, e.At), e.What, e.Detail, text)
		}
	}
	for _, want := range []string{`<svg class="lane"`, `<circle class="att c4xx" cx="20.5"`, `<circle class="att c2xx"`,
		`<g class="fault f-relay"><title>relay-restart +60.000s – +62.000s</title>`, `<g class="deadline"><title>+32.000s deadline: retry deadline: +1.000s (attempt) + retry_max 20s + slack 11s, no attempt by then</title>`, `>missed</text>`, `<rect class="q-missing"`, `<path class="sub"`} {
		if !strings.Contains(held, want) {
			t.Errorf("lane lacks %s", want)
		}
	}
	if n := strings.Count(held, `class="att `); n != 2 {
		t.Errorf("%d attempt marks, want 2", n)
	}
	// The delivered message is counted, not listed.
	if strings.Contains(out, "message fine") {
		t.Error("a passing message is listed")
	}
	if !strings.Contains(out, `<span class="k">passing</span> <b>1</b> finding(s), 1 delivered`) {
		t.Error("passes not summed up")
	}
}

// section returns the <details> element whose summary names subject.
func section(t *testing.T, page, subject string) string {
	t.Helper()
	i := strings.Index(page, subject)
	if i < 0 {
		t.Fatalf("no %q in the page", subject)
	}
	start := strings.LastIndex(page[:i], "<details")
	end := strings.Index(page[i:], "</details>")
	if start < 0 || end < 0 {
		t.Fatalf("%q is not inside a <details> element", subject)
	}
	return page[start : i+end]
}
