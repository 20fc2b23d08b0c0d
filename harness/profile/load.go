package profile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/internal/inputfile"
	"github.com/greyharness/greyharness/internal/yamlcheck"
)

// Defaults applied by Load.
const (
	DefaultHelo         = "harness.greyharness.test"
	DefaultRestartGrace = 10 * time.Second
)

// Error is a profile error at a position of the profile file. Its text is
// "file:line:col: message"; it is the module's one YAML error type.
type Error = yamlcheck.Error

// Load reads the relay profile at path. Unknown keys are errors, every error
// is "file:line:col: message", ${ENV} / $ENV references are expanded (see
// Expand), defaults are applied and the profile is validated. Dir is set to
// the file's absolute folder.
func Load(path string) (*Profile, error) {
	data, err := inputfile.Read(path, inputfile.MaxYAML)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	p.Dir = filepath.Dir(abs)
	return p, nil
}

// Parse is Load on bytes already read; file names them in errors. Dir is left
// empty.
func Parse(file string, data []byte) (*Profile, error) {
	l := &loader{file: file, pos: map[string]*yaml.Node{}, keys: map[string]*yaml.Node{}}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{File: file, Line: 1, Col: 1, Msg: "empty relay profile"}
		}
		return nil, yamlcheck.SyntaxError(file, err)
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	l.root = root
	if r := yamlcheck.Resolve(root); r.Kind != yaml.MappingNode {
		return nil, l.errAt(root, "relay profile must be a mapping of keys, got %s", yamlcheck.KindName(r))
	}
	p := &Profile{}
	if err := l.decode(root, reflect.ValueOf(p).Elem(), ""); err != nil {
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, l.errAt(&extra, "a relay profile is one YAML document; found a second one")
	}
	if err := l.finish(p, filepath.Base(file)); err != nil {
		return nil, err
	}
	return p, nil
}

type loader struct {
	file string
	root *yaml.Node
	pos  map[string]*yaml.Node // dotted key path -> value node
	keys map[string]*yaml.Node // dotted key path -> key node
}

func (l *loader) errAt(n *yaml.Node, format string, a ...any) error {
	return yamlcheck.At(l.file, n, format, a...)
}

// errPath reports at the value of path, or else at the key of its longest
// present prefix.
func (l *loader) errPath(path string, format string, a ...any) error {
	if n, ok := l.pos[path]; ok {
		return l.errAt(n, format, a...)
	}
	for p := path; p != ""; {
		if n, ok := l.keys[p]; ok {
			return l.errAt(n, format, a...)
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return l.errAt(l.root, format, a...)
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decode decodes n into v strictly: unknown keys and wrong kinds are errors
// at the offending node.
func (l *loader) decode(n *yaml.Node, v reflect.Value, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if path != "" {
		l.pos[path] = n
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // key present without value: keep the zero value
	}
	if v.Kind() != reflect.Pointer && v.CanAddr() && v.Addr().Type().Implements(unmarshalerType) {
		if n.Kind != yaml.ScalarNode {
			return l.errAt(n, "%s: expected a scalar value", label(path))
		}
		if err := v.Addr().Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			return l.errAt(n, "%s: %v", label(path), err)
		}
		return nil
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		return l.decode(n, v.Elem(), path)
	case reflect.Struct:
		fields := yamlFields(v.Type())
		kvs, err := l.entries(n, path, sortedKeys(fields))
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			l.keys[join(path, kv.Key)] = kv.K
			if err := l.decode(kv.V, v.Field(fields[kv.Key]), join(path, kv.Key)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		kvs, err := l.entries(n, path, nil)
		if err != nil {
			return err
		}
		if v.IsNil() {
			v.Set(reflect.MakeMap(v.Type()))
		}
		for _, kv := range kvs {
			l.keys[join(path, kv.Key)] = kv.K
			elem := reflect.New(v.Type().Elem()).Elem()
			if err := l.decode(kv.V, elem, join(path, kv.Key)); err != nil {
				return err
			}
			v.SetMapIndex(reflect.ValueOf(kv.Key).Convert(v.Type().Key()), elem)
		}
		return nil
	case reflect.Slice:
		items := n.Content
		if n.Kind == yaml.ScalarNode {
			items = []*yaml.Node{n} // a single value stands for a one-item list
		} else if n.Kind != yaml.SequenceNode {
			return l.errAt(n, "%s: expected a list, got %s", label(path), kindName(n))
		}
		s := reflect.MakeSlice(v.Type(), len(items), len(items))
		for i, it := range items {
			if err := l.decode(it, s.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		v.Set(s)
		return nil
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			return l.errAt(n, "%s: expected a string, got %s", label(path), kindName(n))
		}
		v.SetString(n.Value)
		return nil
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			return l.errAt(n, "%s: expected true or false, got %s", label(path), shown(n))
		}
		v.SetBool(b)
		return nil
	case reflect.Int, reflect.Int64, reflect.Int32:
		var i int64
		if n.Kind != yaml.ScalarNode || n.Decode(&i) != nil {
			return l.errAt(n, "%s: expected an integer, got %s", label(path), shown(n))
		}
		v.SetInt(i)
		return nil
	}
	return l.errAt(n, "%s: unsupported field type %s", label(path), v.Type())
}

// entries checks the mapping n at path with yamlcheck (a mapping, plain
// keys, each once, known ones when known is not nil, no merge keys) and
// returns its entries, or the first error.
func (l *loader) entries(n *yaml.Node, path string, known []string) ([]yamlcheck.KeyValue, error) {
	c := &yamlcheck.Checker{File: l.file, Kind: "relay profile"}
	kvs, _ := c.Mapping(n, yamlcheck.Keys{What: path, Allowed: known})
	if c.Len() > 0 {
		return nil, c.Errs()[0]
	}
	return kvs, nil
}

func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func label(path string) string {
	if path == "" {
		return "relay profile"
	}
	return path
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return shown(n)
	}
	return "nothing"
}

func shown(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode {
		return kindName(n)
	}
	return strconv.Quote(n.Value)
}

// Expand expands ${NAME}, $NAME and ${NAME:-default} in s with lookup (nil:
// the process environment). "$$" is a literal "$".
func Expand(s string, lookup func(string) (string, bool)) string {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return os.Expand(s, func(name string) string {
		if name == "$" {
			return "$"
		}
		if k, def, ok := strings.Cut(name, ":-"); ok {
			if v, found := lookup(k); found && v != "" {
				return v
			}
			return def
		}
		v, _ := lookup(name)
		return v
	})
}

// finish expands, defaults and validates.
func (l *loader) finish(p *Profile, base string) error {
	// Env values are expanded against the process environment; everything
	// else sees Env first, then the process environment.
	for k, v := range p.Env {
		p.Env[k] = Expand(v, nil)
	}
	lookup := func(name string) (string, bool) {
		if v, ok := p.Env[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}
	c := &p.Commands
	for _, s := range []*string{&c.Setup, &c.Start, &c.Ready, &c.Stop, &c.Restart, &c.Flush, &c.Queue, &c.Teardown,
		&p.Submit.Addr, &p.Submit.Helo, &p.Submit.Username, &p.Submit.Password} {
		*s = Expand(*s, lookup)
	}
	for i := range p.NextHop {
		p.NextHop[i] = Expand(p.NextHop[i], lookup)
	}
	for i := range p.Lanes {
		p.Lanes[i] = Expand(p.Lanes[i], lookup)
	}
	for i := range p.LogFiles {
		p.LogFiles[i] = Expand(p.LogFiles[i], lookup)
	}
	if p.FakeMTA != nil {
		p.FakeMTA.API = Expand(p.FakeMTA.API, lookup)
		p.FakeMTA.Token = Expand(p.FakeMTA.Token, lookup)
	}

	// Defaults.
	if p.Name == "" {
		p.Name = strings.TrimSuffix(base, filepath.Ext(base))
	}
	if p.Submit.Helo == "" {
		p.Submit.Helo = DefaultHelo
	}
	if p.Timing.RestartGrace == 0 {
		p.Timing.RestartGrace = history.Duration(DefaultRestartGrace)
	}
	if p.QueueFormat == "" && c.Queue == "" {
		p.QueueFormat = QueueNone
	}

	// Validation.
	if p.Submit.Addr == "" {
		return l.errPath("submit.addr", "submit.addr is required (host:port where the relay accepts mail)")
	}
	if err := checkHostPort(p.Submit.Addr); err != nil {
		return l.errPath("submit.addr", "submit.addr %q: %v", p.Submit.Addr, err)
	}
	if (p.Submit.Username == "") != (p.Submit.Password == "") {
		return l.errPath("submit", "submit.username and submit.password go together")
	}
	switch p.QueueFormat {
	case QueuePostfixJSON, QueueExim, QueueOpenSMTPD, QueueHaraka, QueueSendmail, QueueNullmailer, QueueMaddy, QueueJSON, QueueSample, QueueNone:
	case "":
		return l.errPath("queue_format", "queue_format is required when commands.queue is set (one of %s)", formats())
	default:
		return l.errPath("queue_format", "unknown queue_format %q (one of %s)", p.QueueFormat, formats())
	}
	if p.QueueFormat != QueueNone && c.Queue == "" {
		return l.errPath("commands.queue", "queue_format %q needs commands.queue", p.QueueFormat)
	}
	if p.FakeMTA != nil && p.FakeMTA.API == "" {
		return l.errPath("fakemta.api", "fakemta.api is required when fakemta is set")
	}
	if len(p.NextHop) == 0 && p.FakeMTA == nil {
		return l.errPath("next_hop", "next_hop is required (host:port where the in-process fake MTA listens) unless fakemta.api is set")
	}
	for i, h := range p.NextHop {
		if err := checkHostPort(h); err != nil {
			return l.errPath(fmt.Sprintf("next_hop[%d]", i), "next_hop %q: %v", h, err)
		}
	}
	if err := l.checkLanes(p); err != nil {
		return err
	}
	if err := l.checkOverrides(p); err != nil {
		return err
	}
	if c.StartForeground && c.Start == "" {
		return l.errPath("commands.start_foreground", "commands.start_foreground needs commands.start")
	}
	t := p.Timing
	if t.RetryMax <= 0 {
		return l.errPath("timing.retry_max", "timing.retry_max is required and must be > 0 (longest gap between two delivery attempts)")
	}
	if t.QueueLifetime <= 0 {
		return l.errPath("timing.queue_lifetime", "timing.queue_lifetime is required and must be > 0 (when a deferred message must bounce)")
	}
	if t.DelayWarning < 0 {
		return l.errPath("timing.delay_warning", "timing.delay_warning must be >= 0")
	}
	if t.RestartGrace < 0 {
		return l.errPath("timing.restart_grace", "timing.restart_grace must be > 0")
	}
	// The harness brings the relay up before the first scenario: with start,
	// or, for a relay that is already running, by checking it with ready.
	if c.Start == "" && c.Ready == "" {
		return l.errPath("commands.start", "commands.start is required (how the harness starts the relay); "+
			"for a relay that is already running, set commands.ready instead (how the harness checks it is up)")
	}
	if c.Start == "" && c.Stop != "" {
		return l.errPath("commands.stop", "commands.stop needs commands.start: the harness stops the relay at the end "+
			"of the run and must be able to start it again")
	}
	return nil
}

// checkOverrides validates scenarios: skip or expect, an expect with its why
// and failing verdicts only.
func (l *loader) checkOverrides(p *Profile) error {
	names := make([]string, 0, len(p.Scenarios))
	for n := range p.Scenarios {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		o, path := p.Scenarios[n], "scenarios."+n
		switch {
		case o.Expect != nil && o.Skip != "":
			return l.errPath(path+".expect", "%s: skip and expect exclude each other", path)
		case o.Share != "" && o.Skip != "":
			return l.errPath(path+".share", "%s: skip and share exclude each other", path)
		case o.Share != "" && strings.TrimSpace(o.Share) == "":
			return l.errPath(path+".share", "%s.share needs its reason: why the scenario's load cannot change a neighbour's verdict on this relay", path)
		case o.Expect == nil && o.Why != "":
			return l.errPath(path+".why", "%s.why explains an expect; this override has none (a skip gives its reason in skip)", path)
		case o.Expect == nil:
			continue
		case strings.TrimSpace(o.Why) == "":
			return l.errPath(path+".expect", "%s.expect needs why: the relay's real behaviour, with its evidence (a log line, its documentation)", path)
		case len(o.Expect.Verdict) == 0:
			return l.errPath(path+".expect.verdict", "%s.expect.verdict is required: the failing verdict(s) the relay's behaviour gets", path)
		}
		ok := ExpectableVerdicts()
		for i, v := range o.Expect.Verdict {
			if !slices.Contains(ok, v) {
				names := make([]string, len(ok))
				for j, x := range ok {
					names[j] = string(x)
				}
				return l.errPath(fmt.Sprintf("%s.expect.verdict[%d]", path, i), "%s.expect.verdict: %q is not a failing verdict (one of %s)", path, v, strings.Join(names, ", "))
			}
		}
	}
	return nil
}

func formats() string {
	return strings.Join([]string{string(QueuePostfixJSON), string(QueueExim), string(QueueOpenSMTPD), string(QueueHaraka), string(QueueSendmail), string(QueueNullmailer), string(QueueMaddy), string(QueueJSON), string(QueueSample), string(QueueNone)}, ", ")
}

// checkLanes: each lane is a loopback IP host:port of its own, and lanes
// need the in-process fake MTA.
func (l *loader) checkLanes(p *Profile) error {
	if len(p.Lanes) > 0 && p.FakeMTA != nil {
		return l.errPath("lanes", "lanes need the in-process fake MTA (no fakemta.api): a remote fake MTA has no lanes")
	}
	seen := map[string]string{}
	for i, h := range p.NextHop {
		seen[normHostPort(h)] = fmt.Sprintf("next_hop[%d]", i)
	}
	for i, h := range p.Lanes {
		at := fmt.Sprintf("lanes[%d]", i)
		if err := checkHostPort(h); err != nil {
			return l.errPath(at, "lanes[%d] %q: %v", i, h, err)
		}
		host, _, _ := net.SplitHostPort(h)
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return l.errPath(at, "lanes[%d] %q: a lane must be a loopback IP address (127.0.0.0/8 or ::1)", i, h)
		}
		if other, ok := seen[normHostPort(h)]; ok {
			if strings.HasPrefix(other, "lanes") {
				return l.errPath(at, "lanes[%d] %q is %s too", i, h, other)
			}
			return l.errPath(at, "lanes[%d] %q is %s: a lane is an address of its own", i, h, other)
		}
		seen[normHostPort(h)] = at
	}
	return nil
}

// normHostPort spells host:port one way (an IP in its canonical form).
func normHostPort(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return s
	}
	if ip := net.ParseIP(host); ip != nil {
		host = ip.String()
	}
	return net.JoinHostPort(strings.ToLower(host), port)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("want host:port")
	}
	if host == "" {
		return errors.New("host is empty")
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number in 1..65535", port)
	}
	return nil
}

// Has reports whether the profile provides capability c.
func (p *Profile) Has(c Capability) bool {
	cmd := p.Commands
	switch c {
	case CapRestart:
		return cmd.Restart != "" || (cmd.Start != "" && (cmd.Stop != "" || cmd.StartForeground))
	case CapStop:
		return cmd.Stop != "" || (cmd.StartForeground && cmd.Start != "")
	case CapQueue:
		return cmd.Queue != "" && p.QueueFormat != QueueNone && p.QueueFormat != ""
	case CapFlush:
		return cmd.Flush != ""
	case CapFakeMTAControl:
		return p.FakeMTA == nil
	case CapDelayWarning:
		return p.Timing.DelayWarning > 0
	case CapMultiMX:
		return p.FakeMTA == nil && len(p.NextHop) >= 2
	}
	return false
}

// Missing returns the capabilities of needs the profile lacks, in order (nil
// when none).
func (p *Profile) Missing(needs []Capability) []Capability {
	var out []Capability
	for _, c := range needs {
		if !p.Has(c) && !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out
}
