package yamlcheck

import (
	"errors"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func parse(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Content[0]
}

func messages(c *Checker) []string {
	var out []string
	for _, e := range c.Errs() {
		out = append(out, e.Error())
	}
	return out
}

func TestMapping(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		keys      Keys
		want      []string // keys returned
		errs      []string
	}{
		{"known keys in order", "b: 1\na: 2\n", Keys{What: "x", Allowed: []string{"a", "b"}}, []string{"b", "a"}, nil},
		{"unknown key", "a: 1\nc: 2\n", Keys{What: "x", Allowed: []string{"a", "b"}}, []string{"a"},
			[]string{`f.yaml:2:1: unknown key "c" in x (known: a, b)`}},
		{"unknown at top level", "c: 2\n", Keys{Allowed: []string{"a"}}, nil,
			[]string{`f.yaml:1:1: unknown key "c" (known: a)`}},
		{"duplicate", "a: 1\nb: 2\na: 3\n", Keys{What: "x", Allowed: []string{"a", "b"}}, []string{"a", "b"},
			[]string{`f.yaml:3:1: duplicate key "a" in x (first at line 1)`}},
		{"any key", "zz: 1\n", Keys{What: "env"}, []string{"zz"}, nil},
		{"not a mapping", "[1]\n", Keys{What: "x"}, nil, []string{`f.yaml:1:1: x must be a mapping of keys, got a list`}},
		{"document not a mapping", "3\n", Keys{}, nil, []string{`f.yaml:1:1: the document must be a mapping of keys, got the number 3`}},
		{"key not a word", "[a]: 1\n", Keys{What: "x"}, nil, []string{`f.yaml:1:1: keys in x must be plain words, got a list`}},
		{"merge refused", "<<: {a: 1}\n", Keys{What: "x", Allowed: []string{"a"}}, nil,
			[]string{`f.yaml:1:1: merge keys (<<) are not supported in test files; repeat the keys or use an alias for a whole value`}},
		{"merge brings in unset keys", "base: &b {a: 1, b: 2}\nm:\n  <<: *b\n  a: 3\n", Keys{}, nil, nil},
		{"merge of a list", "<<: [{a: 1}, {a: 2, b: 3}]\n", Keys{What: "x", Allowed: []string{"a", "b"}, Merge: true}, []string{"a", "b"}, nil},
		{"merged unknown key", "<<: {c: 1}\n", Keys{What: "x", Allowed: []string{"a"}, Merge: true}, nil,
			[]string{`f.yaml:1:6: unknown key "c" in x (known: a)`}},
		{"merge of a scalar", "<<: 3\n", Keys{What: "x", Merge: true}, nil,
			[]string{`f.yaml:1:5: << merges a mapping or a list of mappings`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Checker{File: "f.yaml", Kind: "test"}
			n := parse(t, tc.src)
			if tc.name == "merge brings in unset keys" {
				kvs, _ := c.Mapping(n.Content[3], Keys{What: "m", Allowed: []string{"a", "b"}, Merge: true})
				if len(kvs) != 2 || kvs[0].Key != "a" || kvs[0].V.Value != "3" || kvs[1].Key != "b" || kvs[1].V.Value != "2" {
					t.Fatalf("got %+v, want a: 3 (own) then b: 2 (merged)", kvs)
				}
				return
			}
			kvs, _ := c.Mapping(n, tc.keys)
			var got []string
			for _, kv := range kvs {
				got = append(got, kv.Key)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("keys %v, want %v", got, tc.want)
			}
			if strings.Join(messages(c), "\n") != strings.Join(tc.errs, "\n") {
				t.Errorf("errors\n%s\nwant\n%s", strings.Join(messages(c), "\n"), strings.Join(tc.errs, "\n"))
			}
		})
	}
}

// Nested merges multiply; the checker stops them at a bound with one error.
func TestMergeBomb(t *testing.T) {
	src := "a: &a {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f"} {
		src += n + ": &" + n + " {" + strings.Repeat("<<: *"+prev+", ", 9) + "<<: *" + prev + "}\n"
		prev = n
	}
	src += "x: {<<: *f}\n"
	c := &Checker{File: "f.yaml"}
	root := parse(t, src)
	c.Mapping(root.Content[len(root.Content)-1], Keys{What: "x", Merge: true})
	if !strings.Contains(c.Err().Error(), "merge keys") {
		t.Fatalf("no merge bound error: %v", c.Err())
	}
}

func TestScalars(t *testing.T) {
	n := parse(t, "s: hi\ni: 7\nb: true\nf: 1.5\nq: '3'\nl: [a, b]\n")
	v := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		v[n.Content[i].Value] = n.Content[i+1]
	}
	c := &Checker{File: "f.yaml"}
	if s, ok := c.String(v["s"], "s"); !ok || s != "hi" {
		t.Errorf("String = %q %v", s, ok)
	}
	if i, ok := c.Int(v["i"], "i", 1, 10); !ok || i != 7 {
		t.Errorf("Int = %d %v", i, ok)
	}
	if b, ok := c.Bool(v["b"], "b"); !ok || !b {
		t.Errorf("Bool = %v %v", b, ok)
	}
	if f, ok := c.Number(v["f"], "f"); !ok || f != 1.5 {
		t.Errorf("Number = %v %v", f, ok)
	}
	if e, ok := c.Enum(v["s"], "s", []string{"hi", "ho"}); !ok || e != "hi" {
		t.Errorf("Enum = %q %v", e, ok)
	}
	if l := c.List(v["l"], "l"); len(l) != 2 || l[1].Value != "b" {
		t.Errorf("List = %v", l)
	}
	if c.Len() != 0 {
		t.Fatalf("errors for good values: %v", c.Err())
	}
	c.Int(v["q"], "count", 1, 10)
	c.Int(v["i"], "count", 1, 5)
	c.Bool(v["s"], "flush")
	c.Enum(v["s"], "mode", []string{"a", "b"})
	c.List(v["s"], "to")
	c.String(v["l"], "name")
	want := []string{
		`f.yaml:5:4: count must be a whole number, got the string "3"`,
		`f.yaml:2:4: count must be from 1 to 5, got 7`,
		`f.yaml:1:4: flush must be true or false, got the string "hi"`,
		`f.yaml:1:4: mode must be one of a, b, got "hi"`,
		`f.yaml:1:4: to must be a list, got the string "hi"`,
		`f.yaml:6:4: name must be a string, got a list`,
	}
	if got := messages(c); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	Sort(c.errs)
	if got := messages(c); got[0] != want[2] || got[len(got)-1] != want[5] {
		t.Errorf("Sort: %v", got)
	}
}

func TestSyntaxErrorAndPositions(t *testing.T) {
	var n yaml.Node
	err := yaml.Unmarshal([]byte("a: b\n  c: : d\n"), &n)
	if e := SyntaxError("f.yaml", err); e.Line != 2 || e.Col != 1 || strings.HasPrefix(e.Msg, "yaml:") {
		t.Errorf("SyntaxError = %v", e)
	}
	if e := SyntaxError("f.yaml", errors.New("yaml: something")); e.Error() != "f.yaml:1:1: something" {
		t.Errorf("SyntaxError without line = %v", e)
	}
	if e := At("f.yaml", nil, "whole file"); e.Error() != "f.yaml:1:1: whole file" {
		t.Errorf("At(nil) = %v", e)
	}
	b := []byte("ok: é\nx: \xff")
	if i := InvalidUTF8(b); i != len(b)-1 {
		t.Fatalf("InvalidUTF8 = %d", i)
	} else if line, col := Position(b, i); line != 2 || col != 4 {
		t.Errorf("Position = %d:%d, want 2:4", line, col)
	}
	if InvalidUTF8([]byte("é")) != -1 {
		t.Error("valid UTF-8 reported")
	}
	joined := errors.Join(errors.New("a"), errors.Join(errors.New("b"), errors.New("c")))
	if got := Flatten(joined); len(got) != 3 {
		t.Errorf("Flatten = %v", got)
	}
}
