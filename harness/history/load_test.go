package history

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoad reads back a history written as JSON and names the file when the
// content is not a history.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "history.json")
	b, err := json.Marshal(valid())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, b, 0o644); err != nil {
		t.Fatal(err)
	}
	h, err := Load(good)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if h.Scenario != "s" || len(h.Submissions) != 2 {
		t.Fatalf("Load = %+v", h)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(`{"scenario": 3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Load(bad) = %v, want an error naming %s", err, bad)
	}
	if _, err := Load(filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("Load(missing) = nil error")
	}
}
