package fakemta

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisServer is a redis-server child on a free loopback port.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts `redis-server` on 127.0.0.1 with no persistence. Without
// the binary the test is skipped, or fails under CI=true (.ci/run installs it).
func startRedis(t testing.TB) *redisServer {
	t.Helper()
	slow(t, "starts a real redis-server")
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis-server not found (CI=true: .ci/run installs the Debian package redis-server): %v", err)
		}
		t.Skipf("redis-server not found (apt-get install redis-server): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--daemonize", "no", "--loglevel", "warning")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &redisServer{addr: fmt.Sprintf("127.0.0.1:%d", port), cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(r.stop)
	c := redis.NewClient(&redis.Options{Addr: r.addr, DisableIdentity: true})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		select {
		case <-r.done:
			t.Fatalf("redis-server exited: %v", cmd.ProcessState)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("redis-server does not answer PING")
		}
	}
	return r
}

// stop kills the child and waits for it.
func (r *redisServer) stop() {
	r.cmd.Process.Kill()
	<-r.done
}

func (r *redisServer) url(db int) string { return fmt.Sprintf("redis://%s/%d", r.addr, db) }

// TestGreylistStoreRedis runs the store suite (TestGreylistStoreMemory's)
// against a real Redis, one database per case.
func TestGreylistStoreRedis(t *testing.T) {
	r := startRedis(t)
	for i, tc := range greyStoreSuite {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, func(c *Config) { c.GreylistStore = r.url(i % 16) })
		})
	}
}

// TestRedisStoreSharedByTwoServers: two fake MTAs (one per MX machine in
// staging) share one Redis greylist: greylisted by one, passed at the other.
func TestRedisStoreSharedByTwoServers(t *testing.T) {
	r := startRedis(t)
	clock := newClock()
	mod := func(c *Config) { c.Now, c.GreylistStore = clock.Now, r.url(0) }
	a := startServer(t, "greylist: {flavor: postgrey}\n", mod)
	b := startServer(t, "greylist: {flavor: postgrey}\n", mod)
	if code, err := deliver(t, a.Addr(), flavorBase); code != 450 {
		t.Fatalf("at a: %d %v", code, err)
	}
	clock.Add(299 * time.Second)
	if code, err := deliver(t, b.Addr(), flavorBase); code != 450 {
		t.Fatalf("at b too early: %d %v", code, err)
	}
	clock.Add(time.Second)
	if code, err := deliver(t, b.Addr(), flavorBase); code != 0 {
		t.Fatalf("at b after the delay: %d %v", code, err)
	}
	if es := a.Greylist(); len(es) != 1 || es[0].Passes != 1 {
		t.Fatalf("a sees b's pass: %+v", es)
	}
}

// TestRedisStoreAtomicUnderConcurrentSessions: many sessions retrying one
// triplet at once; every pass is counted, and the client is counted once
// toward its auto-whitelist.
func TestRedisStoreAtomicUnderConcurrentSessions(t *testing.T) {
	r := startRedis(t)
	clock := newClock()
	s := startServer(t, "greylist: {delay: 300s, auto_whitelist_after: 2}\n", func(c *Config) { c.Now, c.GreylistStore = clock.Now, r.url(0) })
	if code, _ := deliver(t, s.Addr(), flavorBase); code != 451 {
		t.Fatalf("first: %d", code)
	}
	clock.Add(300 * time.Second)
	const n = 16
	var wg sync.WaitGroup
	codes := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _ := deliver(t, s.Addr(), flavorBase)
			codes <- code
		}()
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if c != 0 {
			t.Fatalf("a concurrent retry got %d", c)
		}
	}
	if es := s.Greylist(); len(es) != 1 || es[0].Passes != n {
		t.Fatalf("entries %+v, want one record with %d passes", es, n)
	}
	// One counted pass: a new recipient from the /24 is still greylisted.
	if code, _ := deliver(t, s.Addr(), msgSpec{sender: "a@client.test", rcpts: []string{"new@remote.test"}, msgID: "x@y", body: "b\r\n"}); code != 451 {
		t.Fatalf("after one counted pass: %d, want 451", code)
	}
}

// TestRedisStoreSurvivesRestart: the state is in Redis, not the journal:
// a fake MTA without --state that restarts keeps it.
func TestRedisStoreSurvivesRestart(t *testing.T) {
	r := startRedis(t)
	clock := newClock()
	mod := func(c *Config) { c.Now, c.GreylistStore = clock.Now, r.url(0) }
	s := startServer(t, "greylist: {}\n", mod)
	if code, _ := deliver(t, s.Addr(), flavorBase); code != 451 {
		t.Fatalf("first: %d", code)
	}
	s.Close()
	clock.Add(300 * time.Second)
	s = startServer(t, "greylist: {}\n", mod)
	if code, err := deliver(t, s.Addr(), flavorBase); code != 0 {
		t.Fatalf("after restart: %d %v", code, err)
	}
}

// TestRedisOutageAnswers451AndIsJournaled: with Redis gone, a recipient
// gets 451 4.3.0 (never 250 without a record) and the failure is journaled.
func TestRedisOutageAnswers451AndIsJournaled(t *testing.T) {
	r := startRedis(t)
	s, clock := greyServerWith(t, func(c *Config) { c.GreylistStore = r.url(0) }, "greylist: {}\n")
	runMailSteps(t, s, clock, flavorBase, []mailStep{{want: 451}, {advance: 300 * time.Second, want: 0}})
	r.stop()
	runMailSteps(t, s, clock, flavorBase, []mailStep{{want: 451, enh: "4.3.0", text: "Greylist store unavailable"}})
	if _, err := s.GreylistEntries(); err == nil {
		t.Fatal("GreylistEntries without Redis: no error")
	}
	waitJournal(t, s, "the store failure", func(e Event) bool {
		return e.Kind == EventControl && strings.HasPrefix(e.Note, "greylist-store: ")
	})
	waitJournal(t, s, "the recipient's outcome", func(e Event) bool {
		return e.Kind == EventTransaction && len(e.Transaction.Rcpts) == 1 && e.Transaction.Rcpts[0].Greylist == greyError &&
			e.Transaction.Rcpts[0].Reply.Code == 451
	})
}

func TestRedisStoreBadURLAndUnreachable(t *testing.T) {
	slow(t, "waits out a refused connection to the greylist store")
	if _, err := New(Config{GreylistStore: "http://127.0.0.1:1/0"}); err == nil {
		t.Fatal("http:// accepted as a greylist store")
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	if _, err := New(Config{GreylistStore: "redis://" + addr + "/0"}); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("unreachable store: %v", err)
	}
}

// TestCLITwoProcessesShareARedisGreylist: two `greyharness fakemta`
// processes with --greylist-store on one Redis (two MX machines in
// staging): a triplet greylisted by one passes at the other after the delay.
func TestCLITwoProcessesShareARedisGreylist(t *testing.T) {
	r := startRedis(t)
	pol := t.TempDir() + "/policy.yaml"
	if err := os.WriteFile(pol, []byte("greylist: {flavor: postgrey, delay: 1s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel) // after the processes' cleanups: they stop on SIGINT
	var addrs []string
	for _, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		cmd, lines, stderr := startCLI(t, ctx, nil, "--listen", ip+":0", "--policy", pol, "--greylist-store", r.url(3), "--state", t.TempDir())
		addrs = append(addrs, nextLine(t, ctx, lines, "fakemta: listening on "))
		t.Cleanup(func() {
			cmd.Process.Signal(os.Interrupt)
			if err := cmd.Wait(); err != nil {
				t.Errorf("fakemta exit: %v, stderr %s", err, stderr.String())
			}
		})
		go func() {
			for range lines {
			}
		}()
	}
	if code, err := deliver(t, addrs[0], flavorBase); code != 450 {
		t.Fatalf("first, at the first process: %d %v", code, err)
	}
	// Wait for the delay to end by the record's own clock, then the
	// first try at the second process passes: it knows the triplet.
	c := redis.NewClient(&redis.Options{Addr: r.addr, DB: 3, DisableIdentity: true})
	defer c.Close()
	keys, err := c.Keys(ctx, redisPrefix+"r:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("records in Redis: %v %v", keys, err)
	}
	first, err := c.HGet(ctx, keys[0], "first").Int64()
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-time.After(time.Until(time.UnixMicro(first).Add(time.Second))):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	if code, err := deliver(t, addrs[1], flavorBase); code != 0 {
		t.Fatalf("first try at the second process after the delay: %d %v", code, err)
	}
}

// TestRedisOutageAtEOD: at eod the body is received and journaled, the
// reply is 451 4.3.0 and the message is not accepted.
func TestRedisOutageAtEOD(t *testing.T) {
	r := startRedis(t)
	s, clock := greyServerWith(t, func(c *Config) { c.GreylistStore = r.url(0) }, "greylist: {flavor: rspamd}\n")
	r.stop()
	runMailSteps(t, s, clock, flavorBase, []mailStep{{want: 451, enh: "4.3.0"}})
	msgs, err := s.Journal().Messages()
	if err != nil || len(msgs) != 1 || msgs[0].Accepted {
		t.Fatalf("messages %+v %v: want one, not accepted", msgs, err)
	}
}

// BenchmarkGreylistStore: the cost per message of the greylist stores, as
// one store check (a passed triplet) and as a whole delivery over SMTP.
func BenchmarkGreylistStore(b *testing.B) {
	r := startRedis(b)
	gl := flavorGreylist(FlavorGeneric)
	for _, store := range []string{"memory", "redis"} {
		mod := func(c *Config) {}
		if store == "redis" {
			mod = func(c *Config) { c.GreylistStore = r.url(5) }
		}
		b.Run("check/"+store, func(b *testing.B) {
			cfg := Config{Logf: b.Logf}
			mod(&cfg)
			s, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			k := gl.buildKey(greyInput{client: "127.0.0.1:1234", sender: "a@client.test", rcpt: "b@remote.test"})
			t0 := time.Now()
			ctx := context.Background()
			s.store.check(ctx, gl, k, t0)
			b.ResetTimer()
			for b.Loop() {
				if o, _, err := s.store.check(ctx, gl, k, t0.Add(time.Hour)); err != nil || o != greyPassed {
					b.Fatalf("%s %v", o, err)
				}
			}
		})
		b.Run("deliver/"+store, func(b *testing.B) {
			cfg := Config{Policy: parseTestPolicy(b, "greylist: {delay: 0s, auto_whitelist_after: 0}\n"), Logf: b.Logf}
			mod(&cfg)
			c := benchClient(b, cfg)
			body := testMsg + strings.Repeat("x", 1024) + "\r\n"
			c.SendMail("a@client.test", []string{"b@remote.test"}, strings.NewReader(body)) // deferred: starts the clock
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := c.SendMail("a@client.test", []string{"b@remote.test"}, strings.NewReader(body)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestRedisStoreTenants: with --greylist-store, a tenant's greylist lives
// in Redis too, under its own keys: two fake MTAs share each tenant's
// state (greylisted at one, passed at the other), two tenants with the
// same triplet (labels stripped) stay apart, and wiping one tenant leaves
// the other and the server's own records alone.
func TestRedisStoreTenants(t *testing.T) {
	r := startRedis(t)
	clock := newClock()
	mod := func(c *Config) { c.Now, c.GreylistStore = clock.Now, r.url(2) }
	a := startServer(t, "greylist: {flavor: postgrey}\n", mod)
	b := startServer(t, "greylist: {flavor: postgrey}\n", mod)
	gl := parseTestPolicy(t, "greylist: {flavor: postgrey}\n")
	for _, s := range []*Server{a, b} {
		for _, n := range []string{"ta", "tb"} {
			if err := s.SetTenant(n, gl, TenantOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if code, err := deliver(t, a.Addr(), flavorBase); code != 450 {
		t.Fatalf("server's own triplet at a: %d %v", code, err)
	}
	if code, err := deliver(t, a.Addr(), tenantMsg("ta", "b@remote.test")); code != 450 {
		t.Fatalf("tenant ta at a: %d %v", code, err)
	}
	clock.Add(300 * time.Second)
	// tb's triplet is the same once the labels are stripped: a fresh one.
	if code, err := deliver(t, b.Addr(), tenantMsg("tb", "b@remote.test")); code != 450 {
		t.Fatalf("tenant tb at b, never seen: %d %v (want 450: tenants apart)", code, err)
	}
	if code, err := deliver(t, b.Addr(), tenantMsg("ta", "b@remote.test")); code != 0 {
		t.Fatalf("tenant ta at b after the delay: %d %v (want passed: shared through Redis)", code, err)
	}
	if es, err := a.TenantGreylist("ta"); err != nil || len(es) != 1 || es[0].Passes != 1 {
		t.Fatalf("a sees b's pass of ta: %+v %v", es, err)
	}
	if err := b.WipeTenant("ta"); err != nil {
		t.Fatal(err)
	}
	if es, _ := a.TenantGreylist("ta"); len(es) != 0 {
		t.Errorf("ta wiped at b, a still lists %+v", es)
	}
	if es, _ := a.TenantGreylist("tb"); len(es) != 1 {
		t.Errorf("wiping ta touched tb: %+v", es)
	}
	if es := a.Greylist(); len(es) != 1 {
		t.Errorf("wiping ta touched the server's own records, or they list a tenant's: %+v", es)
	}
}
