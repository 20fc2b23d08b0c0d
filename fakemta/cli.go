package fakemta

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/greyharness/greyharness/internal/inputfile"
	"github.com/redis/go-redis/v9"
)

// DefaultListen is where `greyharness fakemta` listens without --listen.
const DefaultListen = "127.0.0.1:2526"

// APITokenEnv names the environment variable that supplies the API token
// when --api-token is not given (it keeps the token out of ps output).
const APITokenEnv = "GREYHARNESS_API_TOKEN"

// Exit codes of Main.
const (
	ExitOK     = 0
	ExitError  = 1 // a runtime failure: a port in use, the journal unwritable
	ExitConfig = 2 // bad flags, a bad policy file, bad TLS files
)

// Main runs `greyharness fakemta [flags]` (args exclude the program and
// subcommand names) until SIGINT or SIGTERM, and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second signal kills at once
	}()
	return run(ctx, args, os.Getenv, stdout, stderr)
}

// listFlag is a repeatable string flag.
type listFlag struct {
	vals []string
	def  []string
}

func (l *listFlag) String() string {
	if l == nil {
		return ""
	}
	return strings.Join(l.get(), ", ")
}

func (l *listFlag) Set(v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("empty address")
	}
	l.vals = append(l.vals, v)
	return nil
}

func (l *listFlag) get() []string {
	if len(l.vals) == 0 {
		return l.def
	}
	return l.vals
}

// sizeFlag is a byte count: 1048576, 1024K, 32M, 1G (binary units; KiB,
// MiB, GiB and a trailing B are accepted too).
type sizeFlag int64

func (s *sizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeFlag) Set(v string) error {
	t := strings.ToUpper(strings.TrimSpace(v))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return fmt.Errorf("want a positive size like 1048576, 512K or 32M, got %q", v)
	}
	*s = sizeFlag(n * mult)
	return nil
}

// cliOptions are the parsed flags.
type cliOptions struct {
	listen      listFlag
	mxState     string
	greyStore   string
	policy      string
	state       string
	journalSync string
	wipeState   bool
	keepBodies  string
	api         string
	apiToken    string
	tlsCert     string
	tlsKey      string
	tlsSelf     bool
	domain      string
	maxSize     sizeFlag
	maxLine     int
	maxRcpts    int
	readTimeout time.Duration
	writeTime   time.Duration
	quiet       bool
}

func newFlagSet(o *cliOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("greyharness fakemta", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	o.listen.def = []string{DefaultListen}
	o.maxSize = 32 << 20
	fs.Var(&o.listen, "listen", "SMTP listen `address` host:port, repeatable (port 0 picks a free one)")
	fs.StringVar(&o.mxState, "mx-state", "", "`split` (each --listen address is an MX host with a greylist of its own) or shared (one greylist); default: the policy's mx.state, else shared")
	fs.StringVar(&o.greyStore, "greylist-store", "", "keep the greylist in Redis at `redis://HOST:PORT/DB`, shared by every fake MTA using it and kept across restarts (default: in memory, rebuilt from the journal)")
	fs.StringVar(&o.policy, "policy", "", "policy YAML `file` (default: accept everything)")
	fs.StringVar(&o.state, "state", "", "state `dir`: the journal (journal.jsonl) and with it the greylist memory survive restarts (default: a scratch folder, removed on exit)")
	fs.StringVar(&o.journalSync, "journal-sync", "message", "when the journal in --state is fsync'd: `message` (before every 250 to a final dot) or an interval like 100ms (written before the 250, fsync'd within the interval: faster, and a machine crash may lose that interval)")
	fs.BoolVar(&o.wipeState, "wipe-state", false, "start with no greylist memory (the journal is kept: it is history)")
	fs.StringVar(&o.keepBodies, "keep-bodies", "", "write every received message to `dir`/ID.eml")
	fs.StringVar(&o.api, "api", "", "serve the control API on `address` host:port, e.g. 127.0.0.1:8025 (default: off)")
	fs.StringVar(&o.apiToken, "api-token", "", "bearer `token` the API requires (default: $"+APITokenEnv+"); required for a non-loopback --api")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file` for STARTTLS (with --tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` for STARTTLS (with --tls-cert)")
	fs.BoolVar(&o.tlsSelf, "tls-self-signed", false, "offer STARTTLS with a fresh self-signed certificate")
	fs.StringVar(&o.domain, "domain", "fakemta.greyharness.test", "host `name` in the greeting and EHLO reply")
	fs.Var(&o.maxSize, "max-message-size", "largest message accepted, in `bytes` (512K, 32M, 1G also work)")
	fs.IntVar(&o.maxLine, "max-line-length", 2000, "longest command or body line in `bytes`")
	fs.IntVar(&o.maxRcpts, "max-recipients", 1000, "most recipients per transaction")
	fs.DurationVar(&o.readTimeout, "read-timeout", 5*time.Minute, "idle time before a client is cut off")
	fs.DurationVar(&o.writeTime, "write-timeout", time.Minute, "time allowed to write one reply")
	fs.BoolVar(&o.quiet, "quiet", false, "print nothing on stdout (errors still go to stderr)")
	return fs
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: greyharness fakemta [flags]\n\n"+
		"Runs the fake remote MTA: answers SMTP by the policy, records everything in\n"+
		"the journal, and serves the control API. Stops on SIGINT or SIGTERM.\n\nflags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// configError is a bad-input error (exit 2).
type configError struct{ error }

func (e configError) Unwrap() error { return e.error }

// options turns parsed flags into a Config; errors are configErrors.
func (o *cliOptions) config(getenv func(string) string) (Config, string, error) {
	cfg := Config{
		Listen: o.listen.get(), MXState: o.mxState, GreylistStore: o.greyStore, StateDir: o.state, WipeState: o.wipeState, KeepBodies: o.keepBodies,
		Domain: o.domain, MaxMessageBytes: int64(o.maxSize), MaxLineLength: o.maxLine, MaxRecipients: o.maxRcpts,
		ReadTimeout: o.readTimeout, WriteTimeout: o.writeTime,
	}
	bad := func(format string, args ...any) (Config, string, error) {
		return Config{}, "", configError{fmt.Errorf(format, args...)}
	}
	for _, addr := range cfg.Listen {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return bad("--listen %q: want host:port (%v)", addr, err)
		}
	}
	switch {
	case o.greyStore != "" && !validStoreURL(o.greyStore):
		return bad("--greylist-store: want redis://HOST:PORT/DB, got %q", o.greyStore)
	case o.mxState != "" && o.mxState != MXSplit && o.mxState != MXShared:
		return bad("--mx-state: want split or shared, got %q", o.mxState)
	case o.maxLine <= 0:
		return bad("--max-line-length must be positive, got %d", o.maxLine)
	case o.maxRcpts <= 0:
		return bad("--max-recipients must be positive, got %d", o.maxRcpts)
	case o.readTimeout <= 0:
		return bad("--read-timeout must be positive, got %s", o.readTimeout)
	case o.writeTime <= 0:
		return bad("--write-timeout must be positive, got %s", o.writeTime)
	case strings.TrimSpace(o.domain) == "" || strings.ContainsAny(o.domain, " \t\r\n"):
		return bad("--domain must be a host name, got %q", o.domain)
	case o.tlsSelf && (o.tlsCert != "" || o.tlsKey != ""):
		return bad("--tls-self-signed and --tls-cert/--tls-key exclude each other")
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return bad("--tls-cert and --tls-key go together")
	}
	if o.keepBodies != "" {
		// Checked now: a folder that cannot hold bodies would refuse
		// every message with 451 later.
		if err := os.MkdirAll(o.keepBodies, 0o755); err != nil {
			return bad("--keep-bodies %s: %v", o.keepBodies, err)
		}
		f, err := os.CreateTemp(o.keepBodies, ".probe-*")
		if err != nil {
			return bad("--keep-bodies %s: cannot write there: %v", o.keepBodies, err)
		}
		f.Close()
		os.Remove(f.Name())
	}
	if o.journalSync != "message" {
		d, err := time.ParseDuration(o.journalSync)
		switch {
		case err != nil || d <= 0:
			return bad("--journal-sync: want \"message\" or a positive interval like 100ms, got %q", o.journalSync)
		case o.state == "":
			return bad("--journal-sync %s needs --state (without it the journal is a scratch file, never fsync'd)", o.journalSync)
		}
		cfg.JournalSync = d
	}
	var err error
	switch {
	case o.tlsSelf:
		cfg.TLS, err = SelfSignedTLS(o.domain)
	case o.tlsCert != "":
		cfg.TLS, err = LoadTLS(o.tlsCert, o.tlsKey)
	}
	if err != nil {
		return bad("tls: %v", err)
	}
	if o.policy != "" {
		// A policy file has the API's bound: the same document either way.
		data, err := inputfile.Read(o.policy, MaxAPIBodyBytes)
		if err != nil {
			return bad("--policy: %v", err)
		}
		if cfg.Policy, err = ParsePolicy(o.policy, data); err != nil {
			return Config{}, "", configError{err}
		}
		if m := cfg.Policy.MX; m != nil && len(m.Hosts) > 0 && len(o.listen.vals) == 0 {
			cfg.Listen = nil // the MX hosts replace the default address
		}
	}
	token, from := o.apiToken, "--api-token"
	if token == "" {
		token, from = getenv(APITokenEnv), "$"+APITokenEnv
	}
	switch {
	case token != "" && strings.TrimSpace(token) == "":
		return bad("%s is blank: no request could present it", from)
	case token != strings.TrimSpace(token):
		// The API trims the Authorization header's credentials.
		return bad("%s has white space around it: no request could present it", from)
	}
	if o.api != "" {
		host, _, err := net.SplitHostPort(o.api)
		if err != nil {
			return bad("--api %q: want host:port (%v)", o.api, err)
		}
		if token == "" && !loopbackHost(host) {
			return bad("--api %s is not a loopback address: give a token with --api-token or $%s", o.api, APITokenEnv)
		}
	}
	return cfg, token, nil
}

// validStoreURL reports whether u is a Redis URL go-redis accepts.
func validStoreURL(u string) bool {
	_, err := redis.ParseURL(u)
	return err == nil && strings.HasPrefix(u, "redis://")
}

// loopbackHost reports whether host is a loopback IP or "localhost".
// Other names are checked again once bound.
func loopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// run is Main with the signal context, environment and outputs injected.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var o cliOptions
	fs := newFlagSet(&o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return ExitOK
		}
		fmt.Fprintf(stderr, "fakemta: %v\nrun 'greyharness fakemta -h' for the flags\n", err)
		return ExitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "fakemta: unexpected argument %q (flags only)\nrun 'greyharness fakemta -h' for the flags\n", fs.Arg(0))
		return ExitConfig
	}
	cfg, token, err := o.config(getenv)
	if err != nil {
		var pe *PositionError
		if errors.As(err, &pe) {
			// Policy errors: file:line:col: message, one per line.
			fmt.Fprintln(stderr, err)
		} else {
			fmt.Fprintf(stderr, "fakemta: %v\n", err)
		}
		return ExitConfig
	}
	logPrefix := "fakemta: "
	cfg.Logf = func(format string, args ...any) {
		fmt.Fprintf(stderr, logPrefix+strings.TrimRight(format, "\n")+"\n", args...)
	}
	say := func(format string, args ...any) {
		if !o.quiet {
			fmt.Fprintf(stdout, "fakemta: "+format+"\n", args...)
		}
	}

	if cfg.StateDir == "" {
		// Without --state the journal still goes to a file, a scratch one:
		// memory stays flat however long the run, and the API reads back
		// the whole history from it.
		dir, err := os.MkdirTemp("", "greyharness-fakemta-scratch-")
		if err != nil {
			fmt.Fprintf(stderr, "fakemta: scratch journal: %v\n", err)
			return ExitError
		}
		cfg.StateDir, cfg.scratch = dir, true
	}
	srv, err := New(cfg)
	if err != nil {
		if cfg.scratch {
			os.RemoveAll(cfg.StateDir)
		}
		fmt.Fprintf(stderr, "fakemta: %v\n", err)
		return ExitError
	}
	if err := srv.Start(); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		srv.Close()
		return ExitError
	}
	var hs *http.Server
	var apiL net.Listener
	if o.api != "" {
		l, err := net.Listen("tcp", o.api)
		if err != nil {
			fmt.Fprintf(stderr, "fakemta: api listen %s: %v\n", o.api, err)
			srv.Close()
			return ExitError
		}
		if tcp, ok := l.Addr().(*net.TCPAddr); token == "" && (!ok || !tcp.IP.IsLoopback()) {
			l.Close()
			srv.Close()
			fmt.Fprintf(stderr, "fakemta: --api %s is bound to %s, not a loopback address: give a token with --api-token or $%s\n", o.api, l.Addr(), APITokenEnv)
			return ExitConfig
		}
		hs, apiL = srv.serveAPIOn(l, token), l
	}
	for _, a := range srv.Addrs() {
		say("listening on %s", a)
	}
	if hs != nil {
		say("api listening on %s", apiL.Addr())
	}

	<-ctx.Done()
	say("stopping")
	code := ExitOK
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := hs.Shutdown(sctx); err != nil {
			hs.Close()
		}
		cancel()
	}
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "fakemta: closing: %v\n", err)
		code = ExitError
	}
	if !cfg.scratch {
		say("stopped; journal in %s", filepath.Join(cfg.StateDir, journalFile))
	} else {
		say("stopped")
	}
	return code
}
