// Package yamlcheck checks YAML input node by node, with positions: the
// one place where relay profiles, fake-MTA policies and scenarios (and
// each scenario step's decoder) find unknown and duplicate keys, merge
// keys, wrong kinds and wrong scalar types, and the one error type they
// report them with, "file:line:col: message".
//
// A loader walks the yaml.Node tree itself and keeps a Checker for the
// file; the Checker collects every error instead of stopping at the first,
// so one run of `greyharness validate` shows them all.
package yamlcheck

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Error is an input error at a position of a file. Its text is
// "file:line:col: message"; line and column are 1-based.
type Error struct {
	File string
	Line int
	Col  int
	Msg  string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// At returns an error at n's position in file, or at 1:1 when n is nil or
// has no position (a document that is empty, an error about the whole file).
func At(file string, n *yaml.Node, format string, args ...any) *Error {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	return &Error{File: file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// SyntaxError turns the YAML decoder's "yaml: line N: msg" into an error at
// file:N:1 (the decoder gives no column); without a line, at 1:1.
func SyntaxError(file string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Col: 1, Msg: m[2]}
	}
	return &Error{File: file, Line: 1, Col: 1, Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// InvalidUTF8 returns the offset of the first byte of b that is not UTF-8,
// or -1.
func InvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// Position returns the 1-based line and column (in characters) of offset i
// of b.
func Position(b []byte, i int) (line, col int) {
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	return bytes.Count(b[:i], []byte("\n")) + 1, utf8.RuneCount(b[start:i]) + 1
}

// Resolve follows an alias (*name) to the node its anchor (&name) marks.
func Resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is a null scalar (`~`, `null`, or a key without
// a value).
func IsNull(n *yaml.Node) bool {
	n = Resolve(n)
	return n != nil && n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// KindName names what n is, for "got ..." in messages: "a mapping", "a
// list", `the string "x"`, "the number 3", "nothing (null)".
func KindName(n *yaml.Node) string {
	n = Resolve(n)
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "nothing (null)"
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		}
		return fmt.Sprintf("%s %s", n.ShortTag(), n.Value)
	}
	return "an unsupported YAML value"
}

// Sort orders errors by position (line, then column), stably; errors that
// are not *Error keep their place relative to each other.
func Sort(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool {
		var a, b *Error
		if !errors.As(errs[i], &a) || !errors.As(errs[j], &b) {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// Flatten unwraps errors.Join trees into a flat list (nil for nil).
func Flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, Flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// Checker collects the errors of one file.
type Checker struct {
	File string // names the file in errors
	// Kind names the file's kind in messages ("scenario", "policy",
	// "relay profile").
	Kind string

	errs   []error
	merged int // key/value pairs merge keys have brought in so far
}

// Errorf records an error at n (see At).
func (c *Checker) Errorf(n *yaml.Node, format string, args ...any) {
	c.errs = append(c.errs, At(c.File, n, format, args...))
}

// Add records errors found elsewhere (an embedded document's parser).
func (c *Checker) Add(errs ...error) { c.errs = append(c.errs, errs...) }

// Len is the number of errors so far: compare it before and after a part
// to tell whether that part had any.
func (c *Checker) Len() int { return len(c.errs) }

// Errs returns the errors so far, in the order found.
func (c *Checker) Errs() []error { return c.errs }

// Err returns the errors so far joined with errors.Join, nil when none.
func (c *Checker) Err() error { return errors.Join(c.errs...) }

// KeyValue is one entry of a mapping: its key, the key's node and the value
// node (aliases resolved).
type KeyValue struct {
	Key  string
	K, V *yaml.Node
}

// Keys says what a mapping may hold.
type Keys struct {
	// What names the mapping in messages ("send", "rule"); "" for a
	// document's top level.
	What string
	// Allowed are the known keys, in the order messages list them; nil
	// accepts any plain key (a map of names to values).
	Allowed []string
	// Merge brings in merge keys (`<<: *base`, or a list of bases): the keys
	// of the named mappings that the mapping does not set itself, checked
	// like its own. Without it a merge key is an error.
	Merge bool
}

// maxMergedPairs bounds what merge keys may bring in over a whole file:
// nested merges multiply ("billion laughs"); a real file needs a few dozen.
const maxMergedPairs = 10000

// Mapping returns n's entries with known keys, each once, in order (merged
// entries after the mapping's own). It reports a value that is not a
// mapping (ok is false then), keys that are not plain scalars, unknown keys,
// duplicate keys and merge keys k does not allow.
func (c *Checker) Mapping(n *yaml.Node, k Keys) (kvs []KeyValue, ok bool) {
	n = Resolve(n)
	if n.Kind != yaml.MappingNode {
		what := k.What
		if what == "" {
			what = "the document"
		}
		c.Errorf(n, "%s must be a mapping of keys, got %s", what, KindName(n))
		return nil, false
	}
	in := ""
	if k.What != "" {
		in = " in " + k.What
	}
	var own, merged []KeyValue
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, v := Resolve(n.Content[i]), Resolve(n.Content[i+1])
		if key.Tag == "!!merge" {
			if !k.Merge {
				kind := c.Kind
				if kind == "" {
					kind = "these"
				}
				c.Errorf(key, "merge keys (<<) are not supported in %s files; repeat the keys or use an alias for a whole value", kind)
				continue
			}
			merged = c.merge(merged, v, 0)
			continue
		}
		if key.Kind != yaml.ScalarNode {
			c.Errorf(key, "keys%s must be plain words, got %s", in, KindName(key))
			continue
		}
		own = append(own, KeyValue{Key: key.Value, K: key, V: v})
	}
	first := map[string]*yaml.Node{}
	for i, kv := range append(own, merged...) {
		if _, dup := first[kv.Key]; dup && i >= len(own) {
			continue // set by the mapping itself, or by an earlier merge
		}
		if k.Allowed != nil && !slices.Contains(k.Allowed, kv.Key) {
			c.Errorf(kv.K, "unknown key %q%s (known: %s)", kv.Key, in, strings.Join(k.Allowed, ", "))
			continue
		}
		if f, dup := first[kv.Key]; dup {
			c.Errorf(kv.K, "duplicate key %q%s (first at line %d)", kv.Key, in, f.Line)
			continue
		}
		first[kv.Key] = kv.K
		kvs = append(kvs, kv)
	}
	return kvs, true
}

// merge appends the entries a merge key's value brings: one mapping, or a
// list of them (the earlier wins).
func (c *Checker) merge(out []KeyValue, v *yaml.Node, depth int) []KeyValue {
	v = Resolve(v)
	switch {
	case c.merged > maxMergedPairs:
		return out // reported once already
	case depth > 8:
		c.Errorf(v, "merge keys nested too deep")
	case v.Kind == yaml.MappingNode:
		var nested []KeyValue
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := Resolve(v.Content[i]), Resolve(v.Content[i+1])
			if k.Tag == "!!merge" {
				nested = c.merge(nested, val, depth+1)
				continue
			}
			if c.merged++; c.merged > maxMergedPairs {
				c.Errorf(k, "merge keys bring in more than %d keys", maxMergedPairs)
				return out
			}
			out = append(out, KeyValue{Key: k.Value, K: k, V: val})
		}
		out = append(out, nested...)
	case v.Kind == yaml.SequenceNode && depth == 0:
		for _, m := range v.Content {
			if m = Resolve(m); m.Kind != yaml.MappingNode {
				c.Errorf(m, "<< merges mappings only")
				continue
			}
			out = c.merge(out, m, depth+1)
		}
	default:
		c.Errorf(v, "<< merges a mapping or a list of mappings")
	}
	return out
}

// Scalar readers: each reports a value of the wrong YAML type at v as
// "WHAT must be ..., got KIND" and returns ok=false. They go by the
// value's resolved tag, so `count: "3"` is a string, not a number.

// String reads a string.
func (c *Checker) String(v *yaml.Node, what string) (string, bool) {
	v = Resolve(v)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		c.Errorf(v, "%s must be a string, got %s", what, KindName(v))
		return "", false
	}
	return v.Value, true
}

// Int reads a whole number from lo to hi.
func (c *Checker) Int(v *yaml.Node, what string, lo, hi int) (int, bool) {
	v = Resolve(v)
	var i int
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&i) != nil {
		c.Errorf(v, "%s must be a whole number, got %s", what, KindName(v))
		return 0, false
	}
	if i < lo || i > hi {
		c.Errorf(v, "%s must be from %d to %d, got %d", what, lo, hi, i)
		return 0, false
	}
	return i, true
}

// Bool reads true or false.
func (c *Checker) Bool(v *yaml.Node, what string) (bool, bool) {
	v = Resolve(v)
	var b bool
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		c.Errorf(v, "%s must be true or false, got %s", what, KindName(v))
		return false, false
	}
	return b, true
}

// Number reads a number, whole or not.
func (c *Checker) Number(v *yaml.Node, what string) (float64, bool) {
	v = Resolve(v)
	var f float64
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!int" && v.ShortTag() != "!!float") || v.Decode(&f) != nil {
		c.Errorf(v, "%s must be a number, got %s", what, KindName(v))
		return 0, false
	}
	return f, true
}

// Enum reads a string that must be one of allowed.
func (c *Checker) Enum(v *yaml.Node, what string, allowed []string) (string, bool) {
	s, ok := c.String(v, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		c.Errorf(v, "%s must be one of %s, got %q", what, strings.Join(allowed, ", "), s)
		return "", false
	}
	return s, true
}

// List returns a list's items, aliases resolved; a value that is not a
// list is reported and gives nil.
func (c *Checker) List(v *yaml.Node, what string) []*yaml.Node {
	v = Resolve(v)
	if v.Kind != yaml.SequenceNode {
		c.Errorf(v, "%s must be a list, got %s", what, KindName(v))
		return nil
	}
	out := make([]*yaml.Node, len(v.Content))
	for i, it := range v.Content {
		out[i] = Resolve(it)
	}
	return out
}
