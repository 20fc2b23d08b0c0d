package scenarios

import (
	"errors"
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
)

// FuzzLoadBytes: whatever the input, the loader returns scenarios or
// positioned errors, never both, and never panics.
func FuzzLoadBytes(f *testing.F) {
	files, err := PackFiles()
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range files {
		f.Add(b)
	}
	f.Add([]byte("scenarios:\n  - name: a\n    steps: [{send: {to: a@b}}]\n---\nname: b\nsteps: [{wait: delivered}]\n"))
	f.Add([]byte("name: &a x\nsteps: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		scs, err := LoadBytes("fuzz.yaml", data)
		if err != nil {
			if scs != nil {
				t.Fatalf("scenarios and an error")
			}
			for _, e := range flatten(err) {
				var pe *fakemta.PositionError
				if !errors.As(e, &pe) || pe.Line < 1 || pe.Col < 1 || !strings.HasPrefix(e.Error(), "fuzz.yaml:") {
					t.Fatalf("badly located error %T %v", e, e)
				}
			}
			return
		}
		for _, sc := range scs {
			if sc.Name == "" || len(sc.Steps) == 0 {
				t.Fatalf("loaded an invalid scenario: %+v", sc)
			}
			sc.Needs()
		}
	})
}
