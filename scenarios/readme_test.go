package scenarios

import (
	"os"
	"strings"
	"testing"
)

// TestREADMEExampleLoads keeps the README's complete scenario example valid.
func TestREADMEExampleLoads(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	start := strings.Index(s, "```yaml\n# yaml-language-server: $schema=../scenarios/schema.json")
	if start < 0 {
		t.Fatal("README has no complete scenario example")
	}
	body := s[start+len("```yaml\n"):]
	body = body[:strings.Index(body, "```")]
	scs, err := LoadBytes("README.md", []byte(body))
	if err != nil {
		t.Fatalf("README example: %v", err)
	}
	if len(scs) != 1 || len(scs[0].Steps) != 5 {
		t.Fatalf("README example: got %d scenarios", len(scs))
	}
}
