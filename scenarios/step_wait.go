package scenarios

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/profile"
)

var waitKind = stepKind{
	key: "wait",
	decode: func(l *loader, v *yaml.Node, _ int, st *scenarioState, step *Step) {
		step.Wait = l.wait(v, st)
	},
	action: func(step *Step) Action {
		if step.Wait == nil {
			return nil
		}
		return step.Wait
	},
}

// Describe says what the wait waits for.
func (w *Wait) Describe() string {
	what := w.For
	switch w.For {
	case "attempts":
		what = fmt.Sprintf("%d attempts", w.Attempts)
	case "dsn":
		what = "DSN Action: " + w.Action
	}
	if w.Group != "" {
		what += " (" + w.Group + ")"
	}
	return "wait for " + what
}

// Needs: a DSN with Action: delayed needs delay-warning.
func (w *Wait) Needs() []profile.Capability {
	if w.For == "dsn" && w.Action == "delayed" {
		return []profile.Capability{profile.CapDelayWarning}
	}
	return nil
}

// Run waits; a wait that times out is noted, not failed (the ledger says
// why the messages are not there). A wait its context ended (an interrupt,
// a spec timeout) did not time out: the step failed.
func (w *Wait) Run(ctx context.Context, env Env) error {
	if !env.Wait(ctx, w) && ctx.Err() != nil {
		return fmt.Errorf("interrupted while waiting: %w", context.Cause(ctx))
	}
	return nil
}

var waitKeys = []string{"for", "group", "attempts", "action", "timeout", "timeout_from", "factor"}

func (l *loader) wait(v *yaml.Node, st *scenarioState) *Wait {
	w := &Wait{}
	if st.sends == 0 {
		l.errorf(v, "wait before any send step: there is nothing to wait for")
	}
	if v.Kind == yaml.ScalarNode {
		// Shorthand: wait: delivered.
		if s, ok := l.enum(v, "wait", []string{"deferred", "delivered", "drained"}); ok {
			w.For = s
		} else if slices.Contains([]string{"dsn", "attempts"}, v.Value) {
			l.errorf(v, "wait for %s needs the long form, e.g. {for: %s, %s}", v.Value, v.Value,
				map[string]string{"dsn": "action: failed", "attempts": "attempts: 2"}[v.Value])
		}
		return w
	}
	kvs := l.mapping(v, "wait", waitKeys)
	if v.Kind != yaml.MappingNode {
		return w
	}
	byKey := map[string]keyValue{}
	for _, kv := range kvs {
		byKey[kv.key] = kv
	}
	forKV, hasFor := byKey["for"]
	if hasFor {
		w.For, _ = l.enum(forKV.v, "wait for", WaitConditions)
	} else {
		l.errorf(v, "wait has no condition (for: %s)", strings.Join(WaitConditions, " | "))
	}
	if kv, ok := byKey["group"]; ok {
		if g, ok := l.name(kv.v, "wait group"); ok {
			w.Group = g
			if !st.groups[g] {
				l.errorf(kv.v, "wait group %q is not sent by any earlier send step (%s)", g, groupList(st.groups))
			}
		}
	}
	if kv, ok := byKey["attempts"]; ok {
		w.Attempts, _ = l.integer(kv.v, "attempts", 1, 1000)
		if w.For != "" && w.For != "attempts" {
			l.errorf(kv.k, "attempts only goes with for: attempts")
		}
	} else if w.For == "attempts" {
		l.errorf(forKV.v, "wait for attempts needs attempts: N (N ≥ 1)")
	}
	if kv, ok := byKey["action"]; ok {
		w.Action, _ = l.enum(kv.v, "wait action", DSNActions)
		if w.For != "" && w.For != "dsn" {
			l.errorf(kv.k, "action only goes with for: dsn")
		}
	} else if w.For == "dsn" {
		l.errorf(forKV.v, "wait for dsn needs action: failed or action: delayed")
	}
	if kv, ok := byKey["timeout"]; ok {
		d, _ := l.duration(kv.v, "timeout")
		w.Timeout = d
	}
	if kv, ok := byKey["timeout_from"]; ok {
		w.TimeoutFrom, _ = l.enum(kv.v, "timeout_from", TimeoutFroms)
		if _, both := byKey["timeout"]; both {
			l.errorf(kv.k, "give timeout or timeout_from, not both")
		}
	}
	if kv, ok := byKey["factor"]; ok {
		if f, ok := l.number(kv.v, "factor"); ok {
			if f <= 0 || f > MaxFactor {
				l.errorf(kv.v, "factor must be above 0 and at most %d, got %s", MaxFactor, kv.v.Value)
			} else {
				w.Factor = f
			}
		}
		if _, abs := byKey["timeout"]; abs {
			l.errorf(kv.k, "factor scales the timing-derived timeout: it does not go with timeout")
		}
	}
	return w
}
