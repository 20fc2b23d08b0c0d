package report

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// chromium finds headless Chromium: $CHROMIUM, else Debian's chromium. Under
// CI=true a missing browser fails the test; elsewhere it skips with a message.
func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is missing (apt-get install chromium; .ci/run installs it): the report's browser test cannot run")
	}
	t.Skip("chromium is missing: install it (apt-get install chromium) to check the HTML report in a browser")
	return ""
}

// kb950757 is a real failing run of the sample relay with the seed bug
// (greyharness run --relay sample:kb950757 --focus double-restart-then-greylist),
// its saved history re-judged.
func kb950757(t *testing.T) (*history.History, ledger.Result) {
	t.Helper()
	b, err := os.ReadFile("testdata/kb950757-history.json")
	if err != nil {
		t.Fatal(err)
	}
	var h history.History
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	return &h, ledger.Judge(&h)
}

// TestHTMLInBrowser renders the seed incident's page in headless Chromium
// and checks what a person sees there. With REPORT_SCREENSHOT=FILE it saves
// a screenshot of the page (docs/report.png is one).
func TestHTMLInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("headless browser; make test (go test without -short) runs it")
	}
	bin := chromium(t)
	h, r := kb950757(t)
	if r.Passed || len(r.Failed()) == 0 {
		t.Fatalf("the seed incident's history judges as passed: %+v", r.Counts)
	}
	file := filepath.Join(t.TempDir(), "report.html")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	scs := []ScenarioReport{
		{Name: h.Scenario, Status: "failed", Result: &r, History: h, Saved: "results/" + h.Scenario},
	}
	if err := HTML(f, "greyharness: relay "+h.Relay, scs); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1200, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	// The first call starts the browser and must not carry a timeout (it
	// would end the browser); later calls run under one.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("chromium %s: %v", bin, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 3*time.Minute) // a loaded machine is slow; a hang still ends
	defer cancel()

	var mu sync.Mutex
	var problems, requests []string
	err = chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value))
				}
				problems = append(problems, fmt.Sprintf("console %s: %s", ev.Type, strings.Join(args, " ")))
			}
		case *runtime.EventExceptionThrown:
			problems = append(problems, "exception: "+ev.ExceptionDetails.Text)
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				problems = append(problems, fmt.Sprintf("log %s: %s %s", ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
			}
		case *network.EventRequestWillBeSent:
			requests = append(requests, ev.Request.URL)
		}
	})
	if err != nil {
		t.Fatal(err)
	}

	// What a person sees, read from the rendered page: the summary table's
	// rows, and per open finding its lane's drawn size and attempt marks.
	type lane struct {
		Subject  string  `json:"subject"`
		Lanes    int     `json:"lanes"`
		Width    float64 `json:"width"`
		Attempts int     `json:"attempts"`
		Colour   string  `json:"colour"`
		Rows     int     `json:"rows"`
	}
	type seenPage struct {
		Rows  [][]string `json:"rows"`
		Link  string     `json:"link"`
		Lanes []lane     `json:"lanes"`
	}
	var seen seenPage
	const read = `(() => {
	  const rows = [...document.querySelectorAll("table.scen tbody tr")].map(tr => [...tr.cells].map(td => td.innerText.trim()));
	  const a = document.querySelector("table.scen a");
	  const lanes = [...document.querySelectorAll("details[open]")].map(d => {
	    const svg = d.querySelector("svg.lane");
	    const atts = svg ? [...svg.querySelectorAll("circle.att")] : [];
	    return {
	      subject: d.querySelector("summary").innerText,
	      lanes: d.querySelectorAll("svg.lane").length,
	      width: svg ? svg.getBoundingClientRect().width : 0,
	      attempts: atts.filter(c => c.getBoundingClientRect().width > 0).length,
	      colour: atts.length ? getComputedStyle(atts[0]).fill : "",
	      rows: d.querySelectorAll("table.tl tr").length,
	    };
	  });
	  return {rows, link: a ? a.getAttribute("href") : "", lanes};
	})()`
	if _, err := chromedp.Call(ctx, network.Enable, network.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+file), chromedp.WaitVisible(chromedp.CSS("table.scen"))); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	if seen, err = chromedp.Run(ctx, chromedp.Evaluate[seenPage](read)); err != nil {
		t.Fatalf("chromium: %v", err)
	}

	if len(seen.Rows) != len(scs) {
		t.Fatalf("summary table has %d rows, want %d: %q", len(seen.Rows), len(scs), seen.Rows)
	}
	failed := len(r.Failed())
	if got, want := seen.Rows[0][:5], []string{h.Scenario, "failed", "0", fmt.Sprint(failed), "0"}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("summary row %q, want %q", got, want)
	}
	if got := seen.Rows[0][6]; got != fmt.Sprintf("%d held-silently", failed) {
		t.Errorf("summary row's verdicts %q", got)
	}
	if seen.Link != "#s1" {
		t.Errorf("the failing scenario links to %q, want its section #s1", seen.Link)
	}
	if len(seen.Lanes) != failed {
		t.Fatalf("%d open findings, want one per failing finding (%d)", len(seen.Lanes), failed)
	}
	for i, f := range r.Failed() {
		l := seen.Lanes[i]
		want := 0
		for _, e := range f.Timeline {
			if e.What == ledger.WhatAttempt {
				want++
			}
		}
		if !strings.Contains(l.Subject, f.HarnessID) || l.Lanes != 1 || l.Width < 600 || l.Attempts != want || l.Rows != len(f.Timeline) {
			t.Errorf("finding %s: seen %+v, want one lane ≥600px wide with %d attempt marks and %d timeline rows", f.HarnessID, l, want, len(f.Timeline))
		}
		if l.Colour != "rgb(212, 167, 44)" { // a greylisting 451: the 4xx colour
			t.Errorf("finding %s: first attempt drawn in %s, want the 4xx colour", f.HarnessID, l.Colour)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Errorf("console: %q", problems)
	}
	for _, u := range requests {
		if u != "file://"+file {
			t.Errorf("the page fetched %s: it must be self-contained", u)
		}
	}
	if p := os.Getenv("REPORT_SCREENSHOT"); p != "" {
		// Page.captureScreenshot never answers on this Chromium (156,
		// headless, no GPU); its own --screenshot does.
		height, err := chromedp.Run(ctx, chromedp.Evaluate[int]("document.documentElement.scrollHeight"))
		if err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
			"--user-data-dir="+t.TempDir(), fmt.Sprintf("--window-size=1100,%d", height+20), "--screenshot="+abs, "file://"+file)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("chromium --screenshot: %v\n%s", err, out)
		}
	}
}
