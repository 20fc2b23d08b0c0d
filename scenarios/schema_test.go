package scenarios

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// compileSchema compiles schema.json (draft 2020-12).
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	b, err := os.ReadFile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("schema.json is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("compile schema.json: %v", err)
	}
	return sch
}

// yamlDocs converts each YAML document of data to JSON-compatible values
// (through encoding/json, as an editor's YAML language server does).
func yamlDocs(t *testing.T, data []byte) []any {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("YAML: %v", err)
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("YAML document is not JSON-compatible: %v", err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, inst)
	}
}

// schemaValid reports whether every document of src passes the schema.
func schemaValid(t *testing.T, sch *jsonschema.Schema, src string) error {
	t.Helper()
	for _, d := range yamlDocs(t, []byte(src)) {
		if err := sch.Validate(d); err != nil {
			return err
		}
	}
	return nil
}

func TestPackMatchesSchema(t *testing.T) {
	sch := compileSchema(t)
	files, err := PackFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("the pack is empty")
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			const header = "# yaml-language-server: $schema=../schema.json\n"
			if !bytes.HasPrefix(data, []byte(header)) {
				t.Errorf("%s does not start with %q", name, header)
			}
			if err := schemaValid(t, sch, string(data)); err != nil {
				t.Errorf("%s fails the schema: %v", name, err)
			}
		})
	}
}

func TestSchemaRejectsBrokenScenario(t *testing.T) {
	sch := compileSchema(t)
	broken := `name: broken
policy:
  greylist: {delay: 2s, colour: grey}
steps:
  - send: {to: [a@x.test], count: 0}
    wait: delivered
expect:
  messages: [{verdict: vanished}]
`
	err := schemaValid(t, sch, broken)
	if err == nil {
		t.Fatal("the schema accepts a broken scenario")
	}
	// The report names the offending places.
	msg := err.Error()
	for _, want := range []string{"/policy/greylist", "/steps/0", "/expect/messages/0/verdict"} {
		if !strings.Contains(msg, want) {
			t.Errorf("schema error does not mention %s:\n%s", want, msg)
		}
	}
}

// TestSchemaAndLoaderAgree checks that schema and loader accept and reject
// the same snippets.
func TestSchemaAndLoaderAgree(t *testing.T) {
	sch := compileSchema(t)
	const head = "name: s\nsteps:\n  - send: {to: [a@x.test]}\n"
	cases := []struct {
		name  string
		src   string
		valid bool
	}{
		{"minimal", head, true},
		{"list form", "scenarios:\n  - name: a\n    steps: [{send: {to: a@x.test}}]\n  - name: b\n    steps: [{send: {to: a@x.test}}]\n", true},
		{"stream", head + "---\nname: t\nsteps:\n  - send: {to: [a@x.test]}\n", true},
		{"short waits", head + "  - wait: deferred\n  - wait: delivered\n  - wait: drained\n", true},
		{"long waits", head + "  - wait: {for: attempts, attempts: 3}\n  - wait: {for: dsn, action: failed, timeout_from: queue_lifetime, factor: 1.5}\n  - wait: {for: delivered, timeout: 1m}\n", true},
		{"restarts", head + "  - restart:\n  - restart: {times: 5, when: after-deferral}\n", true},
		{"checkpoint forms", head + "  - checkpoint:\n  - checkpoint: a\n  - checkpoint: {name: b}\n", true},
		{"fake MTA", head + "  - fakemta: stop\n  - fakemta: start\n  - fakemta: wipe-state\n  - flush: true\n", true},
		{"policy everything", `name: p
policy:
  greylist: {delay: 2s, retry_window: 48h, max_age: 35d, subnet_v4: 24, subnet_v6: 64, auto_whitelist_after: 0, reply: "451 4.7.1 wait %s s", stage: eod}
  rules:
    - match: {stage: rcpt, rcpt: "*@r.test", attempt: "1-3", connection: 2, client: 127.0.0.0/8, helo: "*", sender: "*", after: 10s, before: 20s}
      reply: "550 5.1.1 No such user"
    - {match: {stage: eod}, drop: true}
    - {match: {stage: helo}, close: 421}
    - {match: {stage: helo}, close: "421 4.3.2 bye"}
    - {match: {stage: data}, delay: 5s}
    - {match: {stage: starttls}, tls: fail}
    - {accept: true}
steps:
  - send: {to: a@x.test}
  - restart: {when: during-data}
  - policy: {}
`, true},
		{"expect everything", head + "expect:\n  messages:\n    - {group: default, verdict: bounced, within: 2m, dsn: {action: failed}}\n  no_duplicates: true\n  duplicates: tolerate\n  retry_too_soon: fail\n", true},
		{"send everything", "name: s\nsteps:\n  - send: {name: g, count: 2, from: a@b.test, to: c@d.test, size: 10, headers: {X-A: b}, ehlo_twice: true, rset_before_mail: true, concurrency: 2, tag_sender: false}\n  - send: {resubmit_same_message_id: true}\n", true},

		{"unknown key", head + "colour: red\n", false},
		{"labels not a list", "name: s\nlabels: greylist\n" + head[8:], false},
		{"to null", "name: s\nsteps:\n  - send: {to: }\n", false},
		{"no name", "steps:\n  - send: {to: [a@x.test]}\n", false},
		{"name with space", "name: a b\nsteps:\n  - send: {to: [a@x.test]}\n", false},
		{"no send", "name: s\nsteps:\n  - flush: true\n", false},
		{"two actions", "name: s\nsteps:\n  - send: {to: [a@x.test]}\n    flush: true\n", false},
		{"empty step", head + "  - {}\n", false},
		{"count zero", "name: s\nsteps:\n  - send: {to: [a@x.test], count: 0}\n", false},
		{"count too big", "name: s\nsteps:\n  - send: {to: [a@x.test], count: 100001}\n", false},
		{"no to", "name: s\nsteps:\n  - send: {count: 2}\n", false},
		{"bad address", "name: s\nsteps:\n  - send: {to: [bob]}\n", false},
		{"wait attempts without attempts", head + "  - wait: {for: attempts}\n", false},
		{"wait dsn without action", head + "  - wait: {for: dsn}\n", false},
		{"wait dsn bad action", head + "  - wait: {for: dsn, action: relayed}\n", false},
		{"wait action with delivered", head + "  - wait: {for: delivered, action: failed}\n", false},
		{"wait timeout number", head + "  - wait: {for: delivered, timeout: 30}\n", false},
		{"wait timeout and timeout_from", head + "  - wait: {for: delivered, timeout: 3s, timeout_from: retry_max}\n", false},
		{"wait short dsn", head + "  - wait: dsn\n", false},
		{"restart times 6", head + "  - restart: {times: 6}\n", false},
		{"restart when", head + "  - restart: {when: later}\n", false},
		{"fakemta pause", head + "  - fakemta: pause\n", false},
		{"flush false", head + "  - flush: false\n", false},
		{"unknown verdict", head + "expect:\n  messages: [{verdict: vanished}]\n", false},
		{"no verdict", head + "expect:\n  messages: [{group: default}]\n", false},
		{"delivered and failed DSN", head + "expect:\n  messages: [{verdict: delivered, dsn: {action: failed}}]\n", false},
		{"duplicates mode", head + "expect:\n  duplicates: ignore\n", false},
		{"retry_too_soon mode", head + "expect:\n  retry_too_soon: error\n", false},
		{"policy unknown key", "name: s\npolicy: {greylist: {colour: grey}}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"policy bad stage", "name: s\npolicy: {rules: [{match: {stage: lunch}, drop: true}]}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"rule without action", "name: s\npolicy: {rules: [{match: {stage: rcpt}}]}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"rule with two actions", "name: s\npolicy: {rules: [{drop: true, accept: true}]}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"tls outside starttls", "name: s\npolicy: {rules: [{match: {stage: rcpt}, tls: fail}]}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"greylist 5xx reply", "name: s\npolicy: {greylist: {reply: \"550 no\"}}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"bad attempt range", "name: s\npolicy: {rules: [{match: {attempt: \"0-2\"}, drop: true}]}\nsteps:\n  - send: {to: a@x.test}\n", false},
		{"bad duration", "name: s\npolicy: {greylist: {delay: soon}}\nsteps:\n  - send: {to: a@x.test}\n", false},
	}
	// Rules only the loader checks, because they follow what earlier steps
	// did or are not worth a schema construct; the schema accepts these.
	loaderOnly := map[string]string{
		"during-data without a tarpit": head + "  - restart: {when: during-data}\n",
		"wait for a group sent later":  head + "  - wait: {for: delivered, group: g}\n  - send: {name: g, to: a@x.test}\n",
		"fake MTA left stopped":        head + "  - fakemta: stop\n",
		"reserved header":              "name: s\nsteps:\n  - send: {to: a@x.test, headers: {Message-ID: x}}\n",
	}
	for name, src := range loaderOnly {
		t.Run(name, func(t *testing.T) {
			if _, err := LoadBytes("agree.yaml", []byte(src)); err == nil {
				t.Error("loader accepts it")
			}
			if err := schemaValid(t, sch, src); err != nil {
				t.Errorf("schema rejects it (then move it to the shared cases): %v", err)
			}
		})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, lerr := LoadBytes("agree.yaml", []byte(tc.src))
			serr := schemaValid(t, sch, tc.src)
			if (lerr == nil) != tc.valid {
				t.Errorf("loader: valid=%v, want %v (%v)", lerr == nil, tc.valid, lerr)
			}
			if (serr == nil) != tc.valid {
				t.Errorf("schema: valid=%v, want %v (%v)", serr == nil, tc.valid, serr)
			}
		})
	}
}
