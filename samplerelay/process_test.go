package samplerelay

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets the test binary act as `greyharness sample-relay ...` in a
// child process, so a restart in TestServeProcessRestart is a real one.
func TestMain(m *testing.M) {
	if os.Getenv("SAMPLERELAY_HELPER") == "1" {
		os.Exit(Main(strings.Split(os.Getenv("SAMPLERELAY_ARGS"), "\x1f"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

type relayProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *bytes.Buffer
	exited chan error
}

func startProc(t *testing.T, args ...string) *relayProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "SAMPLERELAY_HELPER=1", "SAMPLERELAY_ARGS="+strings.Join(args, "\x1f"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &relayProc{cmd: cmd, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "sample-relay: listening on "); ok {
				addrc <- a
			}
		}
	}()
	go func() { p.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-p.exited
		}
	})
	select {
	case p.addr = <-addrc:
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("relay process exited before listening: %v\n%s", err, p.stderr)
	case <-time.After(10 * time.Second):
		t.Fatalf("relay process not listening within 10s\n%s", p.stderr)
	}
	return p
}

func (p *relayProc) terminate(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("relay process after SIGTERM: %v\n%s", err, p.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("relay process ignored SIGTERM\n%s", p.stderr)
	}
}

func TestServeProcessRestart(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(tempfailAlways, nil)
	dir := t.TempDir()
	args := []string{"serve", "--listen", "127.0.0.1:0", "--next-hop", s.addr, "--queue", dir,
		"--min-backoff", "200ms", "--max-backoff", "400ms", "--queue-lifetime", "20s", "--delay-warning", "0"}
	p1 := startProc(t, args...)
	m := submit(t, p1.addr, "alice@sender.test", "bob@rcpt.test")
	waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	p1.terminate(t)
	if !strings.Contains(p1.stderr.String(), "stopped") {
		t.Errorf("no clean stop in the log:\n%s", p1.stderr)
	}
	if findEntry(listing(t, dir), m) == nil {
		t.Fatal("queued message not listed while the relay is down")
	}
	s.script(nil, nil)
	p2 := startProc(t, args...)
	waitDeliveryOf(t, s, m, "delivery after a process restart", "delivered message is not the queued one")
	p2.terminate(t)
}
