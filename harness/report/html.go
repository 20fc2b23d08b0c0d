package report

import (
	"embed"
	"html/template"
	"io"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// ScenarioReport is one scenario as the HTML report shows it.
type ScenarioReport struct {
	Name    string
	Status  string // passed, failed, skipped, error
	Skipped string // reason, when skipped
	Error   string // a step the harness could not run
	Saved   string // results folder with the history, on failure
	Result  *ledger.Result
	History *history.History
}

//go:embed html.tmpl
var htmlFiles embed.FS

var htmlTemplate = template.Must(template.New("html.tmpl").Funcs(template.FuncMap{
	"summary":  func(s ScenarioReport) string { return Summary(*s.Result, s.History) },
	"subject":  subject,
	"verdicts": joinVerdicts,
	"rel":      func(h *history.History, t time.Time) string { return ledger.Rel(started(h), t) },
	"rfc3339":  func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
	"tag":      findingTag,
	"open":     func(f ledger.Finding) bool { return f.Failed || f.Warn },
}).ParseFS(htmlFiles, "html.tmpl"))

// HTML writes a self-contained page (no scripts, no external files): one
// section per scenario with its summary line, and for each finding its
// verdicts, reason and whole timeline; failing and warning findings are
// open, passing ones folded. It is meant to be kept as a CI artifact.
func HTML(w io.Writer, title string, scs []ScenarioReport) error {
	counts := map[string]int{}
	for _, s := range scs {
		counts[s.Status]++
	}
	return htmlTemplate.Execute(w, struct {
		Title     string
		Generated string
		Counts    map[string]int
		Scenarios []ScenarioReport
	}{title, time.Now().UTC().Format(time.RFC3339), counts, scs})
}

func started(h *history.History) time.Time {
	if h == nil {
		return time.Time{}
	}
	return h.Started
}

func joinVerdicts(vs []ledger.Verdict) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// findingTag is the CSS class and label of a finding: FAIL, WARN or ok.
func findingTag(f ledger.Finding) string {
	switch {
	case f.Failed:
		return "FAIL"
	case f.Warn:
		return "WARN"
	}
	return "ok"
}
