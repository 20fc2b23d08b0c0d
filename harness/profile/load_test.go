package profile

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/ledger"
)

const good = `
name: postfix
submit:
  addr: 127.0.0.1:${SUBMIT_PORT:-2525}
commands:
  setup: ./postfix.sh setup
  start: exec ./postfix.sh start
  start_foreground: true
  ready: ./postfix.sh ready
  queue: ./postfix.sh queue --dir $WORKDIR
  flush: echo $$HOME
queue_format: postfix-json
next_hop: 127.0.0.1:${NEXT_HOP_PORT}
timing:
  retry_max: 3s
  queue_lifetime: 45s
  delay_warning: 15s
env:
  WORKDIR: ${GH_TEST_BASE}/work
  NEXT_HOP_PORT: "2600"
scenarios:
  delay-warning:
    skip: not today
`

func writeProfile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "relay.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadGood(t *testing.T) {
	t.Setenv("GH_TEST_BASE", "/srv")
	t.Setenv("SUBMIT_PORT", "")
	path := writeProfile(t, good)
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p.Dir != filepath.Dir(path) || !filepath.IsAbs(p.Dir) {
		t.Errorf("Dir = %q, want %q", p.Dir, filepath.Dir(path))
	}
	if p.Submit.Addr != "127.0.0.1:2525" {
		t.Errorf("addr = %q (default of ${SUBMIT_PORT:-2525} not applied)", p.Submit.Addr)
	}
	if p.Submit.Helo != DefaultHelo {
		t.Errorf("helo default = %q", p.Submit.Helo)
	}
	if p.Env["WORKDIR"] != "/srv/work" {
		t.Errorf("env WORKDIR = %q", p.Env["WORKDIR"])
	}
	if p.Commands.Queue != "./postfix.sh queue --dir /srv/work" {
		t.Errorf("queue command = %q (env from profile not expanded)", p.Commands.Queue)
	}
	if p.Commands.Flush != "echo $HOME" {
		t.Errorf("$$ not kept as $: %q", p.Commands.Flush)
	}
	if !slices.Equal(p.NextHop, []string{"127.0.0.1:2600"}) {
		t.Errorf("next_hop = %v", p.NextHop)
	}
	if p.Timing.RestartGrace.D() != 10*time.Second || p.Timing.RetryMax.D() != 3*time.Second {
		t.Errorf("timing = %+v", p.Timing)
	}
	if p.Scenarios["delay-warning"].Skip != "not today" {
		t.Errorf("scenarios = %+v", p.Scenarios)
	}
	for _, c := range []Capability{CapRestart, CapStop, CapQueue, CapFlush, CapFakeMTAControl, CapDelayWarning} {
		if !p.Has(c) {
			t.Errorf("Has(%s) = false", c)
		}
	}
	if m := p.Missing([]Capability{CapQueue, CapRestart}); m != nil {
		t.Errorf("Missing = %v", m)
	}
}

func TestCapabilities(t *testing.T) {
	p := &Profile{QueueFormat: QueueNone, FakeMTA: &FakeMTARef{API: "http://x"}}
	got := p.Missing([]Capability{CapRestart, CapStop, CapQueue, CapFlush, CapFakeMTAControl, CapDelayWarning, CapRestart})
	want := []Capability{CapRestart, CapStop, CapQueue, CapFlush, CapFakeMTAControl, CapDelayWarning}
	if !slices.Equal(got, want) {
		t.Errorf("Missing = %v, want %v", got, want)
	}
	p.Commands = Commands{Start: "s", Stop: "x"}
	if !p.Has(CapRestart) || !p.Has(CapStop) {
		t.Error("start+stop should give restart and stop")
	}
	p.Commands = Commands{Restart: "r"}
	if !p.Has(CapRestart) || p.Has(CapStop) {
		t.Error("restart command alone gives restart only")
	}
}

func TestLoadErrors(t *testing.T) {
	base := "submit:\n  addr: 127.0.0.1:25\nnext_hop: [127.0.0.1:26]\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n"
	start := "commands:\n  start: ./relay\n"
	cases := []struct {
		name, body, want string
	}{
		{"unknown top key", base + "queu_format: exim\n", `:7:1: unknown key "queu_format"`},
		{"unknown nested key", "submit:\n  adr: x\n", `:2:3: unknown key "adr" in submit`},
		{"bad duration", strings.Replace(base, "3s", "3 parsecs", 1), `:5:14: timing.retry_max: invalid duration`},
		{"bad bool", base + "commands:\n  start: x\n  start_foreground: maybe\n", `:9:21: commands.start_foreground: expected true or false`},
		{"missing addr", "next_hop: [127.0.0.1:26]\n", `:1:1: submit.addr is required`},
		{"bad addr", strings.Replace(base, "127.0.0.1:25", "localhost", 1), `:2:9: submit.addr "localhost": want host:port`},
		{"bad format", base + "queue_format: qmail\ncommands:\n  queue: mailq\n", `:7:15: unknown queue_format "qmail"`},
		{"format without command", base + "queue_format: exim\n", `queue_format "exim" needs commands.queue`},
		{"queue without format", base + "commands:\n  queue: mailq\n", `queue_format is required when commands.queue is set`},
		{"no next hop", "submit:\n  addr: 127.0.0.1:25\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n", `:1:1: next_hop is required`},
		{"bad next hop", strings.Replace(base, "127.0.0.1:26", "127.0.0.1:x", 1), `:3:12: next_hop "127.0.0.1:x": port "x"`},
		{"no retry_max", strings.Replace(base, "  retry_max: 3s\n", "", 1), `:4:1: timing.retry_max is required`},
		{"zero lifetime", strings.Replace(base, "40s", "0s", 1), `:6:19: timing.queue_lifetime is required`},
		{"no timing", "submit:\n  addr: 127.0.0.1:25\nnext_hop: 127.0.0.1:26\n", `:1:1: timing.retry_max is required`},
		{"syntax", "submit:\n  addr: [\n", `relay.yaml:2:1: did not find expected node content`},
		{"wrong kind", "submit: 127.0.0.1:25\n", `:1:9: submit must be a mapping of keys, got the string "127.0.0.1:25"`},
		{"list document", "- submit\n", `:1:1: relay profile must be a mapping of keys, got a list`},
		{"null document", "~\n", `:1:1: relay profile must be a mapping of keys, got nothing (null)`},
		{"only comments", "# nothing yet\n", `:1:1: empty relay profile`},
		{"merge key", "submit:\n  <<: {addr: 127.0.0.1:25}\n", `:2:3: merge keys (<<) are not supported in relay profile files`},
		{"key not a word", base + start + "env:\n  [a]: x\n", `:10:3: keys in env must be plain words, got a list`},
		{"empty", "", `:1:1: empty relay profile`},
		{"foreground without start", base + "commands:\n  start_foreground: true\n", `commands.start_foreground needs commands.start`},
		{"duplicate top key", base + start + "next_hop: [127.0.0.1:27]\n", `:9:1: duplicate key "next_hop" (first at line 3)`},
		{"duplicate nested key", base + "commands:\n  start: ./a\n  ready: ./r\n  start: ./b\n", `:10:3: duplicate key "start" in commands (first at line 8)`},
		{"duplicate env key", base + start + "env:\n  A: x\n  A: y\n", `:11:3: duplicate key "A" in env (first at line 10)`},
		{"duplicate scenario override", base + start + "scenarios:\n  s: {skip: a}\n  s: {skip: b}\n", `:11:3: duplicate key "s" in scenarios (first at line 10)`},
		{"duplicate key in a flow mapping", strings.Replace(base, "submit:\n  addr: 127.0.0.1:25\n", "submit: {addr: 127.0.0.1:25, helo: a, addr: 127.0.0.1:26}\n", 1) + start, `:1:39: duplicate key "addr" in submit (first at line 1)`},
		{"no start and no ready", base, `:1:1: commands.start is required`},
		{"no start and no ready under commands", base + "commands:\n  restart: ./r\n", `:7:1: commands.start is required`},
		{"stop without start", base + "commands:\n  ready: ./r\n  stop: ./s\n", `:9:9: commands.stop needs commands.start`},
		{"bad lane", base + start + "lanes: [127.0.0.11]\n", `:9:9: lanes[0] "127.0.0.11": want host:port`},
		{"lane not loopback", base + start + "lanes:\n  - 127.0.0.11:26\n  - 10.0.0.1:26\n", `:11:5: lanes[1] "10.0.0.1:26": a lane must be a loopback IP address`},
		{"lane by name", base + start + "lanes: [localhost:26]\n", `:9:9: lanes[0] "localhost:26": a lane must be a loopback IP address`},
		{"lane is a next hop", base + start + "lanes: [127.0.0.11:26, 127.0.0.1:26]\n", `:9:24: lanes[1] "127.0.0.1:26" is next_hop[0]: a lane is an address of its own`},
		{"lane twice", base + start + "lanes: [127.0.0.11:26, 127.0.0.11:26]\n", `:9:24: lanes[1] "127.0.0.11:26" is lanes[0] too`},
		{"lanes with a remote fake MTA", "submit:\n  addr: 127.0.0.1:25\nfakemta:\n  api: http://127.0.0.1:8025\nlanes: [127.0.0.11:26]\ncommands:\n  ready: ./r\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n", `:5:8: lanes need the in-process fake MTA`},
		{"fakemta without api", "submit:\n  addr: 127.0.0.1:25\nfakemta:\n  token: x\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n", `:3:1: fakemta.api is required`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeProfile(t, tc.body)
			_, err := Load(path)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.HasPrefix(err.Error(), path+":") {
				t.Errorf("error %q does not start with the file name", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestFakeMTAWithoutNextHop(t *testing.T) {
	t.Setenv("GH_TOKEN", "s3cret")
	p, err := Parse("x.yaml", []byte("submit:\n  addr: '[::1]:25'\ncommands:\n  ready: ./check\nfakemta:\n  api: http://127.0.0.1:8025\n  token: $GH_TOKEN\ntiming:\n  retry_max: 1m\n  queue_lifetime: 5d\n  restart_grace: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.FakeMTA.Token != "s3cret" || p.Name != "x" || p.QueueFormat != QueueNone || p.Timing.QueueLifetime.D() != 120*time.Hour || p.Timing.RestartGrace.D() != 30*time.Second {
		t.Errorf("profile = %+v", p)
	}
	if p.Has(CapFakeMTAControl) {
		t.Error("a deployed fake MTA cannot be controlled")
	}
	// An already running relay: ready without start, so no restart either.
	if p.Commands.Start != "" || p.Has(CapRestart) || p.Has(CapStop) {
		t.Errorf("commands = %+v", p.Commands)
	}
}

// The shipped profiles must load (every ci/*/relay.yaml); Postfix and Exim
// offer every capability.
func TestShippedProfiles(t *testing.T) {
	files, err := filepath.Glob("../../ci/*/relay.yaml")
	if err != nil || len(files) < 4 {
		t.Fatalf("ci/*/relay.yaml: %v %v", files, err)
	}
	for _, f := range files {
		p, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if p.Name != "postfix" && p.Name != "exim" {
			continue
		}
		if m := p.Missing([]Capability{CapRestart, CapStop, CapQueue, CapFlush, CapDelayWarning}); m != nil {
			t.Errorf("%s lacks %v", f, m)
		}
	}
}

// The relay-zoo profiles load, with the capabilities each relay truly has:
// nullmailer and maddy send no delay notice, maddy has no flush command and
// skips what its 15-minute backoff makes impractical, each with a reason.
func TestShippedZooProfiles(t *testing.T) {
	for f, want := range map[string]struct {
		format  QueueFormat
		missing []Capability
	}{
		"../../ci/sendmail/relay.yaml":   {QueueSendmail, nil},
		"../../ci/nullmailer/relay.yaml": {QueueNullmailer, []Capability{CapDelayWarning}},
		"../../ci/maddy/relay.yaml":      {QueueMaddy, []Capability{CapFlush, CapDelayWarning}},
	} {
		p, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if p.QueueFormat != want.format {
			t.Errorf("%s: queue_format %q, want %q", f, p.QueueFormat, want.format)
		}
		if m := p.Missing([]Capability{CapRestart, CapStop, CapQueue, CapFlush, CapDelayWarning}); !slices.Equal(m, want.missing) {
			t.Errorf("%s lacks %v, want %v", f, m, want.missing)
		}
	}
	p, err := Load("../../ci/maddy/relay.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Scenarios) < 5 {
		t.Errorf("maddy skips %d scenarios", len(p.Scenarios))
	}
	// The skips for want of a delay notice or of a second MX give that
	// reason (they would skip by capability anyway); every other one is
	// the backoff's.
	own := map[string]string{"delay-warning": "no delay notice", "multi-mx-split-state": "one fixed host:port", "multi-mx-shared-state": "one fixed host:port"}
	for name, o := range p.Scenarios {
		if o.Expect != nil {
			continue // an expected failure: Load requires its why
		}
		want, ok := own[name]
		if !ok {
			want = "15 minutes"
		}
		if !strings.Contains(o.Skip, want) {
			t.Errorf("maddy's %s: skip reason %q does not say %q", name, o.Skip, want)
		}
	}
}

func TestExpectedOutcomes(t *testing.T) {
	base := "submit:\n  addr: 127.0.0.1:25\nnext_hop: [127.0.0.1:26]\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\ncommands:\n  start: ./relay\n"
	p, err := Parse("relay.yaml", []byte(base+"scenarios:\n  expiry-bounce:\n    expect: {verdict: bad-dsn}\n    why: sends Action delayed at expiry\n  load-500:\n    expect:\n      verdict: [stalled, lost]\n    why: slow\n"))
	if err != nil {
		t.Fatal(err)
	}
	o := p.Scenarios["expiry-bounce"]
	if o.Expect == nil || !slices.Equal(o.Expect.Verdict, []ledger.Verdict{ledger.BadDSN}) || o.Why != "sends Action delayed at expiry" {
		t.Errorf("expiry-bounce override = %+v", o)
	}
	if e := p.Scenarios["load-500"].Expect; e == nil || !slices.Equal(e.Verdict, []ledger.Verdict{ledger.Stalled, ledger.Lost}) {
		t.Errorf("load-500 expect = %+v", e)
	}
	cases := []struct{ name, body, want string }{
		{"expect without why", "scenarios:\n  s:\n    expect: {verdict: lost}\n", `:11:13: scenarios.s.expect needs why: the relay's real behaviour, with its evidence`},
		{"why without expect", "scenarios:\n  s:\n    why: because\n", `:11:10: scenarios.s.why explains an expect; this override has none`},
		{"skip and expect", "scenarios:\n  s:\n    skip: no\n    expect: {verdict: lost}\n    why: w\n", `:12:13: scenarios.s: skip and expect exclude each other`},
		{"skip and share", "scenarios:\n  s:\n    skip: no\n    share: its load is harmless here\n", `:12:12: scenarios.s: skip and share exclude each other`},
		{"blank share", "scenarios:\n  s:\n    share: \" \"\n", `:11:12: scenarios.s.share needs its reason`},
		{"no verdict", "scenarios:\n  s:\n    expect: {}\n    why: w\n", `:11:5: scenarios.s.expect.verdict is required`},
		{"unknown verdict", "scenarios:\n  s:\n    expect: {verdict: [lost, gone]}\n    why: w\n", `:11:30: scenarios.s.expect.verdict: "gone" is not a failing verdict (one of lost, held-silently, bad-dsn`},
		{"passing verdict", "scenarios:\n  s:\n    expect: {verdict: delivered}\n    why: w\n", `:11:23: scenarios.s.expect.verdict: "delivered" is not a failing verdict`},
		{"unknown expect key", "scenarios:\n  s:\n    expect: {verdicts: lost}\n    why: w\n", `:11:14: unknown key "verdicts" in scenarios.s.expect`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("relay.yaml", []byte(base+tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestExplains(t *testing.T) {
	o := ScenarioOverride{Expect: &Expect{Verdict: []ledger.Verdict{ledger.BadDSN}}, Why: "w"}
	failing := func(vs ...ledger.Verdict) ledger.Result {
		r := ledger.Result{Passed: len(vs) == 0}
		r.Findings = append(r.Findings, ledger.Finding{Primary: ledger.Delivered, Verdicts: []ledger.Verdict{ledger.Delivered}})
		for _, v := range vs {
			r.Findings = append(r.Findings, ledger.Finding{Primary: v, Verdicts: []ledger.Verdict{v}, Failed: true})
		}
		return r
	}
	for _, tc := range []struct {
		name    string
		r       ledger.Result
		stepErr string
		want    bool
	}{
		{"the expected verdict", failing(ledger.BadDSN), "", true},
		{"twice", failing(ledger.BadDSN, ledger.BadDSN), "", true},
		{"another verdict too", failing(ledger.BadDSN, ledger.Lost), "", false},
		{"another verdict", failing(ledger.Lost), "", false},
		{"passed", failing(), "", false},
		{"step error", failing(ledger.BadDSN), "step 2: restart failed", false},
		{"failed without a failing finding", ledger.Result{Passed: false}, "", false},
	} {
		if got := o.Explains(tc.r, tc.stepErr); got != tc.want {
			t.Errorf("%s: Explains = %v, want %v", tc.name, got, tc.want)
		}
	}
	if (ScenarioOverride{Skip: "x"}).Explains(failing(ledger.BadDSN), "") {
		t.Error("an override without expect explains nothing")
	}
}

// TestMultiMXCapability: a next_hop list of two or more MX hosts, for the
// in-process fake MTA, gives multi-mx; one next hop or a remote fake MTA
// does not.
func TestMultiMXCapability(t *testing.T) {
	for _, tc := range []struct {
		p    Profile
		want bool
	}{
		{Profile{NextHop: []string{"127.0.0.1:2526"}}, false},
		{Profile{NextHop: []string{"127.0.0.2:2526", "127.0.0.3:2526"}}, true},
		{Profile{NextHop: []string{"127.0.0.2:2526", "127.0.0.3:2526"}, FakeMTA: &FakeMTARef{API: "http://x"}}, false},
	} {
		if got := tc.p.Has(CapMultiMX); got != tc.want {
			t.Errorf("%v (remote %v): Has(multi-mx) = %v, want %v", tc.p.NextHop, tc.p.FakeMTA != nil, got, tc.want)
		}
	}
	// The ci profiles list two MX hosts; a single scalar next_hop stays valid.
	for _, f := range []string{"../../ci/postfix/relay.yaml", "../../ci/exim/relay.yaml"} {
		p, err := Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Has(CapMultiMX) || len(p.NextHop) != 2 || !strings.HasPrefix(p.NextHop[0], "127.0.0.2:") || !strings.HasPrefix(p.NextHop[1], "127.0.0.3:") {
			t.Errorf("%s: next_hop %v, want MX hosts 127.0.0.2 and 127.0.0.3", f, p.NextHop)
		}
	}
}

// Every relay script's default ports (ci/lib.sh relay_env NAME SUBMIT
// NEXT_HOP) are its profile's: the harness submits to the profile's
// ${SUBMIT_PORT:-N} while the script, run without SUBMIT_PORT set (make
// conformance), listens on its own default — and its ready command, which
// asks the script's port, says ready. nullmailer.sh once listened on 2585
// while its profile submitted to 2595: every scenario not-accepted.
func TestShippedScriptsDefaultToTheProfilesPorts(t *testing.T) {
	scripts, err := filepath.Glob("../../ci/*/*.sh")
	if err != nil {
		t.Fatal(err)
	}
	relayEnv := regexp.MustCompile(`(?m)^relay_env (\S+) (\d+) (\d+)$`)
	submit := regexp.MustCompile(`\$\{SUBMIT_PORT:-(\d+)\}`)
	nextHop := regexp.MustCompile(`\$\{NEXT_HOP_PORT:-(\d+)\}`)
	checked := 0
	for _, sh := range scripts {
		b, err := os.ReadFile(sh)
		if err != nil {
			t.Fatal(err)
		}
		m := relayEnv.FindSubmatch(b)
		if m == nil {
			continue
		}
		yml, err := os.ReadFile(filepath.Join(filepath.Dir(sh), "relay.yaml"))
		if err != nil {
			t.Errorf("%s: %v", sh, err)
			continue
		}
		for _, c := range []struct {
			re   *regexp.Regexp
			want string
		}{{submit, string(m[2])}, {nextHop, string(m[3])}} {
			all := c.re.FindAllSubmatch(yml, -1)
			if len(all) == 0 {
				t.Errorf("%s: relay.yaml has no %s default", sh, c.re)
			}
			for _, got := range all {
				if string(got[1]) != c.want {
					t.Errorf("%s defaults to port %s, its relay.yaml to %s (%s)", sh, c.want, got[1], got[0])
				}
			}
		}
		checked++
	}
	if checked < 7 {
		t.Errorf("checked %d relay scripts, want every ci/*/NAME.sh (7)", checked)
	}
}

// TestLoadLanes: lanes are expanded like next_hop and kept in order.
func TestLoadLanes(t *testing.T) {
	t.Setenv("NEXT_HOP_PORT", "2701")
	p, err := Parse("x.yaml", []byte("submit:\n  addr: 127.0.0.1:25\nnext_hop: 127.0.0.2:${NEXT_HOP_PORT}\nlanes:\n  - 127.0.0.11:${NEXT_HOP_PORT}\n  - '[::1]:${NEXT_HOP_PORT}'\ncommands:\n  ready: ./r\ntiming:\n  retry_max: 3s\n  queue_lifetime: 40s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"127.0.0.11:2701", "[::1]:2701"}; !slices.Equal(p.Lanes, want) {
		t.Fatalf("lanes = %v, want %v", p.Lanes, want)
	}
}
