package scenarios

import (
	"context"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/profile"
)

// noteAction is a step kind that exists only in this test: it proves a
// kind is one type plus one registration, with no field of its own in Step.
type noteAction struct{ text string }

func (a noteAction) Describe() string                     { return "note " + a.text }
func (a noteAction) Needs() []profile.Capability          { return nil }
func (a noteAction) Run(ctx context.Context, _ Env) error { return nil }

func TestStepKindIsOneTypeAndOneRegistration(t *testing.T) {
	saved, savedKeys := stepKinds, stepKeys
	t.Cleanup(func() { stepKinds, stepKeys = saved, savedKeys })
	stepKinds = append(append([]stepKind{}, saved...), stepKind{
		key: "note",
		decode: func(l *loader, v *yaml.Node, i int, st *scenarioState, step *Step) {
			step.Other = noteAction{text: v.Value}
		},
	})
	stepKeys = append(append([]string{}, savedKeys...), "note")

	scs, err := LoadBytes("note.yaml", []byte("name: n\nsteps:\n  - send: {to: [a@dest.test]}\n  - note: hello\n"))
	if err != nil {
		t.Fatal(err)
	}
	st := &scs[0].Steps[1]
	if got := st.Describe(); got != "note hello" {
		t.Fatalf("Describe() = %q, want the registered kind's %q", got, "note hello")
	}
	if st.Action() == nil || st.Action().Run(context.Background(), nil) != nil {
		t.Fatal("the registered kind's action does not run")
	}
	if _, err := LoadBytes("note.yaml", []byte("name: n\nsteps:\n  - send: {to: [a@dest.test]}\n  - nope: x\n")); err == nil {
		t.Fatal("an unregistered kind loaded")
	}
}
