package scenarios

import (
	"os"
	"strings"
	"testing"
)

// TestDocsExample keeps docs/scenarios.md honest: its complete example
// loads and passes the schema, and its pack table names every pack scenario.
func TestDocsExample(t *testing.T) {
	b, err := os.ReadFile("../docs/scenarios.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "## A complete example")
	if !ok {
		t.Fatal(`docs/scenarios.md has no "## A complete example" section`)
	}
	_, rest, ok = strings.Cut(rest, "```yaml\n")
	if !ok {
		t.Fatal("the example section has no yaml block")
	}
	example, _, ok := strings.Cut(rest, "```")
	if !ok {
		t.Fatal("the example's yaml block is not closed")
	}
	scs, err := LoadBytes("docs/scenarios.md#example", []byte(example))
	if err != nil {
		t.Fatalf("the docs example does not load:\n%v", err)
	}
	if err := schemaValid(t, compileSchema(t), example); err != nil {
		t.Errorf("the docs example fails the schema: %v", err)
	}
	if len(scs[0].Needs()) == 0 {
		t.Errorf("the example is described as needing restart and queue; Needs() = %v", scs[0].Needs())
	}

	pack, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, sc := range pack {
		if !strings.Contains(doc, "| `"+sc.Name+"` |") {
			t.Errorf("docs/scenarios.md does not list pack scenario %s", sc.Name)
		}
	}
}
