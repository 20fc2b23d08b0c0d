package fakemta

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notOnePolicy lists inputs that are not exactly one policy document; each
// must be refused with a position, not read as "accept everything" or cut
// after the first document.
var notOnePolicy = []struct {
	name, in string
	line     int // where the error points
}{
	{"empty", "", 1},
	{"blank", "  \n\n", 1},
	{"comment only", "# just a comment\n", 1},
	{"null", "null\n", 1},
	{"tilde", "~", 1},
	{"invalid UTF-8", "\xff\xfe", 1},
	{"invalid UTF-8 later", "greylist:\n  delay: 5m # \xff\n", 2},
	{"garbage after a flow mapping", "{}x", 1},
	{"garbage after a document", "{greylist: {delay: 1m}} trailing\n", 1},
	{"a second document", "greylist: {delay: 1m}\n---\nrules: []\n", 3},
	{"a broken second document", "greylist: {delay: 1m}\n---\nrules: [\n", 3},
	{"a null second document", "greylist: {delay: 1m}\n---\n~\n", 3},
	{"a scalar", "accept\n", 1},
	{"a list", "- greylist: {}\n", 1},
}

var positioned = regexp.MustCompile(`^p\.yaml:(\d+):(\d+): `)

func TestParsePolicyWantsExactlyOneDocument(t *testing.T) {
	for _, tc := range notOnePolicy {
		p, err := ParsePolicy("p.yaml", []byte(tc.in))
		if err == nil {
			t.Errorf("%s %q: accepted as %+v", tc.name, tc.in, PolicyDocument(p))
			continue
		}
		m := positioned.FindStringSubmatch(err.Error())
		if m == nil || m[1] != strconv.Itoa(tc.line) {
			t.Errorf("%s %q: error %q, want p.yaml:%d:COL: ...", tc.name, tc.in, err, tc.line)
		}
	}
	// What is one document still parses; a document end marker is fine.
	for _, ok := range []string{"{}", "{}\n", "---\ngreylist: {}\n...\n", "# c\n{}\n# after\n", "\ufeffrules: []\n"} {
		if _, err := ParsePolicy("p.yaml", []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

func TestAPIPolicyPutRefusesWhatIsNotOneDocument(t *testing.T) {
	f := newAPIFixture(t, "greylist: {delay: 1h}\n", "", nil)
	for _, tc := range notOnePolicy {
		code, _, body := f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader(tc.in))
		e := wantError(t, tc.name, code, body, http.StatusBadRequest)
		if !strings.Contains(e.Error, "request:") {
			t.Errorf("%s: error without a position: %q", tc.name, e.Error)
		}
		if gl := f.srv.Policy().Greylist; gl == nil || gl.Delay != time.Hour {
			t.Fatalf("%s: the policy changed to %+v", tc.name, PolicyDocument(f.srv.Policy()))
		}
	}
	// Still greylisting.
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "x@remote.test"); c != 451 {
		t.Fatalf("after the bad PUTs: %d, want 451 from the greylist", c)
	}
}

func TestCLIPolicyFileRefusesWhatIsNotOneDocument(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range notOnePolicy {
		p := filepath.Join(dir, "p.yaml")
		if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "--policy", p, "--listen", "127.0.0.1:0")
		if code != ExitConfig || stdout != "" || !strings.HasPrefix(stderr, p+":"+strconv.Itoa(tc.line)+":") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 2 and %s:%d:COL", tc.name, code, stdout, stderr, p, tc.line)
		}
	}
}

func TestPolicyYAMLAnchorsAliasesAndMerge(t *testing.T) {
	p := parseTestPolicy(t, `greylist:
  delay: &d 5m
  max_age: *d
  retry_window: &w 1h
rules:
  - &deny
    match: &m {stage: rcpt, rcpt: "x@*"}
    reply: "550 5.1.1 no"
  - *deny
  - match: {<<: *m, rcpt: "y@*"}
    reply: &r "451 4.3.0 later"
  - match:
      <<: *m
    reply: *r
`)
	if g := p.Greylist; g == nil || g.Delay != 5*time.Minute || g.MaxAge != 5*time.Minute || g.RetryWindow != time.Hour {
		t.Fatalf("greylist %+v", p.Greylist)
	}
	if len(p.Rules) != 4 {
		t.Fatalf("rules %+v", p.Rules)
	}
	for i, want := range []struct {
		rcpt string
		code int
	}{{"x@*", 550}, {"x@*", 550}, {"y@*", 451}, {"x@*", 451}} {
		r := p.Rules[i]
		if r.Match.Stage != StageRcpt || r.Match.Rcpt != want.rcpt || r.Reply == nil || r.Reply.Code != want.code {
			t.Errorf("rule %d: %+v (reply %+v), want rcpt %s code %d", i, r, r.Reply, want.rcpt, want.code)
		}
	}
	// An alias to the wrong kind of node is still an error with a position.
	if _, err := ParsePolicy("p.yaml", []byte("greylist: &g {delay: 1m}\nrules: *g\n")); err == nil || !positioned.MatchString(err.Error()) {
		t.Fatalf("rules aliasing a mapping: %v", err)
	}
}

// --policy reads a regular file of at most 1 MiB: a FIFO, /dev/zero or a
// huge file is refused at once (exit 2), not waited on or read forever.
func TestCLIPolicyFileMustBeASmallRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("rules: []\n"+strings.Repeat("#", MaxAPIBodyBytes)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{fifo, "not a regular file"},
		{"/dev/zero", "not a regular file"},
		{dir, "not a regular file"},
		{big, "larger than"},
	} {
		done := make(chan struct{})
		var code int
		var stderr string
		go func() {
			defer close(done)
			code, _, stderr = runCLI(t, "--policy", c.path, "--listen", "127.0.0.1:0")
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("--policy %s: still reading after 20s", c.path)
		}
		if code != ExitConfig || !strings.Contains(stderr, c.want) {
			t.Errorf("--policy %s: exit %d, stderr %q; want exit 2 and %q", c.path, code, stderr, c.want)
		}
	}
}

// Merge keys cannot multiply a small document into an enormous one (the
// "billion laughs" shape): the expansion is bounded and reported.
func TestPolicyMergeKeysBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("x0: &m0 {stage: rcpt}\n")
	for i := 1; i <= 8; i++ {
		fmt.Fprintf(&b, "x%d: &m%d {", i, i)
		for j := range 12 {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "<<: *m%d", i-1)
		}
		b.WriteString("}\n")
	}
	doc := "rules:\n  - match: {<<: *m8}\n    drop: true\n"
	// Anchors must be defined inside the policy: put them in a rule list.
	src := "rules:\n"
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		_, def, _ := strings.Cut(line, ": ")
		src += "  - match: " + def + "\n    drop: true\n"
	}
	src += strings.TrimPrefix(doc, "rules:\n")
	done := make(chan error, 1)
	go func() { _, err := ParsePolicy("p.yaml", []byte(src)); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "merge") {
			t.Fatalf("nested merges: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nested merge keys still expanding after 10s")
	}
}
