package samplerelay

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/greyharness/greyharness/fakemta/dsn"
	"github.com/greyharness/greyharness/harness/queue"
)

// ---- helpers ----

type testRelay struct {
	addr   string
	cancel context.CancelFunc
	done   chan error
}

func startRelay(t *testing.T, cfg Config) *testRelay {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Logf == nil {
		cfg.Logf = func(f string, a ...any) { t.Logf("relay: "+f, a...) }
	}
	ready := make(chan net.Addr, 1)
	cfg.Ready = func(a net.Addr) { ready <- a }
	ctx, cancel := context.WithCancel(context.Background())
	tr := &testRelay{cancel: cancel, done: make(chan error, 1)}
	go func() { tr.done <- Run(ctx, cfg) }()
	select {
	case a := <-ready:
		tr.addr = a.String()
	case err := <-tr.done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("relay not ready within 5s")
	}
	t.Cleanup(tr.stopNoFail)
	return tr
}

func (tr *testRelay) stopNoFail() {
	tr.cancel()
	select {
	case <-tr.done:
	case <-time.After(10 * time.Second):
	}
}

func (tr *testRelay) stop(t *testing.T) {
	t.Helper()
	tr.cancel()
	select {
	case err := <-tr.done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		tr.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("relay did not stop within 10s")
	}
}

var msgSeq atomic.Int64

type sentMsg struct{ MessageID, HarnessID string }

func submit(t *testing.T, addr, from string, to ...string) sentMsg {
	t.Helper()
	n := msgSeq.Add(1)
	m := sentMsg{
		MessageID: fmt.Sprintf("%d.%d@harness.greyharness.test", time.Now().UnixNano(), n),
		HarnessID: fmt.Sprintf("gh-%s-%d", t.Name(), n),
	}
	body := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: test %d\r\nDate: %s\r\nMessage-ID: <%s>\r\nX-Greyharness-Id: %s\r\n\r\nHello %d.\r\n.leading dot line\r\n",
		from, strings.Join(to, ">, <"), n, time.Now().Format(time.RFC1123Z), m.MessageID, m.HarnessID, n)
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatalf("dial relay: %v", err)
	}
	defer c.Close()
	if err := c.Hello("harness.greyharness.test"); err != nil {
		t.Fatalf("EHLO: %v", err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL: %v", err)
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatalf("RCPT %s: %v", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatalf("DATA: %v", err)
	}
	if _, err := w.Write([]byte(body)); err != nil {
		t.Fatal(err)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatalf("final dot: %v", err)
	}
	if !strings.Contains(resp.StatusText, "queued") {
		t.Fatalf("final dot reply %q", resp.StatusText)
	}
	_ = c.Quit()
	return m
}

func waitDelivery(t *testing.T, ch <-chan delivery, within time.Duration, what string, match func(delivery) bool) delivery {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case d := <-ch:
			if match == nil || match(d) {
				return d
			}
			t.Logf("ignoring delivery from=<%s> to=%v", d.From, d.To)
		case <-deadline:
			t.Fatalf("no %s within %s", what, within)
		}
	}
}

// waitDeliveryOf waits for the next delivery and checks it is message m.
func waitDeliveryOf(t *testing.T, s *sink, m sentMsg, what, notIt string) delivery {
	t.Helper()
	d := waitDelivery(t, s.deliveries, 3*time.Second, what, nil)
	if !bytes.Contains(d.Data, []byte(m.MessageID)) {
		t.Fatal(notIt)
	}
	return d
}

func expectNoDelivery(t *testing.T, ch <-chan delivery, window time.Duration, what string, match func(delivery) bool) {
	t.Helper()
	deadline := time.After(window)
	for {
		select {
		case d := <-ch:
			if match == nil || match(d) {
				t.Fatalf("unexpected %s: from=<%s> to=%v\n%s", what, d.From, d.To, d.Data)
			}
		case <-deadline:
			return
		}
	}
}

func waitRcpt(t *testing.T, ch <-chan rcptEvent, within time.Duration, match func(rcptEvent) bool) rcptEvent {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case e := <-ch:
			if match(e) {
				return e
			}
		case <-deadline:
			t.Fatalf("no matching RCPT within %s", within)
		}
	}
}

func expectNoRcpt(t *testing.T, ch <-chan rcptEvent, window time.Duration, what string) {
	t.Helper()
	select {
	case e := <-ch:
		t.Fatalf("unexpected %s: RCPT <%s> from <%s> (reply %d)", what, e.To, e.From, e.Code)
	case <-time.After(window):
	}
}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listing runs the `queue` subcommand and decodes its JSON.
func listing(t *testing.T, dir string) []SampleEntry {
	t.Helper()
	var out, errb bytes.Buffer
	if code := Main([]string{"queue", "--queue", dir}, &out, &errb); code != 0 {
		t.Fatalf("queue exit %d: %s", code, errb.String())
	}
	var list []SampleEntry
	if err := json.Unmarshal(out.Bytes(), &list); err != nil {
		t.Fatalf("queue output %q: %v", out.String(), err)
	}
	// The harness's own parser must accept it too.
	if parsed, err := queue.ParseSample(out.Bytes()); err != nil || len(parsed) != len(list) {
		t.Fatalf("queue.ParseSample(%q) = %d entries, %v", out.String(), len(parsed), err)
	}
	return list
}

func findEntry(list []SampleEntry, m sentMsg) *SampleEntry {
	for i := range list {
		if list[i].MessageID == m.MessageID {
			return &list[i]
		}
	}
	return nil
}

func filesOnDisk(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "messages"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".json") {
			n++
		}
	}
	return n
}

// greylistedOnce is the setup most bug tests share: a sink that greylists
// each recipient's first attempt, a queue folder, and a fast config with
// bugs switched on.
func greylistedOnce(t *testing.T, bugs ...Bug) (*sink, string, Config) {
	s := newSink(t)
	s.script(greylist(1), nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.Bugs = bugs
	return s, dir, cfg
}

// submitDeferred submits alice@sender.test -> bob@rcpt.test through r and
// waits for the sink's 451.
func submitDeferred(t *testing.T, s *sink, r *testRelay) sentMsg {
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	return m
}

func fastCfg(s *sink, dir string) Config {
	return Config{
		NextHop:       []string{s.addr},
		QueueDir:      dir,
		MinBackoff:    200 * time.Millisecond,
		MaxBackoff:    400 * time.Millisecond,
		QueueLifetime: 20 * time.Second,
		DelayWarning:  -1,
	}
}

func isDSNTo(sender string) func(delivery) bool {
	return func(d delivery) bool { return d.From == "" && len(d.To) == 1 && d.To[0] == sender }
}

func toRcpt(addr string) func(delivery) bool {
	return func(d delivery) bool { return d.From != "" && contains(d.To, addr) }
}

// checkDSN asserts a DSN's action, status and that it names the original.
func checkDSN(t *testing.T, d delivery, action, status, rcpt string, orig sentMsg, wantHeaders bool) {
	t.Helper()
	body := string(d.Data)
	if !strings.Contains(body, "multipart/report") || !strings.Contains(body, "delivery-status") {
		t.Fatalf("not a multipart/report DSN:\n%s", body)
	}
	for _, want := range []string{"Action: " + action, "Status: " + status, rcpt} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, body)
		}
	}
	if action == "failed" && !strings.Contains(body, "Diagnostic-Code: smtp; 451 "+status) {
		t.Errorf("DSN lacks the diagnostic code from the last reply:\n%s", body)
	}
	if got := strings.Contains(body, orig.MessageID) && strings.Contains(body, orig.HarnessID); got != wantHeaders {
		t.Errorf("DSN names the original message: %v, want %v:\n%s", got, wantHeaders, body)
	}
	rep, err := dsn.Parse(bytes.NewReader(d.Data))
	if err != nil {
		t.Logf("dsn.Parse not usable yet (%v); checked the raw DSN only", err)
		return
	}
	if len(rep.Recipients) != 1 || rep.Recipients[0].Action != action || rep.Recipients[0].Status != status || rep.Recipients[0].FinalRecipient != rcpt {
		t.Errorf("parsed DSN recipients %+v, want one %s/%s for %s", rep.Recipients, action, status, rcpt)
	}
	if wantHeaders && (rep.OriginalMessageID != orig.MessageID || rep.OriginalHarnessID != orig.HarnessID) {
		t.Errorf("parsed DSN names %q/%q, want %q/%q", rep.OriginalMessageID, rep.OriginalHarnessID, orig.MessageID, orig.HarnessID)
	}
}

// ---- behaviour ----

func TestNormalDelivery(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	dir := t.TempDir()
	r := startRelay(t, fastCfg(s, dir))
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	d := waitDelivery(t, s.deliveries, 3*time.Second, "delivery", nil)
	if d.From != "alice@sender.test" || len(d.To) != 1 || d.To[0] != "bob@rcpt.test" {
		t.Fatalf("envelope from=<%s> to=%v", d.From, d.To)
	}
	body := string(d.Data)
	for _, want := range []string{"Message-ID: <" + m.MessageID + ">", "X-Greyharness-Id: " + m.HarnessID, "\r\n.leading dot line\r\n", "Received: "} {
		if !strings.Contains(body, want) {
			t.Errorf("relayed message lacks %q:\n%s", want, body)
		}
	}
	eventually(t, 2*time.Second, "queue empty and files removed", func() bool {
		return len(listing(t, dir)) == 0 && filesOnDisk(t, dir) == 0
	})
	expectNoDelivery(t, s.deliveries, 500*time.Millisecond, "second delivery", nil)
}

func TestGreylistDeferralThenRetry(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(greylist(2), nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.MinBackoff, cfg.MaxBackoff = 500*time.Millisecond, 800*time.Millisecond
	r := startRelay(t, cfg)
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")

	e1 := waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	// While deferred it is listed, with the reply and a future next attempt.
	eventually(t, 2*time.Second, "listed as deferred", func() bool {
		e := findEntry(listing(t, dir), m)
		return e != nil && strings.HasPrefix(e.Reason, "451 4.7.1") && e.NextAttempt.After(e.Arrival) &&
			e.HarnessID == m.HarnessID && e.Sender == "alice@sender.test" && len(e.Recipients) == 1
	})
	e2 := waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return true })
	e3 := waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return true })
	if e2.Code != 451 || e3.Code != 250 {
		t.Fatalf("replies %d, %d; want 451, 250", e2.Code, e3.Code)
	}
	const slack = 60 * time.Millisecond
	if gap := e2.At.Sub(e1.At); gap < cfg.MinBackoff-slack {
		t.Errorf("first retry after %s, want >= %s", gap, cfg.MinBackoff)
	}
	if gap := e3.At.Sub(e2.At); gap < cfg.MaxBackoff-slack {
		t.Errorf("second retry after %s, want >= %s (backoff doubles, capped)", gap, cfg.MaxBackoff)
	}
	waitDelivery(t, s.deliveries, 2*time.Second, "delivery after greylisting", toRcpt("bob@rcpt.test"))
	eventually(t, 2*time.Second, "queue empty", func() bool { return len(listing(t, dir)) == 0 })
}

func TestPartialDeferralRetriesOnlyDeferred(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(func(from, to string, n int) *smtp.SMTPError {
		if to == "b@rcpt.test" {
			return greylist(1)(from, to, n)
		}
		return nil
	}, nil)
	r := startRelay(t, fastCfg(s, t.TempDir()))
	submit(t, r.addr, "alice@sender.test", "a@rcpt.test", "b@rcpt.test")
	d1 := waitDelivery(t, s.deliveries, 3*time.Second, "first delivery", nil)
	if len(d1.To) != 1 || d1.To[0] != "a@rcpt.test" {
		t.Fatalf("first delivery to %v, want [a@rcpt.test]", d1.To)
	}
	d2 := waitDelivery(t, s.deliveries, 3*time.Second, "retry delivery", nil)
	if len(d2.To) != 1 || d2.To[0] != "b@rcpt.test" {
		t.Fatalf("retry delivered to %v, want only [b@rcpt.test]", d2.To)
	}
	expectNoDelivery(t, s.deliveries, 600*time.Millisecond, "third delivery", nil)
}

func TestCutAfterDotIsRetried(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(nil, func(from string, to []string, n int) sinkAction {
		if n == 1 {
			return sinkCut
		}
		return sinkAccept
	})
	r := startRelay(t, fastCfg(s, t.TempDir()))
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	select {
	case <-s.cuts:
	case <-time.After(3 * time.Second):
		t.Fatal("no first attempt")
	}
	waitDeliveryOf(t, s, m, "re-sent message", "re-sent message is not the original")
}

func TestRestartKeepsQueue(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(tempfailAlways, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	r1 := startRelay(t, cfg)
	m := submit(t, r1.addr, "alice@sender.test", "bob@rcpt.test")
	waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	r1.stop(t)
	if n := filesOnDisk(t, dir); n != 1 {
		t.Fatalf("%d messages on disk after stop, want 1", n)
	}
	if e := findEntry(listing(t, dir), m); e == nil {
		t.Fatal("stopped relay's queue listing lacks the message")
	}
	s.script(nil, nil)
	startRelay(t, cfg)
	waitDeliveryOf(t, s, m, "delivery after restart", "delivered message is not the queued one")
}

func TestInFlightAtStopIsRetried(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(nil, func(from string, to []string, n int) sinkAction {
		if n == 1 {
			return sinkHang
		}
		return sinkAccept
	})
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	r1 := startRelay(t, cfg)
	m := submit(t, r1.addr, "alice@sender.test", "bob@rcpt.test")
	select {
	case <-s.hangs:
	case <-time.After(3 * time.Second):
		t.Fatal("no attempt reached the final dot")
	}
	r1.stop(t) // the relay stops with the message in flight
	startRelay(t, cfg)
	waitDeliveryOf(t, s, m, "delivery after restart", "delivered message is not the in-flight one")
}

func TestFlush(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(greylist(1), nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.MinBackoff, cfg.MaxBackoff = 2*time.Second, 2*time.Second
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	e1 := waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	var out, errb bytes.Buffer
	if code := Main([]string{"flush", "--queue", dir, "--timeout", "3s"}, &out, &errb); code != 0 {
		t.Fatalf("flush exit %d: %s", code, errb.String())
	}
	d := waitDelivery(t, s.deliveries, 3*time.Second, "delivery after flush", nil)
	if gap := d.At.Sub(e1.At); gap >= cfg.MinBackoff {
		t.Fatalf("delivered %s after the deferral: flush did not retry early", gap)
	}
}

func TestFlushWithoutRelayTimesOut(t *testing.T) {
	t.Parallel()
	var out, errb bytes.Buffer
	if code := Main([]string{"flush", "--queue", t.TempDir(), "--timeout", "200ms"}, &out, &errb); code != 1 {
		t.Fatalf("flush without relay: exit %d, want 1", code)
	}
	if !strings.Contains(errb.String(), "no running sample relay") {
		t.Fatalf("stderr %q", errb.String())
	}
}

func TestExpiryAndDelayDSNs(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(tempfailBob, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.DelayWarning, cfg.QueueLifetime = 700*time.Millisecond, 1800*time.Millisecond
	r := startRelay(t, cfg)
	start := time.Now()
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")

	delayed := waitDelivery(t, s.deliveries, 3*time.Second, "delay DSN", isDSNTo("alice@sender.test"))
	if el := delayed.At.Sub(start); el < cfg.DelayWarning {
		t.Errorf("delay DSN after %s, before the delay-warning time %s", el, cfg.DelayWarning)
	}
	checkDSN(t, delayed, "delayed", "4.7.1", "bob@rcpt.test", m, true)

	failed := waitDelivery(t, s.deliveries, 3*time.Second, "failure DSN", isDSNTo("alice@sender.test"))
	if el := failed.At.Sub(start); el < cfg.QueueLifetime {
		t.Errorf("failure DSN after %s, before the queue lifetime %s", el, cfg.QueueLifetime)
	}
	checkDSN(t, failed, "failed", "4.7.1", "bob@rcpt.test", m, true)
	eventually(t, 2*time.Second, "queue empty after expiry", func() bool {
		return len(listing(t, dir)) == 0 && filesOnDisk(t, dir) == 0
	})
	expectNoDelivery(t, s.deliveries, 500*time.Millisecond, "another DSN", nil)
}

func TestNoDSNAboutNullSender(t *testing.T) {
	slow(t)
	t.Parallel()
	s := newSink(t)
	s.script(tempfailAlways, nil)
	dir := t.TempDir()
	cfg := fastCfg(s, dir)
	cfg.DelayWarning, cfg.QueueLifetime = 300*time.Millisecond, 800*time.Millisecond
	r := startRelay(t, cfg)
	submit(t, r.addr, "", "bob@rcpt.test")
	eventually(t, 3*time.Second, "null-sender message expired", func() bool { return filesOnDisk(t, dir) == 0 })
	expectNoDelivery(t, s.deliveries, 500*time.Millisecond, "DSN about a null-sender message", nil)
}

func TestPermanentFailureBounces(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(rejectNobody, nil)
	r := startRelay(t, fastCfg(s, t.TempDir()))
	m := submit(t, r.addr, "alice@sender.test", "nobody@rcpt.test")
	d := waitDelivery(t, s.deliveries, 3*time.Second, "failure DSN", isDSNTo("alice@sender.test"))
	body := string(d.Data)
	for _, want := range []string{"Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 No such user", m.MessageID, m.HarnessID} {
		if !strings.Contains(body, want) {
			t.Errorf("DSN lacks %q:\n%s", want, body)
		}
	}
}

// ---- CLI ----

func TestParseBugs(t *testing.T) {
	bugs, err := ParseBugs("kb950757, hammer,kb950757")
	if err != nil || len(bugs) != 2 || bugs[0] != BugKB950757 || bugs[1] != BugHammer {
		t.Fatalf("ParseBugs = %v, %v", bugs, err)
	}
	if b, err := ParseBugs(""); err != nil || len(b) != 0 {
		t.Fatalf("ParseBugs(\"\") = %v, %v", b, err)
	}
	_, err = ParseBugs("hammer,nope")
	if err == nil || !strings.Contains(err.Error(), `"nope"`) || !strings.Contains(err.Error(), "drop-on-4xx") {
		t.Fatalf("error %v should name the bad bug and the valid ones", err)
	}
}

func TestMainUsageErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{nil, "usage"},
		{[]string{"bogus"}, "unknown command"},
		{[]string{"serve", "--next-hop", "127.0.0.1:1", "--queue", dir}, "--listen is required"},
		{[]string{"serve", "--listen", "127.0.0.1:0", "--next-hop", "127.0.0.1:1", "--queue", dir, "--bug", "nope"}, "valid:"},
		{[]string{"serve", "--listen", "127.0.0.1:0", "--next-hop", "127.0.0.1:1", "--queue", dir, "--min-backoff", "soon"}, "invalid value"},
		{[]string{"serve", "--listen", "nohostport", "--next-hop", "127.0.0.1:1", "--queue", dir}, "bad address"},
		{[]string{"serve", "--listen", "127.0.0.1:0", "--next-hop", "127.0.0.1:1", "--lane", "127.0.0.11", "--queue", dir}, "bad address"},
		{[]string{"serve", "--listen", "127.0.0.1:0", "--next-hop", "127.0.0.1:1", "--queue", dir, "--min-backoff", "3s", "--max-backoff", "1s"}, "shorter than"},
		{[]string{"queue"}, "--queue is required"},
		{[]string{"queue", "--queue", dir, "extra"}, "unexpected argument"},
		{[]string{"flush", "--nope"}, "flag provided but not defined"},
	}
	for _, c := range cases {
		var out, errb bytes.Buffer
		if code := Main(c.args, &out, &errb); code != 2 {
			t.Errorf("Main(%q) = %d, want 2 (stderr %q)", c.args, code, errb.String())
		}
		if !strings.Contains(errb.String(), c.want) {
			t.Errorf("Main(%q) stderr %q lacks %q", c.args, errb.String(), c.want)
		}
	}
	var out, errb bytes.Buffer
	if code := Main([]string{"queue", "--queue", dir}, &out, &errb); code != 0 || strings.TrimSpace(out.String()) != "[]" {
		t.Fatalf("empty queue listing: exit %d, %q %q", code, out.String(), errb.String())
	}
}

// TestMXFailover: a 4xx (at RCPT or after the final dot) or a connection
// failure at one MX sends the recipients to the next MX in the same attempt;
// a 5xx is final and the next MX is not asked.
func TestMXFailover(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		mx1  func(s *sink) string // scripts MX 1, returns its address
	}{
		{"4xx at RCPT", func(s *sink) string { s.script(tempfailAlways, nil); return s.addr }},
		{"4xx after the final dot", func(s *sink) string {
			s.script(nil, func(string, []string, int) sinkAction { return sinkTempEOD })
			return s.addr
		}},
		{"connection refused", func(*sink) string { return deadAddr(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s1, s2 := newSink(t), newSink(t)
			cfg := fastCfg(s1, t.TempDir())
			cfg.NextHop = []string{tc.mx1(s1), s2.addr}
			cfg.MinBackoff, cfg.MaxBackoff = 20*time.Second, 20*time.Second // no retry inside the test: only failover can deliver
			r := startRelay(t, cfg)
			submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
			waitDelivery(t, s2.deliveries, 5*time.Second, "delivery at the second MX", toRcpt("bob@rcpt.test"))
			eventually(t, 2*time.Second, "queue empty", func() bool { return len(listing(t, cfg.QueueDir)) == 0 })
		})
	}
	t.Run("5xx is final", func(t *testing.T) {
		t.Parallel()
		s1, s2 := newSink(t), newSink(t)
		s1.script(rejectNobody, nil)
		cfg := fastCfg(s1, t.TempDir())
		cfg.NextHop = []string{s1.addr, s2.addr}
		r := startRelay(t, cfg)
		submit(t, r.addr, "alice@sender.test", "nobody@rcpt.test")
		waitDelivery(t, s1.deliveries, 5*time.Second, "the failure DSN (at the first MX)", isDSNTo("alice@sender.test"))
		expectNoRcpt(t, s2.rcpts, 500*time.Millisecond, "the second MX after a 5xx")
	})
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func TestNextHopFlagList(t *testing.T) {
	var h hopList
	for _, v := range []string{"127.0.0.2:25", "127.0.0.3:25, 127.0.0.4:25"} {
		if err := h.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if h.String() != "127.0.0.2:25,127.0.0.3:25,127.0.0.4:25" {
		t.Fatalf("--next-hop list %q", h.String())
	}
}

// TestMXFailoverKeepsTheReply: when the next MX does not answer, the
// recipient keeps the last reply an MX gave (451 4.7.1), not the
// connection error: a greylisting stays a greylisting.
func TestMXFailoverKeepsTheReply(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	s.script(tempfailAlways, nil)
	cfg := fastCfg(s, t.TempDir())
	cfg.NextHop = []string{s.addr, deadAddr(t)}
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Second, 20*time.Second
	r := startRelay(t, cfg)
	m := submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	waitRcpt(t, s.rcpts, 3*time.Second, func(e rcptEvent) bool { return e.Code == 451 })
	eventually(t, 3*time.Second, "listed as greylisted", func() bool {
		e := findEntry(listing(t, cfg.QueueDir), m)
		return e != nil && strings.HasPrefix(e.Reason, "451 4.7.1")
	})
}

// TestListingSaysDeferred: a message whose delivery failed temporarily
// (here: the next hop refuses the connection, so no reply shows it) is
// listed deferred with the error as its reason; one not tried yet is not.
func TestListingSaysDeferred(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	cfg := fastCfg(s, t.TempDir())
	cfg.NextHop = []string{deadAddr(t)}
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Second, 20*time.Second
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@sender.test", "bob@rcpt.test")
	var e SampleEntry
	eventually(t, 5*time.Second, "the message listed deferred", func() bool {
		l := listing(t, cfg.QueueDir)
		if len(l) == 1 && l[0].Deferred {
			e = l[0]
			return true
		}
		return false
	})
	if !strings.Contains(e.Reason, "refused") {
		t.Errorf("reason %q does not say the connection was refused", e.Reason)
	}
	if parsed, err := queue.ParseSample(mustJSON(t, []SampleEntry{e})); err != nil || !parsed[0].Deferred || parsed[0].Reason != e.Reason {
		t.Errorf("queue.ParseSample kept %+v, %v; want deferred with reason %q", parsed, err, e.Reason)
	}
	for _, x := range []*rcptState{{State: statePending}, {State: stateDelivered, LastReply: "250 ok"}} {
		env := &envelope{ID: "x", Recipients: []*rcptState{x, {Addr: "c@x", State: statePending}}}
		if got, _ := listEntry(env, time.Now()); got.Deferred {
			t.Errorf("recipient %+v listed deferred", x)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Submissions on several connections at once: each is accepted and
// delivered. Under -race this also proves the inbound server is free of
// data races between sessions (mhale/smtpd v0.8.3 sets MaxRecipients on
// the shared Server from a session when it is 0; the relay sets it).
func TestConcurrentSubmissions(t *testing.T) {
	t.Parallel()
	s := newSink(t)
	r := startRelay(t, fastCfg(s, t.TempDir()))
	const n = 4
	done := make(chan struct{}, n)
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			submit(t, r.addr, fmt.Sprintf("s%d@sender.test", i), fmt.Sprintf("r%d@rcpt.test", i))
		}()
	}
	for range n {
		<-done
	}
	got := map[string]bool{}
	for range n {
		d := waitDelivery(t, s.deliveries, 3*time.Second, "delivery", nil)
		got[d.To[0]] = true
	}
	if len(got) != n {
		t.Errorf("delivered to %v, want %d distinct recipients", got, n)
	}
}

// TestLanes: a recipient whose domain's first label is "lN-" goes to lane
// N's address (its DSNs too: they go to the sender, whose domain carries
// the same label); others to the next hops; a label past the last lane
// or not of that shape is no lane.
func TestLanes(t *testing.T) {
	t.Parallel()
	main, l1, l2 := newSink(t), newSink(t), newSink(t)
	cfg := fastCfg(main, t.TempDir())
	cfg.Lanes = []string{l1.addr, l2.addr}
	r := startRelay(t, cfg)
	submit(t, r.addr, "alice@l2-t1.sender.test", "bob@l2-t1.rcpt.test", "carol@rcpt.test", "dan@l1-t3.rcpt.test")
	waitDelivery(t, l2.deliveries, 5*time.Second, "lane 2's recipient at lane 2", toRcpt("bob@l2-t1.rcpt.test"))
	waitDelivery(t, main.deliveries, 5*time.Second, "the unlaned recipient at the next hop", toRcpt("carol@rcpt.test"))
	waitDelivery(t, l1.deliveries, 5*time.Second, "lane 1's recipient at lane 1", toRcpt("dan@l1-t3.rcpt.test"))
	for _, rc := range []string{"x@l3-t1.rcpt.test", "y@l1.rcpt.test", "z@xl1-t.rcpt.test"} {
		submit(t, r.addr, "alice@sender.test", rc)
		waitDelivery(t, main.deliveries, 5*time.Second, rc+" at the next hop", toRcpt(rc))
	}
	// A bounce goes to the laned sender on its lane.
	l1.script(func(from, to string, n int) *smtp.SMTPError {
		return rejectNobody(from, strings.Replace(to, "@l1-t3.", "@", 1), n)
	}, nil)
	submit(t, r.addr, "alice@l1-t3.sender.test", "nobody@l1-t3.rcpt.test")
	waitDelivery(t, l1.deliveries, 5*time.Second, "the failure DSN at lane 1", isDSNTo("alice@l1-t3.sender.test"))
}
