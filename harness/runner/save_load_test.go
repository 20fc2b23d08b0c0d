package runner

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// A run that submitted nothing (its first step failed) saves a history that
// judge loads: submissions [] (not null, which LoadHistory refuses).
func TestSaveLoadWithoutSubmissions(t *testing.T) {
	at := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	h := &history.History{Scenario: "first step failed", Relay: "r", Started: at, Ended: at.Add(time.Second),
		Timing: history.Timing{RetryMax: history.Duration(time.Second), QueueLifetime: history.Duration(time.Minute)}}
	dir, err := Save(t.TempDir(), h, ledger.Judge(h), "")
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadHistory(filepath.Join(dir, "history.json"))
	if err != nil {
		t.Fatalf("LoadHistory: %v", err)
	}
	if got.Submissions == nil || len(got.Submissions) != 0 || got.Scenario != h.Scenario {
		t.Errorf("loaded %+v", got)
	}
	if h.Submissions != nil {
		t.Error("Save changed the caller's history")
	}
}
