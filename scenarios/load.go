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
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/internal/inputfile"
	"github.com/greyharness/greyharness/internal/yamlcheck"
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
// *yamlcheck.Error (= *fakemta.PositionError, "file:line:col: message"), joined with errors.Join.
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
		return nil, yamlcheck.At(p, nil, "folder holds no *.yaml or *.yml scenario files")
	}
	return files, nil
}

func readError(file string, err error) error {
	var ie *inputfile.Error
	if errors.As(err, &ie) {
		return yamlcheck.At(file, nil, "%s", ie.Reason)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return yamlcheck.At(file, nil, "cannot read: %v", err)
}

// flatten unwraps errors.Join trees into a flat list (nil for nil).
func flatten(err error) []error { return yamlcheck.Flatten(err) }

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
			errs = append(errs, &yamlcheck.Error{File: sc.File, Line: sc.Line, Col: sc.Col,
				Msg: fmt.Sprintf("scenario name %q is already used at %s:%d:%d (names must be unique)", sc.Name, f.File, f.Line, f.Col)})
			continue
		}
		first[sc.Name] = sc
	}
	return errs
}

// loader collects every error of one file; its checks are
// yamlcheck.Checker's, under the names the step decoders use.
type loader struct {
	c    *yamlcheck.Checker
	file string
}

func (l *loader) errorf(n *yaml.Node, format string, args ...any) { l.c.Errorf(n, format, args...) }

func loadBytes(file string, data []byte) ([]Scenario, []error) {
	l := &loader{c: &yamlcheck.Checker{File: file, Kind: "scenario"}, file: file}
	var scs []Scenario
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if err == io.EOF {
			break
		}
		if err != nil {
			e := yamlcheck.SyntaxError(file, err)
			e.Msg = "YAML syntax: " + e.Msg
			l.c.Add(e)
			break
		}
		if len(doc.Content) == 0 {
			continue
		}
		scs = append(scs, l.document(doc.Content[0])...)
	}
	if len(scs) == 0 && l.c.Len() == 0 {
		l.errorf(nil, "no scenario in file")
	}
	errs := l.c.Errs()
	yamlcheck.Sort(errs)
	if len(errs) > 0 {
		return nil, errs
	}
	return scs, nil
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

// mapping returns n's entries, reporting a non-mapping, unknown keys,
// duplicate keys and merge keys (yamlcheck.Checker.Mapping). Only known
// keys are returned, each once.
func (l *loader) mapping(n *yaml.Node, what string, allowed []string) []keyValue {
	kvs, _ := l.c.Mapping(n, yamlcheck.Keys{What: what, Allowed: allowed})
	out := make([]keyValue, len(kvs))
	for i, kv := range kvs {
		out[i] = keyValue{key: kv.Key, k: kv.K, v: kv.V}
	}
	return out
}

func resolve(n *yaml.Node) *yaml.Node { return yamlcheck.Resolve(n) }

func hasKey(n *yaml.Node, key string) bool {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return true
		}
	}
	return false
}

func isNull(n *yaml.Node) bool { return yamlcheck.IsNull(n) }

func kindName(n *yaml.Node) string { return yamlcheck.KindName(n) }

// Scalar readers: each reports a wrong type at v and returns ok=false.

func (l *loader) str(v *yaml.Node, what string) (string, bool) { return l.c.String(v, what) }

func (l *loader) integer(v *yaml.Node, what string, lo, hi int) (int, bool) {
	return l.c.Int(v, what, lo, hi)
}

func (l *loader) boolean(v *yaml.Node, what string) (bool, bool) { return l.c.Bool(v, what) }

func (l *loader) number(v *yaml.Node, what string) (float64, bool) { return l.c.Number(v, what) }

func (l *loader) enum(v *yaml.Node, what string, allowed []string) (string, bool) {
	return l.c.Enum(v, what, allowed)
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

var scenarioKeys = []string{"name", "description", "labels", "exclusive", "policy", "needs", "steps", "expect"}

// scenario loads one scenario mapping; ok is false when it has errors.
func (l *loader) scenario(n *yaml.Node) (Scenario, bool) {
	n = resolve(n)
	nerr := l.c.Len()
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
	if kv, ok := byKey["exclusive"]; ok {
		sc.Exclusive, _ = l.boolean(kv.v, "exclusive")
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
	return sc, l.c.Len() == nerr
}

// list returns a sequence's items (aliases resolved).
func (l *loader) list(v *yaml.Node, what string) []*yaml.Node { return l.c.List(v, what) }

// policy validates a policy node with the fake MTA's own parser.
func (l *loader) policy(v *yaml.Node) (*fakemta.Policy, bool) {
	p, err := fakemta.ParsePolicyNode(l.file, v)
	if err != nil {
		for _, e := range flatten(err) {
			var pe *yamlcheck.Error
			if !errors.As(e, &pe) {
				// Keep the format file:line:col even if the parser did not.
				e = yamlcheck.At(l.file, v, "policy: %v", e)
			}
			l.c.Add(e)
		}
		return nil, false
	}
	return p, true
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
	nerr := l.c.Len()
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
	return m, l.c.Len() == nerr
}
