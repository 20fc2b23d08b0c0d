package scenarios

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

// errStrings flattens err into its messages.
func errStrings(err error) []string {
	var out []string
	for _, e := range flatten(err) {
		out = append(out, e.Error())
	}
	return out
}

func TestLoadBytesFullScenario(t *testing.T) {
	src := `# a comment
name: full
description: every key once
labels: [greylist, seed]
needs: [stop]
policy:
  greylist:
    delay: 2s
  rules:
    - match: {stage: rcpt, rcpt: "b@x.test", attempt: "1"}
      reply: "451 4.7.1 later"
steps:
  - send:
      name: g1
      count: 3
      from: s@client.test
      to: a@x.test
      size: 2048
      headers: {X-Test: "yes"}
      ehlo_twice: true
      rset_before_mail: true
      concurrency: 2
      tag_sender: false
  - send: {name: g1, resubmit_same_message_id: true}
  - wait: deferred
  - wait: {for: attempts, attempts: 2, group: g1, timeout: 1m30s}
  - wait: {for: dsn, action: delayed, timeout_from: delay_warning, factor: 1.5}
  - restart: {times: 2, when: after-deferral}
  - restart:
  - fakemta: restart
  - fakemta: wipe-state
  - policy: {rules: [{match: {stage: data}, delay: 3s}]}
  - restart: {when: during-data}
  - flush: true
  - checkpoint:
  - checkpoint: named
  - checkpoint: {name: named2}
expect:
  messages:
    - group: g1
      verdict: delivered
      within: 35d
      dsn: {action: delayed}
  no_duplicates: false
  duplicates: tolerate
  retry_too_soon: fail
exclusive: true
`
	scs, err := LoadBytes("full.yaml", []byte(src))
	if err != nil {
		t.Fatalf("LoadBytes: %v", err)
	}
	if len(scs) != 1 {
		t.Fatalf("got %d scenarios, want 1", len(scs))
	}
	sc := scs[0]
	if sc.Name != "full" || sc.Description != "every key once" || sc.File != "full.yaml" || sc.Line != 2 || sc.Col != 1 {
		t.Errorf("header fields: %+v", sc)
	}
	if !reflect.DeepEqual(sc.Labels, []string{"greylist", "seed"}) || !reflect.DeepEqual(sc.DeclaredNeeds, []string{"stop"}) || !sc.Exclusive {
		t.Errorf("labels %v needs %v exclusive %v", sc.Labels, sc.DeclaredNeeds, sc.Exclusive)
	}
	if sc.Policy.Kind != yaml.MappingNode || sc.Policy.Line != 7 {
		t.Errorf("policy node kind %v line %d", sc.Policy.Kind, sc.Policy.Line)
	}
	// The kept node is what the runner hands to the fake MTA.
	pol, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy)
	if err != nil || pol.Greylist == nil || pol.Greylist.Delay != 2*time.Second || len(pol.Rules) != 1 {
		t.Errorf("policy node does not parse back: %+v %v", pol, err)
	}
	if len(sc.Steps) != 15 {
		t.Fatalf("got %d steps, want 15", len(sc.Steps))
	}
	s0 := sc.Steps[0].Send
	tagFalse := false
	want0 := &Send{Name: "g1", Count: 3, From: "s@client.test", To: []string{"a@x.test"}, Size: 2048,
		Headers: map[string]string{"X-Test": "yes"}, EHLOTwice: true, RsetBeforeMail: true, Concurrency: 2, TagSender: &tagFalse}
	if !reflect.DeepEqual(s0, want0) {
		t.Errorf("send: got %+v, want %+v", s0, want0)
	}
	if st := sc.Steps[0]; st.Line != 13 || st.Col != 5 {
		t.Errorf("step 1 at %d:%d, want 13:5", st.Line, st.Col)
	}
	if st := sc.Steps[2]; st.Line != 25 || st.Col != 5 || st.Wait == nil || st.Wait.For != "deferred" {
		t.Errorf("step 3: %+v", st)
	}
	if w := sc.Steps[3].Wait; w.For != "attempts" || w.Attempts != 2 || w.Group != "g1" || w.Timeout.D() != 90*time.Second {
		t.Errorf("wait attempts: %+v", w)
	}
	if w := sc.Steps[4].Wait; w.For != "dsn" || w.Action != "delayed" || w.TimeoutFrom != "delay_warning" || w.Factor != 1.5 {
		t.Errorf("wait dsn: %+v", w)
	}
	if r := sc.Steps[5].Restart; r == nil || r.Times != 2 || r.When != "after-deferral" {
		t.Errorf("restart: %+v", r)
	}
	if r := sc.Steps[6].Restart; r == nil || r.Times != 0 || r.When != "" {
		t.Errorf("bare restart: %+v", r)
	}
	if sc.Steps[7].FakeMTA != "restart" || sc.Steps[8].FakeMTA != "wipe-state" {
		t.Errorf("fakemta steps: %q %q", sc.Steps[7].FakeMTA, sc.Steps[8].FakeMTA)
	}
	if p := sc.Steps[9].Policy; p == nil || p.Kind != yaml.MappingNode {
		t.Errorf("policy step: %+v", p)
	}
	if !sc.Steps[11].Flush {
		t.Errorf("flush step not set")
	}
	for i, want := range map[int]string{12: "step-13", 13: "named", 14: "named2"} {
		if c := sc.Steps[i].Checkpoint; c == nil || c.Name != want {
			t.Errorf("checkpoint step %d: %+v, want name %q", i+1, c, want)
		}
	}
	e := sc.Expect
	if len(e.Messages) != 1 || e.Messages[0].Group != "g1" || e.Messages[0].Verdict != "delivered" ||
		e.Messages[0].Within.D() != 35*24*time.Hour || e.Messages[0].DSN == nil || e.Messages[0].DSN.Action != "delayed" {
		t.Errorf("expect messages: %+v", e.Messages)
	}
	if e.NoDuplicates == nil || *e.NoDuplicates || e.Duplicates != "tolerate" || e.RetryTooSoon != "fail" {
		t.Errorf("expect: %+v", e)
	}
}

func TestLoadBytesStreamAndList(t *testing.T) {
	stream := `name: one
steps:
  - send: {to: [a@x.test]}
---
# second document
name: two
steps:
  - send: {to: [a@x.test]}
  - wait: delivered
`
	scs, err := LoadBytes("stream.yaml", []byte(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(scs) != 2 || scs[0].Name != "one" || scs[1].Name != "two" {
		t.Fatalf("got %+v", scs)
	}
	if scs[1].Line != 6 || scs[1].Steps[1].Line != 9 {
		t.Errorf("positions in the second document: scenario line %d, step line %d (want 6, 9)", scs[1].Line, scs[1].Steps[1].Line)
	}

	list := `scenarios:
  - name: one
    steps: [{send: {to: a@x.test}}]
  - name: two
    steps:
      - send: {to: a@x.test}
`
	scs, err = LoadBytes("list.yaml", []byte(list))
	if err != nil {
		t.Fatal(err)
	}
	if len(scs) != 2 || scs[0].Name != "one" || scs[1].Name != "two" || scs[1].Line != 4 || scs[1].Col != 5 {
		t.Fatalf("got %+v", scs)
	}
	if !reflect.DeepEqual(scs[0].Steps[0].Send.To, []string{"a@x.test"}) {
		t.Errorf("to shorthand: %v", scs[0].Steps[0].Send.To)
	}
}

// ok is a valid scenario body after the name, for error cases to extend.
const okSteps = "steps:\n  - send: {to: [a@x.test]}\n"

// at is an expected error: at line Line, at the first Tok on that line
// (column 1 when Tok is ""), with message Msg.
type at struct {
	Line int
	Tok  string
	Msg  string
}

// render turns expectations into "file:line:col: msg" strings for src.
func render(t *testing.T, file, src string, want []at) []string {
	t.Helper()
	lines := strings.Split(src, "\n")
	var out []string
	for _, w := range want {
		col := 1
		if w.Tok != "" {
			i := strings.Index(lines[w.Line-1], w.Tok)
			if i < 0 {
				t.Fatalf("test bug: %q not on line %d %q", w.Tok, w.Line, lines[w.Line-1])
			}
			col = i + 1
		}
		out = append(out, fmt.Sprintf("%s:%d:%d: %s", file, w.Line, col, w.Msg))
	}
	return out
}

func TestLoadErrors(t *testing.T) {
	const stepKnown = "(known: send, wait, restart, fakemta, policy, flush, checkpoint)"
	const verdicts = "delivered, bounced, delayed-notice, held-silently, stalled, lost, duplicate, stale, premature-bounce, retry-too-soon, bad-dsn"
	cases := []struct {
		name string
		src  string
		want []at
	}{
		{"syntax", "name: x\nfoo: bar\n  baz: : q\n" + okSteps, []at{{3, "", "YAML syntax: mapping values are not allowed in this context"}}},
		{"empty file", "# nothing\n", []at{{1, "", "no scenario in file"}}},
		{"not a mapping", "- a\n- b\n", []at{{1, "", "scenario must be a mapping of keys, got a list"}}},
		{"unknown top key", "name: x\nstep: []\n" + okSteps, []at{{2, "step",
			`unknown key "step" in scenario (known: name, description, labels, exclusive, policy, needs, steps, expect)`}}},
		{"exclusive not a bool", "name: x\nexclusive: yes please\n" + okSteps, []at{{2, "yes", "exclusive must be true or false, got the string \"yes please\""}}},
		{"duplicate key", "name: x\nname: y\n" + okSteps, []at{{2, "name", `duplicate key "name" in scenario (first at line 1)`}}},
		{"no name", okSteps, []at{{1, "", "scenario has no name"}}},
		{"bad name", "name: 'has space'\n" + okSteps, []at{{1, "'has",
			`name "has space" must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit`}}},
		{"name not a string", "name: 12\n" + okSteps, []at{{1, "12", "name must be a string, got the number 12"}}},
		{"no steps", "name: x\n", []at{{1, "", "scenario has no steps"}}},
		{"empty steps", "name: x\nsteps: []\n", []at{{2, "[]", "steps must be a non-empty list, got a list"}}},
		{"no send", "name: x\nsteps:\n  - flush: true\n", []at{{2, "steps", "scenario has no send step: there is nothing to judge"}}},
		{"unknown need", "name: x\nneeds: [restart, teleport]\n" + okSteps, []at{{2, "teleport",
			`needs entry must be one of restart, stop, queue, flush, fakemta-control, delay-warning, multi-mx, got "teleport"`}}},
		{"step without action", "name: x\nsteps:\n  - send: {to: a@x.test}\n  - {}\n", []at{{4, "{}",
			"step has no action (one of: send, wait, restart, fakemta, policy, flush, checkpoint)"}}},
		{"step with two actions", "name: x\nsteps:\n  - send: {to: a@x.test}\n    flush: true\n", []at{{3, "send",
			"step has 2 actions (send, flush): give exactly one per step"}}},
		{"unknown step key", "name: x\nsteps:\n  - send: {to: a@x.test}\n  - sleep: 5s\n", []at{{4, "sleep",
			`unknown key "sleep" in step ` + stepKnown}}},
		{"step not a mapping", "name: x\nsteps:\n  - send: {to: a@x.test}\n  - flush\n", []at{{4, "flush",
			`step must be a mapping of keys, got the string "flush"`}}},
		{"send without to", "name: x\nsteps:\n  - send: {count: 2}\n", []at{{3, "{", "send has no recipients (to)"}}},
		{"send empty to", "name: x\nsteps:\n  - send: {to: []}\n", []at{{3, "[]", "to must name at least one recipient"}}},
		{"bad recipient", "name: x\nsteps:\n  - send: {to: [a@x.test, bob]}\n", []at{{3, "bob",
			`recipient "bob" is not an address like local@domain`}}},
		{"bad sender", "name: x\nsteps:\n  - send: {to: a@x.test, from: '<>'}\n", []at{{3, "'<>'",
			`from "<>" is not an address like local@domain`}}},
		{"count zero", "name: x\nsteps:\n  - send: {to: a@x.test, count: 0}\n", []at{{3, "0}", "count must be from 1 to 100000, got 0"}}},
		{"count too big", "name: x\nsteps:\n  - send: {to: a@x.test, count: 100001}\n", []at{{3, "100001",
			"count must be from 1 to 100000, got 100001"}}},
		{"count not a number", "name: x\nsteps:\n  - send: {to: a@x.test, count: many}\n", []at{{3, "many",
			`count must be a whole number, got the string "many"`}}},
		{"concurrency", "name: x\nsteps:\n  - send: {to: a@x.test, concurrency: 101}\n", []at{{3, "101",
			"concurrency must be from 1 to 100, got 101"}}},
		{"unknown send key", "name: x\nsteps:\n  - send: {to: a@x.test, cc: b@x.test}\n", []at{{3, "cc",
			`unknown key "cc" in send (known: name, count, from, to, size, headers, ehlo_twice, rset_before_mail, resubmit_same_message_id, concurrency, tag_sender)`}}},
		{"reserved header", "name: x\nsteps:\n  - send: {to: a@x.test, headers: {message-id: x}}\n", []at{{3, "message-id",
			"header message-id is set by the harness for every message (the ledger follows messages by it)"}}},
		{"multi-line header", "name: x\nsteps:\n  - send: {to: a@x.test, headers: {X-A: \"a\\nb\"}}\n", []at{{3, `"a`,
			"header X-A must be one line"}}},
		{"resubmit first", "name: x\nsteps:\n  - send: {resubmit_same_message_id: true}\n", []at{{3, "true",
			"resubmit_same_message_id needs an earlier send step whose messages it submits again"}}},
		{"bool as string", "name: x\nsteps:\n  - send: {to: a@x.test, ehlo_twice: 'yes'}\n", []at{{3, "'yes'",
			`ehlo_twice must be true or false, got the string "yes"`}}},
		{"wait before send", "name: x\nsteps:\n  - wait: delivered\n  - send: {to: a@x.test}\n", []at{{3, "delivered",
			"wait before any send step: there is nothing to wait for"}}},
		{"wait unknown for", "name: x\n" + okSteps + "  - wait: {for: bounced}\n", []at{{4, "bounced",
			`wait for must be one of deferred, delivered, dsn, attempts, drained, got "bounced"`}}},
		{"wait without for", "name: x\n" + okSteps + "  - wait: {group: default}\n", []at{{4, "{",
			"wait has no condition (for: deferred | delivered | dsn | attempts | drained)"}}},
		{"wait attempts missing", "name: x\n" + okSteps + "  - wait: {for: attempts}\n", []at{{4, "attempts",
			"wait for attempts needs attempts: N (N ≥ 1)"}}},
		{"wait attempts zero", "name: x\n" + okSteps + "  - wait: {for: attempts, attempts: 0}\n", []at{{4, "0}",
			"attempts must be from 1 to 1000, got 0"}}},
		{"wait attempts wrong for", "name: x\n" + okSteps + "  - wait: {for: delivered, attempts: 2}\n", []at{{4, "attempts",
			"attempts only goes with for: attempts"}}},
		{"wait dsn no action", "name: x\n" + okSteps + "  - wait: {for: dsn}\n", []at{{4, "dsn",
			"wait for dsn needs action: failed or action: delayed"}}},
		{"wait dsn bad action", "name: x\n" + okSteps + "  - wait: {for: dsn, action: relayed}\n", []at{{4, "relayed",
			`wait action must be one of failed, delayed, got "relayed"`}}},
		{"wait action wrong for", "name: x\n" + okSteps + "  - wait: {for: delivered, action: failed}\n", []at{{4, "action",
			"action only goes with for: dsn"}}},
		{"wait short dsn", "name: x\n" + okSteps + "  - wait: dsn\n", []at{
			{4, "dsn", `wait must be one of deferred, delivered, drained, got "dsn"`},
			{4, "dsn", "wait for dsn needs the long form, e.g. {for: dsn, action: failed}"}}},
		{"wait unknown group", "name: x\n" + okSteps + "  - wait: {for: delivered, group: later}\n  - send: {name: later, to: a@x.test}\n", []at{{4, "later",
			`wait group "later" is not sent by any earlier send step (groups: default)`}}},
		{"wait timeout and timeout_from", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout: 5s, timeout_from: retry_max}\n", []at{{4, "timeout_from",
			"give timeout or timeout_from, not both"}}},
		{"wait timeout and factor", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout: 5s, factor: 2}\n", []at{{4, "factor",
			"factor scales the timing-derived timeout: it does not go with timeout"}}},
		{"wait bad factor", "name: x\n" + okSteps + "  - wait: {for: delivered, factor: 0}\n", []at{{4, "0}",
			"factor must be above 0 and at most 100, got 0"}}},
		{"wait bad timeout", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout: 30}\n", []at{{4, "30",
			"timeout must be a string, got the number 30"}}},
		{"wait bad duration", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout: 5 minutes}\n", []at{{4, "5 minutes",
			`timeout: invalid duration "5 minutes" (want e.g. 500ms, 30s, 5m, 2h, 35d)`}}},
		{"wait zero timeout", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout: 0s}\n", []at{{4, "0s",
			`timeout must be longer than zero, got "0s"`}}},
		{"wait bad timeout_from", "name: x\n" + okSteps + "  - wait: {for: delivered, timeout_from: forever}\n", []at{{4, "forever",
			`timeout_from must be one of retry_max, queue_lifetime, delay_warning, got "forever"`}}},
		{"restart times", "name: x\nsteps:\n  - restart: {times: 6}\n" + okSteps[7:], []at{{3, "6",
			"restart times must be from 1 to 5, got 6"}}},
		{"restart when", "name: x\nsteps:\n  - restart: {when: later}\n" + okSteps[7:], []at{{3, "later",
			`restart when must be one of now, after-deferral, during-data, got "later"`}}},
		{"restart during-data without tarpit", "name: x\n" + okSteps + "  - restart: {when: during-data}\n", []at{{4, "during-data",
			"restart when: during-data waits until the fake MTA holds a DATA phase open: the policy in effect needs a rule with delay at stage data or eod"}}},
		{"restart during-data after the tarpit is swapped out", "name: x\npolicy: {rules: [{match: {stage: eod}, delay: 5s}]}\n" + okSteps +
			"  - policy: {greylist: {delay: 1s}}\n  - restart: {when: during-data}\n", []at{{6, "during-data",
			"restart when: during-data waits until the fake MTA holds a DATA phase open: the policy in effect needs a rule with delay at stage data or eod"}}},
		{"fakemta unknown", "name: x\n" + okSteps + "  - fakemta: pause\n", []at{{4, "pause",
			`fakemta must be one of stop, start, restart, wipe-state, got "pause"`}}},
		{"fakemta left stopped", "name: x\n" + okSteps + "  - fakemta: stop\n", []at{{2, "steps",
			"the scenario ends with the fake MTA stopped: add a `fakemta: start` step so the relay can deliver"}}},
		{"fakemta start twice", "name: x\n" + okSteps + "  - fakemta: start\n", []at{{4, "start",
			"fakemta: start, but the fake MTA is already running (use restart)"}}},
		{"fakemta wipe while stopped", "name: x\n" + okSteps + "  - fakemta: stop\n  - fakemta: wipe-state\n  - fakemta: start\n", []at{{5, "wipe-state",
			"fakemta: wipe-state needs a running fake MTA (start it first)"}}},
		{"flush false", "name: x\n" + okSteps + "  - flush: false\n", []at{{4, "false", "flush must be true (leave the step out otherwise)"}}},
		{"checkpoint bad", "name: x\n" + okSteps + "  - checkpoint: {label: a}\n", []at{{4, "label",
			`unknown key "label" in checkpoint (known: name)`}}},
		{"unknown verdict", "name: x\n" + okSteps + "expect:\n  messages:\n    - verdict: vanished\n", []at{{6, "vanished",
			`unknown verdict "vanished"; verdicts: ` + verdicts}}},
		{"verdict spelling", "name: x\n" + okSteps + "expect:\n  messages:\n    - verdict: held silently\n", []at{{6, "held",
			`unknown verdict "held silently" (did you mean "held-silently"?); verdicts: ` + verdicts}}},
		{"no verdict", "name: x\n" + okSteps + "expect:\n  messages:\n    - group: default\n", []at{{6, "group",
			"message expectation has no verdict (" + verdicts + ")"}}},
		{"unknown expect group", "name: x\n" + okSteps + "expect:\n  messages:\n    - {group: nope, verdict: delivered}\n", []at{{6, "nope",
			`group "nope" is not the name of any send step (groups: default)`}}},
		{"dsn contradiction", "name: x\n" + okSteps + "expect:\n  messages:\n    - {verdict: delivered, dsn: {action: failed}}\n", []at{{6, "delivered",
			"verdict delivered contradicts dsn action failed (a bounce): expect verdict bounced"}}},
		{"dsn without action", "name: x\n" + okSteps + "expect:\n  messages:\n    - {verdict: bounced, dsn: {}}\n", []at{{6, "{}",
			"dsn needs action: failed or action: delayed"}}},
		{"within", "name: x\n" + okSteps + "expect:\n  messages:\n    - {verdict: delivered, within: 1 week}\n", []at{{6, "1 week",
			`within: invalid duration "1 week" (want e.g. 500ms, 30s, 5m, 2h, 35d)`}}},
		{"duplicates mode", "name: x\n" + okSteps + "expect:\n  duplicates: ignore\n", []at{{5, "ignore",
			`duplicates must be one of fail, tolerate, got "ignore"`}}},
		{"retry_too_soon mode", "name: x\n" + okSteps + "expect:\n  retry_too_soon: error\n", []at{{5, "error",
			`retry_too_soon must be one of warn, fail, got "error"`}}},
		{"unknown expect key", "name: x\n" + okSteps + "expect:\n  verdict: delivered\n", []at{{5, "verdict",
			`unknown key "verdict" in expect (known: messages, no_duplicates, duplicates, retry_too_soon)`}}},
		{"policy error", "name: x\npolicy:\n  greylist:\n    delay: soon\n" + okSteps, []at{{4, "soon",
			`delay: invalid duration "soon" (want e.g. 2s, 5m, 48h, 35d)`}}},
		{"policy step error", "name: x\n" + okSteps + "  - policy:\n      rules:\n        - match: {stage: rcpt}\n          bounce: true\n", []at{
			{6, "match", "rule has no action (one of: reply, drop, close, delay, tls, accept)"},
			{7, "bounce", `unknown key "bounce" in rule (known: match, reply, drop, close, delay, tls, accept)`}}},
		{"merge key", "name: x\nsteps:\n  - send: {<<: {to: a@x.test}}\n", []at{
			{3, "{<<", "send has no recipients (to)"},
			{3, "<<", "merge keys (<<) are not supported in scenario files; repeat the keys or use an alias for a whole value"}}},
		{"list form extra key", "scenarios:\n  - name: x\n    steps: [{send: {to: a@x.test}}]\nversion: 2\n", []at{{4, "version",
			`unknown key "version" in file (known: scenarios)`}}},
		{"list form not a list", "scenarios: x\n", []at{{1, "x", `scenarios must be a non-empty list of scenarios, got the string "x"`}}},
		{"duplicate names in a file", "name: x\n" + okSteps + "---\nname: x\n" + okSteps, []at{{5, "",
			`scenario name "x" is already used at f.yaml:1:1 (names must be unique)`}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scs, err := LoadBytes("f.yaml", []byte(tc.src))
			if err == nil {
				t.Fatalf("no error; loaded %+v", scs)
			}
			if scs != nil {
				t.Errorf("scenarios returned with an error: %+v", scs)
			}
			got, want := errStrings(err), render(t, "f.yaml", tc.src, tc.want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("errors:\n got %q\nwant %q", got, want)
			}
			for _, e := range flatten(err) {
				var pe *fakemta.PositionError
				if !errors.As(e, &pe) {
					t.Errorf("error %v is a %T, not a *fakemta.PositionError", e, e)
				}
			}
		})
	}
}

func TestLoadReportsEveryErrorInOrder(t *testing.T) {
	src := `name: many-errors
labels: [ok, "not ok"]
policy:
  rules:
    - match: {stage: lunch}
      drop: true
steps:
  - send: {to: [nobody], count: -1}
  - wait: {for: dsn}
  - restart: {times: 0}
  - frobnicate: true
---
steps:
  - send: {to: a@x.test}
`
	_, err := LoadBytes("many.yaml", []byte(src))
	want := render(t, "many.yaml", src, []at{
		{2, `"not ok"`, `label "not ok" must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{5, "lunch", `unknown stage "lunch" (connect, helo, starttls, mail, rcpt, data, eod, quit)`},
		{8, "nobody", `recipient "nobody" is not an address like local@domain`},
		{8, "-1", "count must be from 1 to 100000, got -1"},
		{9, "dsn", "wait for dsn needs action: failed or action: delayed"},
		{10, "0", "restart times must be from 1 to 5, got 0"},
		{11, "frobnicate", `unknown key "frobnicate" in step (known: send, wait, restart, fakemta, policy, flush, checkpoint)`},
		{13, "", "scenario has no name"},
	})
	if got := errStrings(err); !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %q\nwant %q", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestAliasesResolve(t *testing.T) {
	src := `scenarios:
  - name: a
    policy: &gl
      greylist: {delay: 2s}
    steps:
      - send: &one {to: [a@x.test]}
  - name: b
    policy: *gl
    steps:
      - send: *one
`
	scs, err := LoadBytes("alias.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if scs[1].Policy.Kind != yaml.MappingNode || scs[1].Steps[0].Send == nil || scs[1].Steps[0].Send.To[0] != "a@x.test" {
		t.Errorf("aliases not resolved: %+v", scs[1])
	}
}

func write(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadPaths(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "b.yml", "name: b\n"+okSteps)
	write(t, dir, "a.yaml", "name: a\n"+okSteps+"---\nname: a2\n"+okSteps)
	write(t, dir, "notes.txt", "not a scenario")
	write(t, dir, "sub/c.yaml", "this: is not loaded\n")
	single := write(t, t.TempDir(), "single.scenario", "name: single\n"+okSteps)

	scs, err := LoadPaths([]string{dir, single})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range scs {
		names = append(names, s.Name)
	}
	if want := []string{"a", "a2", "b", "single"}; !reflect.DeepEqual(names, want) {
		t.Errorf("names %v, want %v (folder files in name order, subfolders and other extensions skipped)", names, want)
	}
	if scs[0].File != filepath.Join(dir, "a.yaml") {
		t.Errorf("File = %q", scs[0].File)
	}

	if scs, err := LoadPaths(nil); err != nil || scs != nil {
		t.Errorf("LoadPaths(nil) = %v, %v", scs, err)
	}
}

func TestLoadPathsErrorsAcrossFiles(t *testing.T) {
	dir := t.TempDir()
	a := write(t, dir, "a.yaml", "name: same\n"+okSteps)
	b := write(t, dir, "b.yaml", "\n\nname: same\n"+okSteps)
	c := write(t, dir, "c.yaml", "name: c\nsteps: 3\n")
	missing := filepath.Join(dir, "missing.yaml")
	empty := t.TempDir()

	_, err := LoadPaths([]string{dir, missing, empty})
	want := []string{
		c + `:2:8: steps must be a non-empty list, got the number 3`,
		missing + ":1:1: cannot read: no such file or directory",
		empty + ":1:1: folder holds no *.yaml or *.yml scenario files",
		b + `:3:1: scenario name "same" is already used at ` + a + `:1:1 (names must be unique)`,
	}
	got := errStrings(err)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors:\n got %q\nwant %q", got, want)
	}
	// Validate reports the same list, ready to print.
	if v := Validate([]string{dir, missing, empty}); !reflect.DeepEqual(errorsText(v), want) {
		t.Errorf("Validate:\n got %q\nwant %q", errorsText(v), want)
	}
}

func errorsText(errs []error) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

func TestLoadFile(t *testing.T) {
	p := write(t, t.TempDir(), "x.yaml", "name: x\n"+okSteps)
	scs, err := LoadFile(p)
	if err != nil || len(scs) != 1 || scs[0].File != p {
		t.Fatalf("LoadFile = %+v, %v", scs, err)
	}
	_, err = LoadFile(p + ".nope")
	if got := errStrings(err); len(got) != 1 || got[0] != p+".nope:1:1: cannot read: no such file or directory" {
		t.Errorf("missing file: %q", got)
	}
}

func TestValidate(t *testing.T) {
	good := write(t, t.TempDir(), "good.yaml", "name: good\n"+okSteps)
	if errs := Validate([]string{good}); errs != nil {
		t.Errorf("Validate(good) = %v", errs)
	}
	src := "name: bad\nsteps:\n  - send: {to: [x]}\n  - wait: nothing\n"
	bad := write(t, t.TempDir(), "bad.yaml", src)
	errs := Validate([]string{bad})
	want := render(t, bad, src, []at{
		{3, "x]", `recipient "x" is not an address like local@domain`},
		{4, "nothing", `wait must be one of deferred, delivered, drained, got "nothing"`},
	})
	if !reflect.DeepEqual(errorsText(errs), want) {
		t.Errorf("Validate(bad):\n got %q\nwant %q", errorsText(errs), want)
	}
	// No paths: the default pack, which must be valid.
	if errs := Validate(nil); errs != nil {
		t.Errorf("Validate(nil) (default pack) = %v", errs)
	}
}

func TestNeeds(t *testing.T) {
	load := func(src string) Scenario {
		t.Helper()
		scs, err := LoadBytes("n.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return scs[0]
	}
	caps := func(c ...profile.Capability) []profile.Capability { return c }
	cases := []struct {
		name string
		src  string
		want []profile.Capability
	}{
		{"nothing", "name: x\n" + okSteps, nil},
		{"declared", "name: x\nneeds: [stop, queue, stop]\n" + okSteps, caps(profile.CapStop, profile.CapQueue)},
		{"restart", "name: x\nsteps:\n  - restart: {times: 2}\n  - send: {to: a@x.test}\n", caps(profile.CapRestart)},
		{"fakemta", "name: x\nsteps:\n  - fakemta: stop\n  - send: {to: a@x.test}\n  - fakemta: start\n", caps(profile.CapFakeMTAControl)},
		{"wipe", "name: x\n" + okSteps + "  - fakemta: wipe-state\n", caps(profile.CapFakeMTAControl)},
		{"flush", "name: x\n" + okSteps + "  - flush: true\n", caps(profile.CapFlush)},
		{"checkpoint", "name: x\n" + okSteps + "  - checkpoint:\n", caps(profile.CapQueue)},
		{"held-silently expected", "name: x\n" + okSteps + "expect:\n  messages: [{verdict: held-silently}]\n", caps(profile.CapQueue)},
		{"wait dsn delayed", "name: x\n" + okSteps + "  - wait: {for: dsn, action: delayed}\n", caps(profile.CapDelayWarning)},
		{"wait dsn failed", "name: x\n" + okSteps + "  - wait: {for: dsn, action: failed}\n", nil},
		{"expect dsn delayed", "name: x\n" + okSteps + "expect:\n  messages: [{verdict: delivered, dsn: {action: delayed}}]\n", caps(profile.CapDelayWarning)},
		{"everything, in fixed order", "name: x\nneeds: [delay-warning]\n" + okSteps +
			"  - checkpoint: c\n  - flush: true\n  - fakemta: restart\n  - restart:\n",
			caps(profile.CapRestart, profile.CapQueue, profile.CapFlush, profile.CapFakeMTAControl, profile.CapDelayWarning)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := load(tc.src).Needs(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Needs() = %v, want %v", got, tc.want)
			}
		})
	}
	// Capabilities set by hand that this package does not know come last.
	sc := Scenario{DeclaredNeeds: []string{"zeta", "restart", "alpha"}}
	if got, want := sc.Needs(), caps(profile.CapRestart, "alpha", "zeta"); !reflect.DeepEqual(got, want) {
		t.Errorf("Needs() = %v, want %v", got, want)
	}
}
