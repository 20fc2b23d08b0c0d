package runner

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/report"
)

// Save writes the history, the result and the report to dir/<scenario>/
// so `greyharness judge` can re-check it offline. It returns the folder.
func Save(dir string, h *history.History, res ledger.Result, relayLogs string) (string, error) {
	if h.Submissions == nil {
		// [] not null: LoadHistory refuses a history without its submissions.
		c := *h
		c.Submissions = []history.Submission{}
		h = &c
	}
	out := filepath.Join(dir, safeName(h.Scenario))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	write := func(name string, f func(io.Writer) error) error {
		fh, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return err
		}
		if err := f(fh); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	}
	if err := write("history.json", func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	}); err != nil {
		return "", err
	}
	if err := write("result.json", func(w io.Writer) error { return report.JSON(w, res) }); err != nil {
		return "", err
	}
	if err := write("report.txt", func(w io.Writer) error { report.Text(w, res, h, true); return nil }); err != nil {
		return "", err
	}
	if relayLogs != "" {
		os.WriteFile(filepath.Join(out, "relay.log"), []byte(relayLogs), 0o644)
	}
	return out, nil
}

// LoadHistory reads a history.json written by Save; see history.Load.
func LoadHistory(path string) (*history.History, error) { return history.Load(path) }

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, s)
}
