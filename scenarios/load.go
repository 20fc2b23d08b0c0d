package scenarios

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/internal/inputfile"
)

//go:embed pack/*.yaml
var pack embed.FS

// PackDir is the folder of the default pack in the repository; embedded
// pack files are named PackDir/NAME.yaml in errors and Scenario.File.
const PackDir = "scenarios/pack"

// Limits the loader enforces (the schema says the same).
const (
	MaxCount        = 100000   // send.count
	MaxConcurrency  = 100      // send.concurrency
	MaxSize         = 10 << 20 // send.size, bytes
	MaxRestartTimes = 5        // restart.times
	MaxFactor       = 100      // wait.factor
)

// Allowed values of the enumerated keys, in the order the docs list them.
var (
	WaitConditions   = []string{"deferred", "delivered", "dsn", "attempts", "drained"}
	DSNActions       = []string{"failed", "delayed"}
	RestartWhens     = []string{"now", "after-deferral", "during-data"}
	FakeMTAActions   = []string{"stop", "start", "restart", "wipe-state"}
	TimeoutFroms     = []string{"retry_max", "queue_lifetime", "delay_warning"}
	DuplicatesModes  = []string{"fail", "tolerate"}
	RetryTooSoonMode = []string{"warn", "fail"}
	// Verdicts are the verdict names of DESIGN.md an expectation may name.
	Verdicts = []string{"delivered", "bounced", "delayed-notice", "held-silently", "stalled", "lost",
		"duplicate", "stale", "premature-bounce", "retry-too-soon", "bad-dsn"}
	// Capabilities are the names `needs` accepts (profile.Capability values).
	Capabilities = []string{"restart", "stop", "queue", "flush", "fakemta-control", "delay-warning", "multi-mx"}
)

var (
	nameRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)
	addressRE  = regexp.MustCompile(`^[^@\s<>]+@[^@\s<>]+$`)
	headerRE   = regexp.MustCompile(`^[!-9;-~]+$`)
	durationRE = regexp.MustCompile(`^(0|[0-9]+d|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)$`)
	// reservedHeaders are set by the harness per message; the ledger follows
	// messages by them.
	reservedHeaders = []string{"message-id", "x-greyharness-id"}
)

// Default loads the default scenario pack embedded in the binary.
func Default() ([]Scenario, error) {
	entries, err := fs.ReadDir(pack, "pack")
	if err != nil {
		return nil, err
	}
	var all []Scenario
	var errs []error
	for _, e := range entries {
		data, err := pack.ReadFile("pack/" + e.Name())
		if err != nil {
			return nil, err
		}
		scs, ferrs := loadBytes(path.Join(PackDir, e.Name()), data)
		all = append(all, scs...)
		errs = append(errs, ferrs...)
	}
	errs = append(errs, checkUnique(all)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return all, nil
}

// PackFiles returns the embedded default pack: file name → content.
func PackFiles() (map[string][]byte, error) {
	entries, err := fs.ReadDir(pack, "pack")
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := pack.ReadFile("pack/" + e.Name())
		if err != nil {
			return nil, err
		}
		out[e.Name()] = b
	}
	return out, nil
}

// LoadFile loads the scenarios of one YAML file.
func LoadFile(path string) ([]Scenario, error) {
	data, err := inputfile.Read(path, inputfile.MaxYAML)
	if err != nil {
		return nil, readError(path, err)
	}
	return LoadBytes(path, data)
}

// LoadBytes loads the scenarios of one YAML file's content; file names it
// in errors and Scenario.File. A file holds one scenario, several as a
// stream of documents separated by `---`, or a document with a top-level
// `scenarios:` list. Every error of the file is reported, each a
// *fakemta.PositionError ("file:line:col: message"), joined with errors.Join.
func LoadBytes(file string, data []byte) ([]Scenario, error) {
	scs, errs := loadBytes(file, data)
	errs = append(errs, checkUnique(scs)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return scs, nil
}

// LoadPaths loads files and folders (a folder's *.yaml and *.yml files,
// not its subfolders, in name order). Scenario names must be unique across
// everything loaded. Errors of every file are reported together.
func LoadPaths(paths []string) ([]Scenario, error) {
	scs, errs := loadPaths(paths)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return scs, nil
}

// Validate checks scenario files and folders (none: the default pack) and
// returns every error, each printing as "file:line:col: message"; nil when
// all is well. `greyharness validate` prints them and exits 2.
func Validate(paths []string) []error {
	if len(paths) == 0 {
		_, err := Default()
		return flatten(err)
	}
	_, errs := loadPaths(paths)
	return errs
}

func loadPaths(paths []string) ([]Scenario, []error) {
	var all []Scenario
	var errs []error
	for _, p := range paths {
		files, err := expand(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range files {
			data, err := inputfile.Read(f, inputfile.MaxYAML)
			if err != nil {
				errs = append(errs, readError(f, err))
				continue
			}
			scs, ferrs := loadBytes(f, data)
			all = append(all, scs...)
			errs = append(errs, ferrs...)
		}
	}
	errs = append(errs, checkUnique(all)...)
	return all, errs
}

// expand turns a path into the scenario files it stands for.
func expand(p string) ([]string, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, readError(p, err)
	}
	if !fi.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, readError(p, err)
	}
	var files []string
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, filepath.Join(p, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, &fakemta.PositionError{File: p, Line: 1, Col: 1, Msg: "folder holds no *.yaml or *.yml scenario files"}
	}
	return files, nil
}

func readError(file string, err error) error {
	var ie *inputfile.Error
	if errors.As(err, &ie) {
		return &fakemta.PositionError{File: file, Line: 1, Col: 1, Msg: ie.Reason}
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return &fakemta.PositionError{File: file, Line: 1, Col: 1, Msg: "cannot read: " + err.Error()}
}

// flatten unwraps errors.Join trees into a flat list (nil for nil).
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// checkUnique reports scenario names used more than once.
func checkUnique(scs []Scenario) []error {
	first := map[string]*Scenario{}
	var errs []error
	for i := range scs {
		sc := &scs[i]
		if sc.Name == "" {
			continue
		}
		if f, ok := first[sc.Name]; ok {
			errs = append(errs, &fakemta.PositionError{File: sc.File, Line: sc.Line, Col: sc.Col,
				Msg: fmt.Sprintf("scenario name %q is already used at %s:%d:%d (names must be unique)", sc.Name, f.File, f.Line, f.Col)})
			continue
		}
		first[sc.Name] = sc
	}
	return errs
}

// loader collects every error of one file.
type loader struct {
	file string
	errs []error
}

func (l *loader) errorf(n *yaml.Node, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	l.errs = append(l.errs, &fakemta.PositionError{File: l.file, Line: line, Col: col, Msg: fmt.Sprintf(format, args...)})
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (l *loader) syntaxError(err error) {
	msg := err.Error()
	line := 1
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	l.errs = append(l.errs, &fakemta.PositionError{File: l.file, Line: line, Col: 1, Msg: "YAML syntax: " + msg})
}

func loadBytes(file string, data []byte) ([]Scenario, []error) {
	l := &loader{file: file}
	var scs []Scenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	docs := 0
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			l.syntaxError(err)
			break
		}
		docs++
		if len(doc.Content) == 0 {
			continue
		}
		scs = append(scs, l.document(doc.Content[0])...)
	}
	if len(scs) == 0 && len(l.errs) == 0 {
		l.errorf(nil, "no scenario in file")
	}
	sortErrors(l.errs)
	if len(l.errs) > 0 {
		return nil, l.errs
	}
	return scs, nil
}

func sortErrors(errs []error) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, aok := errs[i].(*fakemta.PositionError)
		b, bok := errs[j].(*fakemta.PositionError)
		if !aok || !bok {
			return false
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
}

// document loads one YAML document: a scenario, or {scenarios: [...]}.
func (l *loader) document(n *yaml.Node) []Scenario {
	n = resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind == yaml.MappingNode && hasKey(n, "scenarios") {
		var out []Scenario
		for _, kv := range l.mapping(n, "file", []string{"scenarios"}) {
			if kv.v.Kind != yaml.SequenceNode || len(kv.v.Content) == 0 {
				l.errorf(kv.v, "scenarios must be a non-empty list of scenarios, got %s", kindName(kv.v))
				continue
			}
			for _, item := range kv.v.Content {
				if sc, ok := l.scenario(item); ok {
					out = append(out, sc)
				}
			}
		}
		return out
	}
	if sc, ok := l.scenario(n); ok {
		return []Scenario{sc}
	}
	return nil
}

type keyValue struct {
	key string
	k   *yaml.Node
	v   *yaml.Node // aliases resolved
}

// mapping returns n's entries, reporting a non-mapping, unknown keys and
// duplicate keys. Only known keys are returned, each once.
func (l *loader) mapping(n *yaml.Node, what string, allowed []string) []keyValue {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		l.errorf(n, "%s must be a mapping of keys, got %s", what, kindName(n))
		return nil
	}
	var out []keyValue
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			l.errorf(k, "%s keys must be plain words, got %s", what, kindName(k))
			continue
		}
		if k.Value == "<<" {
			l.errorf(k, "merge keys (<<) are not supported in scenario files; repeat the keys or use an alias for a whole value")
			continue
		}
		if !slices.Contains(allowed, k.Value) {
			l.errorf(k, "unknown key %q in %s (known: %s)", k.Value, what, strings.Join(allowed, ", "))
			continue
		}
		if seen[k.Value] {
			l.errorf(k, "duplicate key %q in %s", k.Value, what)
			continue
		}
		seen[k.Value] = true
		out = append(out, keyValue{key: k.Value, k: k, v: v})
	}
	return out
}

func resolve(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func kindName(n *yaml.Node) string {
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

// Scalar readers: each reports a wrong type at v and returns ok=false.

func (l *loader) str(v *yaml.Node, what string) (string, bool) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		l.errorf(v, "%s must be a string, got %s", what, kindName(v))
		return "", false
	}
	return v.Value, true
}

func (l *loader) integer(v *yaml.Node, what string, lo, hi int) (int, bool) {
	var i int
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" || v.Decode(&i) != nil {
		l.errorf(v, "%s must be a whole number, got %s", what, kindName(v))
		return 0, false
	}
	if i < lo || i > hi {
		l.errorf(v, "%s must be from %d to %d, got %d", what, lo, hi, i)
		return 0, false
	}
	return i, true
}

func (l *loader) boolean(v *yaml.Node, what string) (bool, bool) {
	var b bool
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&b) != nil {
		l.errorf(v, "%s must be true or false, got %s", what, kindName(v))
		return false, false
	}
	return b, true
}

func (l *loader) number(v *yaml.Node, what string) (float64, bool) {
	var f float64
	if v.Kind != yaml.ScalarNode || (v.ShortTag() != "!!int" && v.ShortTag() != "!!float") || v.Decode(&f) != nil {
		l.errorf(v, "%s must be a number, got %s", what, kindName(v))
		return 0, false
	}
	return f, true
}

func (l *loader) enum(v *yaml.Node, what string, allowed []string) (string, bool) {
	s, ok := l.str(v, what)
	if !ok {
		return "", false
	}
	if !slices.Contains(allowed, s) {
		l.errorf(v, "%s must be one of %s, got %q", what, strings.Join(allowed, ", "), s)
		return "", false
	}
	return s, true
}

func (l *loader) name(v *yaml.Node, what string) (string, bool) {
	s, ok := l.str(v, what)
	if !ok {
		return "", false
	}
	if !nameRE.MatchString(s) {
		l.errorf(v, "%s %q must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit", what, s)
		return "", false
	}
	return s, true
}

func (l *loader) address(v *yaml.Node, what string) (string, bool) {
	s, ok := l.str(v, what)
	if !ok {
		return "", false
	}
	if !addressRE.MatchString(s) {
		l.errorf(v, "%s %q is not an address like local@domain", what, s)
		return "", false
	}
	return s, true
}

// duration reads a positive duration ("2s", "1m30s", "35d").
func (l *loader) duration(v *yaml.Node, what string) (history.Duration, bool) {
	s, ok := l.str(v, what)
	if !ok {
		return 0, false
	}
	d, err := history.ParseDuration(s)
	if err != nil || !durationRE.MatchString(s) {
		l.errorf(v, "%s: invalid duration %q (want e.g. 500ms, 30s, 5m, 2h, 35d)", what, s)
		return 0, false
	}
	if d <= 0 {
		l.errorf(v, "%s must be longer than zero, got %q", what, s)
		return 0, false
	}
	return history.Duration(d), true
}

// scenarioState is what the step checks know about the steps before.
type scenarioState struct {
	groups       map[string]bool // send groups so far ("default" for unnamed sends)
	sends        int
	mentionsSend bool // some step has a send key (even if the step is wrong)
	fakeRunning  bool
	policy       *fakemta.Policy // policy in effect (nil when it did not parse)
	policyOK     bool
}

var scenarioKeys = []string{"name", "description", "labels", "policy", "needs", "steps", "expect"}

// scenario loads one scenario mapping; ok is false when it has errors.
func (l *loader) scenario(n *yaml.Node) (Scenario, bool) {
	n = resolve(n)
	nerr := len(l.errs)
	sc := Scenario{File: l.file, Line: n.Line, Col: n.Column}
	kvs := l.mapping(n, "scenario", scenarioKeys)
	if n.Kind != yaml.MappingNode {
		return sc, false
	}
	byKey := map[string]keyValue{}
	for _, kv := range kvs {
		byKey[kv.key] = kv
	}
	if kv, ok := byKey["name"]; ok {
		sc.Name, _ = l.name(kv.v, "name")
	} else {
		l.errorf(n, "scenario has no name")
	}
	if kv, ok := byKey["description"]; ok {
		sc.Description, _ = l.str(kv.v, "description")
	}
	if kv, ok := byKey["labels"]; ok {
		for _, it := range l.list(kv.v, "labels") {
			if s, ok := l.name(it, "label"); ok {
				sc.Labels = append(sc.Labels, s)
			}
		}
	}
	if kv, ok := byKey["needs"]; ok {
		for _, it := range l.list(kv.v, "needs") {
			if s, ok := l.enum(it, "needs entry", Capabilities); ok {
				sc.DeclaredNeeds = append(sc.DeclaredNeeds, s)
			}
		}
	}
	st := &scenarioState{groups: map[string]bool{}, fakeRunning: true, policy: &fakemta.Policy{}, policyOK: true}
	if kv, ok := byKey["policy"]; ok && !isNull(kv.v) {
		sc.Policy = *kv.v
		st.policy, st.policyOK = l.policy(kv.v)
	}
	if kv, ok := byKey["steps"]; ok {
		if kv.v.Kind != yaml.SequenceNode || len(kv.v.Content) == 0 {
			l.errorf(kv.v, "steps must be a non-empty list, got %s", kindName(kv.v))
		} else {
			for i, it := range kv.v.Content {
				sc.Steps = append(sc.Steps, l.step(resolve(it), i, st))
			}
			if !st.mentionsSend {
				l.errorf(kv.k, "scenario has no send step: there is nothing to judge")
			}
			if !st.fakeRunning {
				l.errorf(kv.k, "the scenario ends with the fake MTA stopped: add a `fakemta: start` step so the relay can deliver")
			}
		}
	} else {
		l.errorf(n, "scenario has no steps")
	}
	if kv, ok := byKey["expect"]; ok {
		sc.Expect = l.expect(kv.v, st)
	}
	return sc, len(l.errs) == nerr
}

// list returns a sequence's items (aliases resolved).
func (l *loader) list(v *yaml.Node, what string) []*yaml.Node {
	if v.Kind != yaml.SequenceNode {
		l.errorf(v, "%s must be a list, got %s", what, kindName(v))
		return nil
	}
	out := make([]*yaml.Node, len(v.Content))
	for i, it := range v.Content {
		out[i] = resolve(it)
	}
	return out
}

// policy validates a policy node with the fake MTA's own parser.
func (l *loader) policy(v *yaml.Node) (*fakemta.Policy, bool) {
	p, err := fakemta.ParsePolicyNode(l.file, v)
	if err != nil {
		for _, e := range flatten(err) {
			var pe *fakemta.PositionError
			if !errors.As(e, &pe) {
				// Keep the format file:line:col even if the parser did not.
				e = &fakemta.PositionError{File: l.file, Line: v.Line, Col: v.Column, Msg: "policy: " + e.Error()}
			}
			l.errs = append(l.errs, e)
		}
		return nil, false
	}
	return p, true
}

var stepKeys = []string{"send", "wait", "restart", "fakemta", "policy", "flush", "checkpoint"}

func (l *loader) step(n *yaml.Node, i int, st *scenarioState) Step {
	step := Step{Line: n.Line, Col: n.Column}
	kvs := l.mapping(n, "step", stepKeys)
	if n.Kind != yaml.MappingNode {
		return step
	}
	for _, kv := range kvs {
		if kv.key == "send" {
			st.mentionsSend = true
		}
	}
	switch len(kvs) {
	case 0:
		if len(n.Content) == 0 {
			l.errorf(n, "step has no action (one of: %s)", strings.Join(stepKeys, ", "))
		}
		return step
	case 1:
	default:
		var names []string
		for _, kv := range kvs {
			names = append(names, kv.key)
		}
		l.errorf(n, "step has %d actions (%s): give exactly one per step", len(kvs), strings.Join(names, ", "))
		return step
	}
	kv := kvs[0]
	switch kv.key {
	case "send":
		step.Send = l.send(kv.v, st)
	case "wait":
		step.Wait = l.wait(kv.v, st)
	case "restart":
		step.Restart = l.restart(kv.v, st)
	case "fakemta":
		if s, ok := l.enum(kv.v, "fakemta", FakeMTAActions); ok {
			step.FakeMTA = s
			l.fakemtaState(kv.v, s, st)
		}
	case "policy":
		step.Policy = kv.v
		if isNull(kv.v) {
			st.policy, st.policyOK = &fakemta.Policy{}, true
		} else {
			st.policy, st.policyOK = l.policy(kv.v)
		}
	case "flush":
		if b, ok := l.boolean(kv.v, "flush"); ok {
			if !b {
				l.errorf(kv.v, "flush must be true (leave the step out otherwise)")
			}
			step.Flush = b
		}
	case "checkpoint":
		step.Checkpoint = l.checkpoint(kv.v, i)
	}
	return step
}

func (l *loader) fakemtaState(v *yaml.Node, action string, st *scenarioState) {
	switch action {
	case "stop":
		if !st.fakeRunning {
			l.errorf(v, "fakemta: stop, but the fake MTA is already stopped")
		}
		st.fakeRunning = false
	case "start":
		if st.fakeRunning {
			l.errorf(v, "fakemta: start, but the fake MTA is already running (use restart)")
		}
		st.fakeRunning = true
	case "restart":
		st.fakeRunning = true
	case "wipe-state":
		if !st.fakeRunning {
			l.errorf(v, "fakemta: wipe-state needs a running fake MTA (start it first)")
		}
	}
}

var sendKeys = []string{"name", "count", "from", "to", "size", "headers", "ehlo_twice", "rset_before_mail",
	"resubmit_same_message_id", "concurrency", "tag_sender"}

func (l *loader) send(v *yaml.Node, st *scenarioState) *Send {
	s := &Send{}
	kvs := l.mapping(v, "send", sendKeys)
	if v.Kind != yaml.MappingNode {
		return s
	}
	var toKey *yaml.Node
	for _, kv := range kvs {
		switch kv.key {
		case "name":
			s.Name, _ = l.name(kv.v, "send name")
		case "count":
			s.Count, _ = l.integer(kv.v, "count", 1, MaxCount)
		case "from":
			s.From, _ = l.address(kv.v, "from")
		case "to":
			toKey = kv.k
			var items []*yaml.Node
			if kv.v.Kind == yaml.ScalarNode && !isNull(kv.v) {
				items = []*yaml.Node{kv.v} // to: a@x.test
			} else {
				items = l.list(kv.v, "to")
			}
			if items != nil && len(items) == 0 {
				l.errorf(kv.v, "to must name at least one recipient")
			}
			for _, it := range items {
				if a, ok := l.address(it, "recipient"); ok {
					s.To = append(s.To, a)
				}
			}
		case "size":
			s.Size, _ = l.integer(kv.v, "size", 0, MaxSize)
		case "headers":
			s.Headers = l.headers(kv.v)
		case "ehlo_twice":
			s.EHLOTwice, _ = l.boolean(kv.v, kv.key)
		case "rset_before_mail":
			s.RsetBeforeMail, _ = l.boolean(kv.v, kv.key)
		case "resubmit_same_message_id":
			s.ResubmitSameMessageID, _ = l.boolean(kv.v, kv.key)
			if s.ResubmitSameMessageID && st.sends == 0 {
				l.errorf(kv.v, "resubmit_same_message_id needs an earlier send step whose messages it submits again")
			}
		case "concurrency":
			s.Concurrency, _ = l.integer(kv.v, "concurrency", 1, MaxConcurrency)
		case "tag_sender":
			if b, ok := l.boolean(kv.v, kv.key); ok {
				s.TagSender = &b
			}
		}
	}
	if toKey == nil && !s.ResubmitSameMessageID {
		l.errorf(v, "send has no recipients (to)")
	}
	group := s.Name
	if group == "" {
		group = "default"
	}
	st.groups[group] = true
	st.sends++
	return s
}

func (l *loader) headers(v *yaml.Node) map[string]string {
	if v.Kind != yaml.MappingNode {
		l.errorf(v, "headers must be a mapping of header name to value, got %s", kindName(v))
		return nil
	}
	out := map[string]string{}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], resolve(v.Content[i+1])
		if k.Kind != yaml.ScalarNode || !headerRE.MatchString(k.Value) {
			l.errorf(k, "header name %q must be printable ASCII without spaces or ':'", k.Value)
			continue
		}
		if slices.Contains(reservedHeaders, strings.ToLower(k.Value)) {
			l.errorf(k, "header %s is set by the harness for every message (the ledger follows messages by it)", k.Value)
			continue
		}
		for name := range out {
			if strings.EqualFold(name, k.Value) {
				l.errorf(k, "duplicate header %q", k.Value)
			}
		}
		s, ok := l.str(val, "header "+k.Value)
		if !ok {
			continue
		}
		if strings.ContainsAny(s, "\r\n") {
			l.errorf(val, "header %s must be one line", k.Value)
			continue
		}
		out[k.Value] = s
	}
	return out
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

func groupList(groups map[string]bool) string {
	if len(groups) == 0 {
		return "no groups yet"
	}
	var g []string
	for k := range groups {
		g = append(g, k)
	}
	sort.Strings(g)
	return "groups: " + strings.Join(g, ", ")
}

func (l *loader) restart(v *yaml.Node, st *scenarioState) *Restart {
	r := &Restart{}
	if isNull(v) {
		return r
	}
	for _, kv := range l.mapping(v, "restart", []string{"times", "when"}) {
		switch kv.key {
		case "times":
			r.Times, _ = l.integer(kv.v, "restart times", 1, MaxRestartTimes)
		case "when":
			r.When, _ = l.enum(kv.v, "restart when", RestartWhens)
			if r.When == "during-data" && st.policyOK && !holdsData(st.policy) {
				l.errorf(kv.v, "restart when: during-data waits until the fake MTA holds a DATA phase open: "+
					"the policy in effect needs a rule with delay at stage data or eod")
			}
		}
	}
	return r
}

// holdsData reports whether p has a delay (tarpit) rule at stage data or eod.
func holdsData(p *fakemta.Policy) bool {
	for _, r := range p.Rules {
		if r.Action == fakemta.ActionDelay && (r.Match.Stage == fakemta.StageData || r.Match.Stage == fakemta.StageEOD) {
			return true
		}
	}
	return false
}

func (l *loader) checkpoint(v *yaml.Node, i int) *Checkpoint {
	c := &Checkpoint{}
	switch {
	case isNull(v):
	case v.Kind == yaml.ScalarNode:
		c.Name, _ = l.name(v, "checkpoint name")
	default:
		for _, kv := range l.mapping(v, "checkpoint", []string{"name"}) {
			c.Name, _ = l.name(kv.v, "checkpoint name")
		}
	}
	if c.Name == "" {
		c.Name = fmt.Sprintf("step-%d", i+1)
	}
	return c
}

func (l *loader) expect(v *yaml.Node, st *scenarioState) Expect {
	var e Expect
	for _, kv := range l.mapping(v, "expect", []string{"messages", "no_duplicates", "duplicates", "retry_too_soon"}) {
		switch kv.key {
		case "messages":
			if kv.v.Kind != yaml.SequenceNode {
				l.errorf(kv.v, "messages must be a list of expectations, got %s", kindName(kv.v))
				continue
			}
			for _, it := range kv.v.Content {
				if m, ok := l.messageExpectation(resolve(it), st); ok {
					e.Messages = append(e.Messages, m)
				}
			}
		case "no_duplicates":
			if b, ok := l.boolean(kv.v, kv.key); ok {
				e.NoDuplicates = &b
			}
		case "duplicates":
			e.Duplicates, _ = l.enum(kv.v, "duplicates", DuplicatesModes)
		case "retry_too_soon":
			e.RetryTooSoon, _ = l.enum(kv.v, "retry_too_soon", RetryTooSoonMode)
		}
	}
	return e
}

func (l *loader) messageExpectation(n *yaml.Node, st *scenarioState) (MessageExpectation, bool) {
	var m MessageExpectation
	nerr := len(l.errs)
	kvs := l.mapping(n, "message expectation", []string{"group", "verdict", "within", "dsn"})
	if n.Kind != yaml.MappingNode {
		return m, false
	}
	var verdictNode *yaml.Node
	for _, kv := range kvs {
		switch kv.key {
		case "group":
			if g, ok := l.name(kv.v, "group"); ok {
				m.Group = g
				if !st.groups[g] {
					l.errorf(kv.v, "group %q is not the name of any send step (%s)", g, groupList(st.groups))
				}
			}
		case "verdict":
			verdictNode = kv.v
			s, ok := l.str(kv.v, "verdict")
			if !ok {
				continue
			}
			if !slices.Contains(Verdicts, s) {
				hint := ""
				if norm := strings.NewReplacer(" ", "-", "_", "-").Replace(strings.ToLower(strings.TrimSpace(s))); slices.Contains(Verdicts, norm) {
					hint = fmt.Sprintf(" (did you mean %q?)", norm)
				}
				l.errorf(kv.v, "unknown verdict %q%s; verdicts: %s", s, hint, strings.Join(Verdicts, ", "))
				continue
			}
			m.Verdict = s
		case "within":
			m.Within, _ = l.duration(kv.v, "within")
		case "dsn":
			m.DSN = &DSNExpectation{}
			kvs := l.mapping(kv.v, "dsn", []string{"action"})
			if kv.v.Kind != yaml.MappingNode {
				continue
			}
			if len(kvs) == 0 {
				l.errorf(kv.v, "dsn needs action: failed or action: delayed")
			}
			for _, d := range kvs {
				m.DSN.Action, _ = l.enum(d.v, "dsn action", DSNActions)
			}
		}
	}
	if verdictNode == nil {
		l.errorf(n, "message expectation has no verdict (%s)", strings.Join(Verdicts, ", "))
	}
	if m.DSN != nil && m.DSN.Action == "failed" && m.Verdict == "delivered" {
		l.errorf(verdictNode, "verdict delivered contradicts dsn action failed (a bounce): expect verdict bounced")
	}
	return m, len(l.errs) == nerr
}
