package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

// TestMain removes the binary the CLI tests share.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildBinary builds greyharness once for all the CLI tests.
func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("CLI run: builds and runs the binary; make test (go test without -short) runs it")
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "greyharness-cli-test-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "greyharness")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func runBin(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	return runBinWithin(t, 5*time.Minute, bin, args...)
}

// runBinWithin runs bin and fails the test when it has not exited within d
// (a hang is a failure, not a stuck test run).
func runBinWithin(t *testing.T, d time.Duration, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	cmd.WaitDelay = time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("greyharness %s: still running after %v\n%s", strings.Join(args, " "), d, out.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

// checkHTML checks an HTML report of the seed incident: the scenario failed
// and the held message's timeline is open, drawn beside its text.
func checkHTML(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("HTML report: %v", err)
	}
	page := string(b)
	for _, want := range []string{`<span class="badge failed">failed</span><h2>double-restart-then-greylist</h2>`,
		`<details open id=`, `<span class="badge FAIL">FAIL</span>held-silently — message gh-`, "<td>deadline</td>",
		`<a href="#s1">double-restart-then-greylist</a>`, `<svg class="lane"`, `<circle class="att c4xx"`} {
		if !strings.Contains(page, want) {
			t.Errorf("%s lacks %q", path, want)
		}
	}
}

// checkJUnit checks a JUnit report: one test case per scenario run, named
// after it, failed with its worst verdict or passed, with its steps in
// system-out.
func checkJUnit(t *testing.T, path string, scenario, failure string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("JUnit report: %v", err)
	}
	var got struct {
		Suites []struct {
			Cases []struct {
				Name    string  `xml:"name,attr"`
				Time    float64 `xml:"time,attr"`
				Failure *struct {
					Type string `xml:"type,attr"`
					Text string `xml:",chardata"`
				} `xml:"failure"`
				SystemOut string `xml:"system-out"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(got.Suites) != 1 || len(got.Suites[0].Cases) != 1 {
		t.Fatalf("%s: want one suite with one test case (one scenario ran):\n%s", path, b)
	}
	c := got.Suites[0].Cases[0]
	if c.Name != scenario || c.Time <= 0 || !strings.Contains(c.SystemOut, "step 1: ") || !strings.Contains(c.SystemOut, "judges every message (ledger): ") {
		t.Errorf("%s: test case %q time %v system-out:\n%s", path, c.Name, c.Time, c.SystemOut)
	}
	switch {
	case failure == "" && c.Failure != nil:
		t.Errorf("%s: unexpected failure %s", path, c.Failure.Type)
	case failure != "" && (c.Failure == nil || c.Failure.Type != failure || !strings.Contains(c.Failure.Text, "deadline")):
		t.Errorf("%s: want a %s failure with the timeline, got %+v", path, failure, c.Failure)
	}
}

func TestCLI(t *testing.T) {
	bin := buildBinary(t)

	t.Run("seed incident is reported as held silently with its timeline", func(t *testing.T) {
		dir := t.TempDir()
		page, results := filepath.Join(dir, "report.html"), filepath.Join(dir, "results")
		junit := filepath.Join(dir, "junit.xml")
		code, out := runBin(t, bin, "run", "--relay", "sample:kb950757", "--focus", "double-restart-then-greylist",
			"--html", page, "--results", results, "--junit", junit)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, out)
		}
		for _, want := range []string{"FAIL held-silently message gh-", "submitted", "attempt", "451 4.7.1", "deadline", "fault"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q\n%s", want, out)
			}
		}
		checkHTML(t, page)
		checkJUnit(t, junit, "double-restart-then-greylist", "held-silently")

		// The saved history re-judges offline to the same verdict, HTML included.
		rejudged := filepath.Join(dir, "rejudged.html")
		code, out = runBin(t, bin, "judge", "--html", rejudged, results)
		if code != 1 || !strings.Contains(out, "FAIL held-silently message gh-") {
			t.Fatalf("judge: exit %d, want 1 and the held message\n%s", code, out)
		}
		checkHTML(t, rejudged)
	})
	t.Run("correct sample relay passes", func(t *testing.T) {
		junit := filepath.Join(t.TempDir(), "junit.xml")
		code, out := runBin(t, bin, "run", "--relay", "sample", "--focus", "^greylist-once$", "--junit", junit)
		if code != 0 || !strings.Contains(out, "1 scenario(s) passed, 0 failed") {
			t.Fatalf("exit %d, want 0\n%s", code, out)
		}
		checkJUnit(t, junit, "greylist-once", "")
	})
	t.Run("bad input exits 2", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad.yaml")
		os.WriteFile(bad, []byte("name: x\nsteps:\n  - send: {to: [a@b.test], count: 0}\n"), 0o644)
		if code, out := runBin(t, bin, "validate", bad); code != 2 || !strings.Contains(out, bad+":3:") {
			t.Fatalf("validate: exit %d\n%s", code, out)
		}
		if code, out := runBin(t, bin, "run", "--relay", "/nonexistent/relay.yaml"); code != 2 {
			t.Fatalf("missing profile: exit %d\n%s", code, out)
		}
		if code, out := runBin(t, bin, "judge", "--html"); code != 2 || !strings.Contains(out, "--html needs a file") {
			t.Fatalf("judge --html without a file: exit %d\n%s", code, out)
		}
		if code, out := runBin(t, bin, "judge", "--bogus", "x"); code != 2 {
			t.Fatalf("judge bad flag: exit %d\n%s", code, out)
		}
		if code, out := runBin(t, bin, "run", "--bogus"); code != 2 {
			t.Fatalf("bad flag: exit %d\n%s", code, out)
		}
		if code, out := runBin(t, bin, "run", "--relay", "sample:no-such-bug"); code != 2 || !strings.Contains(out, "kb950757") {
			t.Fatalf("bad bug: exit %d\n%s", code, out)
		}
	})
}
