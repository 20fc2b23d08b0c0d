// Command bench measures the fake MTA against Postfix's smtp-sink, the C
// reference, with Postfix's smtp-source as the load generator.
//
//	go run ./fakemta/bench                    # 3 alternating rounds, then the RSS run
//	go run ./fakemta/bench -rounds 5 -messages 50000
//	go run ./fakemta/bench -pin               # servers on CPU 0, smtp-source on CPU 1
//	go run ./fakemta/bench serve --listen 127.0.0.1:2525 --state DIR [--journal-sync 100ms] [--cpuprofile F]
//	go run ./fakemta/bench serve-bare --listen 127.0.0.1:2526
//
// The fake MTA runs as its own process (this program's "serve" mode) with
// the journal on in a state directory and a policy of greylist delay 0s
// plus one reject rule, twice a round: with its defaults (one fsync per
// message, shared by concurrent sessions) and with the load-test settings
// (--journal-sync 100ms and GOMAXPROCS=1). smtp-source treats a 4xx as
// fatal, so the greylist triplet is passed once before each timed run.
//
// Each round also times the smallest go-smtp server there is (serve-bare:
// accept everything, discard the body, no journal, no policy), with the
// default GOMAXPROCS and with 1: the ceiling any fake MTA built on go-smtp
// can reach on this machine. Every run reports msgs/s and the CPU time the
// server process spent per message. Postfix is installed when missing.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/greyharness/greyharness/fakemta"
)

const benchPolicy = `greylist:
  delay: 0s
rules:
  - match: {stage: rcpt, rcpt: "reject@*"}
    reply: "550 5.1.1 No such user"
`

const (
	sender    = "bench@client.test"
	recipient = "sink@remote.test"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve-bare" {
		if err := serveBare(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve-bare:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		if err := serve(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench serve:", err)
			os.Exit(1)
		}
		return
	}
	rounds := flag.Int("rounds", 3, "alternating rounds (fake MTA, smtp-sink)")
	messages := flag.Int("messages", 20000, "messages per timed run (smtp-source -m)")
	sessions := flag.Int("sessions", 20, "parallel sessions (smtp-source -s)")
	size := flag.Int("size", 1024, "payload bytes (smtp-source -l)")
	rssMessages := flag.Int("rss-messages", 100000, "messages journaled before reading the fake MTA's peak RSS (0 = skip)")
	cpuprofile := flag.String("cpuprofile", "", "write the fake MTA's CPU profile of the last round here")
	pin := flag.Bool("pin", false, "run every server on CPU 0 and smtp-source on CPU 1 (taskset); Go then gives each server GOMAXPROCS=1")
	flag.Parse()
	if *pin {
		if err := pinCPUs(); err != nil {
			fmt.Fprintln(os.Stderr, "bench: -pin:", err)
			os.Exit(2)
		}
	}
	if err := run(*rounds, *messages, *sessions, *size, *rssMessages, *cpuprofile); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// serve runs the fake MTA until SIGTERM or SIGINT.
func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	state := fs.String("state", "", "state directory (journal)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile here")
	journalSync := fs.Duration("journal-sync", 0, "fsync the journal at most this often (0: before every 250 to a final dot)")
	memprofile := fs.String("memprofile", "", "write a heap profile here at exit")
	fs.Parse(args)
	pol, err := fakemta.ParsePolicy("bench.yaml", []byte(benchPolicy))
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	s, err := fakemta.New(fakemta.Config{Listen: []string{*listen}, StateDir: *state, Policy: pol, JournalSync: *journalSync})
	if err != nil {
		return err
	}
	if err := s.Start(); err != nil {
		return err
	}
	fmt.Println("ADDR", s.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	err = s.Close()
	if *memprofile != "" {
		if f, ferr := os.Create(*memprofile); ferr == nil {
			pprof.WriteHeapProfile(f)
			f.Close()
		}
	}
	return err
}

// bareBackend is the smallest go-smtp backend: everything accepted, bodies discarded.
type bareBackend struct{}
type bareSession struct{}

func (bareBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return bareSession{}, nil }
func (bareSession) Mail(string, *smtp.MailOptions) error        { return nil }
func (bareSession) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (bareSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	return err
}
func (bareSession) Reset()        {}
func (bareSession) Logout() error { return nil }

// serveBare runs the bare go-smtp server until SIGTERM or SIGINT.
func serveBare(args []string) error {
	fs := flag.NewFlagSet("serve-bare", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	fs.Parse(args)
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	s := smtp.NewServer(bareBackend{})
	s.Domain = "bare.bench.test"
	go s.Serve(l)
	fmt.Println("ADDR", l.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	<-ctx.Done()
	return s.Close()
}

// server is one contender of a round.
type server struct {
	name string
	run  func(prof string) (result, error)
	fake bool // a fake MTA: its ratio to smtp-sink is the target
	note string
}

// result is one timed run: msgs/s, the server's peak RSS in MiB (fake MTA
// only) and its CPU time (user + system, all threads) per message in µs.
type result struct{ rate, rss, cpu float64 }

func run(rounds, messages, sessions, size, rssMessages int, cpuprofile string) error {
	source, sink, err := ensurePostfix()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	oneP := []string{"GOMAXPROCS=1"}
	servers := []server{
		{name: "fake MTA", fake: true, note: "defaults: journal fsync'd before every 250 to a final dot",
			run: func(prof string) (result, error) {
				return runFake(self, source, messages, sessions, size, prof, nil, nil)
			}},
		{name: "fake MTA load", fake: true, note: "--journal-sync 100ms, GOMAXPROCS=1: written before each 250, fsync'd every 100 ms",
			run: func(string) (result, error) {
				return runFake(self, source, messages, sessions, size, "", []string{"--journal-sync", "100ms"}, oneP)
			}},
		{name: "bare go-smtp", note: "accept all, discard bodies: the ceiling of a go-smtp server",
			run: func(string) (result, error) { return runBare(self, source, messages, sessions, size, nil) }},
		{name: "bare go-smtp 1P", note: "the same with GOMAXPROCS=1",
			run: func(string) (result, error) { return runBare(self, source, messages, sessions, size, oneP) }},
		{name: "smtp-sink", note: "Postfix's C reference: one process, no journal, no disk",
			run: func(string) (result, error) { return runSink(source, sink, messages, sessions, size) }},
	}
	placement := "servers and smtp-source share every CPU"
	if serverCPU != nil {
		placement = "servers on CPU 0, smtp-source on CPU 1"
	}
	fmt.Printf("smtp-source -s %d -m %d -l %d, %d alternating rounds, %s (fake MTA: journal on in a state dir, greylist delay 0s + 1 reject rule)\n",
		sessions, messages, size, rounds, placement)
	rates := make([][]float64, len(servers))
	cpus := make([][]float64, len(servers))
	for r := 1; r <= rounds; r++ {
		for i, sv := range servers {
			prof := ""
			if r == rounds {
				prof = cpuprofile
			}
			res, err := sv.run(prof)
			if err != nil {
				return fmt.Errorf("round %d %s: %w", r, sv.name, err)
			}
			rates[i] = append(rates[i], res.rate)
			cpus[i] = append(cpus[i], res.cpu)
			line := fmt.Sprintf("round %d  %-16s %6.0f msgs/s  %4.0f µs CPU/msg", r, sv.name, res.rate, res.cpu)
			if sv.fake {
				line += fmt.Sprintf("  (VmHWM %.1f MiB)", res.rss)
			}
			fmt.Println(line)
		}
	}
	sinkRate := median(rates[len(servers)-1])
	fmt.Printf("medians (ratio to smtp-sink; target for a fake MTA >= 0.80):\n")
	for i, sv := range servers {
		m := median(rates[i])
		fmt.Printf("  %-16s %6.0f msgs/s  %.2f x  %4.0f µs CPU/msg  %s\n", sv.name, m, m/sinkRate, median(cpus[i]), sv.note)
	}
	if rssMessages > 0 {
		res, err := runFake(self, source, rssMessages, sessions, size, "", nil, nil)
		if err != nil {
			return fmt.Errorf("RSS run: %w", err)
		}
		fmt.Printf("RSS run  fake MTA (defaults) after %d journaled messages: VmHWM %.1f MiB (target <= 64), %.0f msgs/s\n", rssMessages, res.rss, res.rate)
	}
	return nil
}

// ensurePostfix finds smtp-source and smtp-sink, installing Debian's postfix when missing.
func ensurePostfix() (string, string, error) {
	find := func(name string) string {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
		if p := "/usr/sbin/" + name; fileExists(p) {
			return p
		}
		return ""
	}
	if find("smtp-source") == "" || find("smtp-sink") == "" {
		fmt.Println("installing postfix (for smtp-source and smtp-sink)...")
		sel := exec.Command("debconf-set-selections")
		sel.Stdin = strings.NewReader("postfix postfix/main_mailer_type select No configuration\n")
		sel.Stdout, sel.Stderr = os.Stdout, os.Stderr
		if err := sel.Run(); err != nil {
			return "", "", fmt.Errorf("debconf-set-selections: %w", err)
		}
		inst := exec.Command("apt-get", "install", "-y", "postfix")
		inst.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		inst.Stdout, inst.Stderr = os.Stdout, os.Stderr
		if err := inst.Run(); err != nil {
			return "", "", fmt.Errorf("apt-get install postfix: %w", err)
		}
	}
	src, snk := find("smtp-source"), find("smtp-sink")
	if src == "" || snk == "" {
		return "", "", errors.New("smtp-source/smtp-sink not found after installing postfix")
	}
	return src, snk, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// runFake starts the fake MTA process on a fresh state dir, passes the
// greylist triplet, times smtp-source against it and returns msgs/s and
// the process's peak RSS in MiB.
func runFake(self, source string, messages, sessions, size int, cpuprofile string, extra, env []string) (result, error) {
	dir, err := os.MkdirTemp("", "fakemta-bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	args := []string{"serve", "--listen", "127.0.0.1:0", "--state", filepath.Join(dir, "state")}
	if cpuprofile != "" {
		args = append(args, "--cpuprofile", cpuprofile)
	}
	cmd, addr, err := startServer(self, env, append(args, extra...)...)
	if err != nil {
		return result{}, err
	}
	defer stopServer(cmd)
	// Pass the triplet: the first try is greylisted, the retry (delay 0s) passes.
	if err := sendOnce(addr); err == nil {
		return result{}, errors.New("first message was not greylisted")
	}
	if err := sendOnce(addr); err != nil {
		return result{}, fmt.Errorf("retry after delay 0s: %w", err)
	}
	if err := sendReject(addr); err == nil {
		return result{}, errors.New("reject rule did not reject")
	}
	res, err := timeSource(source, addr, cmd.Process.Pid, messages, sessions, size)
	if err != nil {
		return result{}, err
	}
	res.rss, err = vmHWM(cmd.Process.Pid)
	return res, err
}

// runBare times smtp-source against the bare go-smtp server.
func runBare(self, source string, messages, sessions, size int, env []string) (result, error) {
	cmd, addr, err := startServer(self, env, "serve-bare", "--listen", "127.0.0.1:0")
	if err != nil {
		return result{}, err
	}
	defer stopServer(cmd)
	return timeSource(source, addr, cmd.Process.Pid, messages, sessions, size)
}

// serverCPU and sourceCPU prefix the servers' and smtp-source's command
// lines (-pin: taskset, so the two never compete for one core).
var serverCPU, sourceCPU []string

// pinCPUs sets serverCPU and sourceCPU to CPUs 0 and 1.
func pinCPUs() error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("needs 2 CPUs, this machine has %d", runtime.NumCPU())
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return err
	}
	serverCPU, sourceCPU = []string{taskset, "-c", "0"}, []string{taskset, "-c", "1"}
	return nil
}

// command builds prefix + name + args (taskset execs the program, so the
// process keeps its pid).
func command(prefix []string, name string, args ...string) *exec.Cmd {
	if len(prefix) == 0 {
		return exec.Command(name, args...)
	}
	return exec.Command(prefix[0], append(append(prefix[1:len(prefix):len(prefix)], name), args...)...)
}

// startServer runs this program in a server mode, with env added to its
// environment, and reads the "ADDR" line it prints.
func startServer(self string, env []string, args ...string) (*exec.Cmd, string, error) {
	cmd := command(serverCPU, self, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		stopServer(cmd)
		return nil, "", fmt.Errorf("%s said %q: %v", args[0], line, err)
	}
	return cmd, addr, nil
}

func stopServer(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

func runSink(source, sink string, messages, sessions, size int) (result, error) {
	port, err := freePort()
	if err != nil {
		return result{}, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	args := []string{"-c", addr, "1000"}
	if os.Geteuid() == 0 {
		args = append([]string{"-u", "nobody"}, args...) // smtp-sink refuses to run as root
	}
	cmd := command(serverCPU, sink, args...)
	cmd.Stdout, cmd.Stderr = nil, os.Stderr
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("smtp-sink not listening on %s: %w", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return timeSource(source, addr, cmd.Process.Pid, messages, sessions, size)
}

// timeSource runs smtp-source against addr and returns msgs/s and the CPU
// time the server process (pid) spent per message meanwhile.
func timeSource(source, addr string, pid, messages, sessions, size int) (result, error) {
	cmd := command(sourceCPU, source, "-s", strconv.Itoa(sessions), "-m", strconv.Itoa(messages), "-l", strconv.Itoa(size),
		"-f", sender, "-t", recipient, addr)
	cpu0, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(start)
	if err != nil {
		return result{}, fmt.Errorf("smtp-source: %v: %s", err, out)
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return result{}, err
	}
	return result{
		rate: float64(messages) / elapsed.Seconds(),
		cpu:  float64((cpu1 - cpu0).Microseconds()) / float64(messages),
	}, nil
}

// cpuTime reads a process's user + system time from /proc (clock ticks of
// 10 ms: Linux's USER_HZ is 100 everywhere Go runs).
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) start at ")".
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

func sendOnce(addr string) error { return sendPlain(addr, recipient) }

func sendReject(addr string) error { return sendPlain(addr, "reject@remote.test") }

// sendPlain delivers one small message without STARTTLS.
func sendPlain(addr, rcpt string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("bench.client.test"); err != nil {
		return err
	}
	if err := c.Mail(sender, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	w.Write([]byte("Subject: pass\r\n\r\ntriplet\r\n"))
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// vmHWM reads a process's peak resident set size in MiB.
func vmHWM(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			return float64(kb) / 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}
