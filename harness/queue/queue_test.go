package queue

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parse(t *testing.T, f profile.QueueFormat, name string, now time.Time) []history.QueueEntry {
	t.Helper()
	es, err := Parse(f, read(t, name), now)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return es
}

func find(t *testing.T, es []history.QueueEntry, id string) history.QueueEntry {
	t.Helper()
	for _, e := range es {
		if e.QueueID == id {
			return e
		}
	}
	t.Fatalf("no entry %s in %+v", id, es)
	return history.QueueEntry{}
}

// Captured from Debian's Postfix 3.7.11 (ci/postfix) with the next hop down,
// then one message put on hold, then with a sink answering 451 4.7.1 to .org.
func TestPostfixJSON(t *testing.T) {
	es := parse(t, profile.QueuePostfixJSON, "postfix-deferred.jsonl", time.Time{})
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	m := find(t, es, "BA4F798438D")
	if m.Sender != "sender@example.test" || !slices.Equal(m.Recipients, []string{"rcpt1@example.net", "rcpt2@example.org"}) {
		t.Errorf("entry = %+v", m)
	}
	if !m.Arrival.Equal(time.Unix(1795537377, 0)) || !strings.Contains(m.Reason, "Connection refused") {
		t.Errorf("arrival/reason = %v %q", m.Arrival, m.Reason)
	}
	if b := find(t, es, "BC20398438E"); b.Sender != "" {
		t.Errorf("bounce sender = %q, want \"\" (MAILER-DAEMON)", b.Sender)
	}
	// A delay reason is what a deferred attempt leaves: the message is
	// listed deferred; one in the active queue, not tried yet, is not.
	if !m.Deferred {
		t.Errorf("entry with a delay reason not deferred: %+v", m)
	}
	fresh, err := ParsePostfixJSON([]byte(`{"queue_name": "active", "queue_id": "C1", "arrival_time": 1795537377, "sender": "s@x", "recipients": [{"address": "r@x"}]}`))
	if err != nil || len(fresh) != 1 || fresh[0].Deferred || fresh[0].Reason != "" {
		t.Errorf("active entry without a delay reason = %+v, %v; want not deferred", fresh, err)
	}

	es = parse(t, profile.QueuePostfixJSON, "postfix-hold.jsonl", time.Time{})
	if h := find(t, es, "BC20398438E"); !strings.HasPrefix(h.Reason, "on hold; connect to") {
		t.Errorf("hold reason = %q", h.Reason)
	}

	es = parse(t, profile.QueuePostfixJSON, "postfix-greylisted.jsonl", time.Time{})
	g := find(t, es, "E01B8984B7B")
	if !slices.Equal(g.Recipients, []string{"rcpt2@example.org"}) || !strings.Contains(g.Reason, "451 4.7.1 greylisted") {
		t.Errorf("greylisted entry = %+v", g)
	}

	es = parse(t, profile.QueuePostfixJSON, "postfix-empty.jsonl", time.Time{})
	if es == nil || len(es) != 0 {
		t.Errorf("empty queue = %#v, want empty non-nil", es)
	}
}

// Captured from Debian's Exim 4.96 (ci/exim): deferred + a frozen bounce,
// a partial delivery (one recipient "D"), and the same frozen.
func TestExim(t *testing.T) {
	now := time.Unix(1795537420, 0)
	es := parse(t, profile.QueueExim, "exim-deferred-frozen.txt", now)
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	m := find(t, es, "1xVtIt-0001n9-0l")
	if m.Sender != "sender@example.test" || !slices.Equal(m.Recipients, []string{"rcpt1@example.net", "rcpt2@example.org"}) || m.Reason != "" {
		t.Errorf("entry = %+v", m)
	}
	// 1xVtIt = 1795537415 in base 62; the mainlog says it arrived 16:23:35 UTC.
	if !m.Arrival.Equal(time.Unix(1795537415, 0)) {
		t.Errorf("arrival = %v", m.Arrival.UTC())
	}
	b := find(t, es, "1xVtIt-0001nC-0m")
	if b.Sender != "" || b.Reason != "frozen" || !slices.Equal(b.Recipients, []string{"x@example.net"}) {
		t.Errorf("frozen bounce = %+v", b)
	}

	es = parse(t, profile.QueueExim, "exim-partial.txt", now)
	p := find(t, es, "1xVtKq-0002qD-1p")
	if !slices.Equal(p.Recipients, []string{"rcpt2@example.org"}) {
		t.Errorf("delivered recipient not left out: %+v", p)
	}

	es = parse(t, profile.QueueExim, "exim-partial-frozen-bounce.txt", now)
	if len(es) != 2 || find(t, es, "1xVtKq-0002qD-1p").Reason != "frozen" || find(t, es, "1xVtKq-0002qR-3B").Sender != "" {
		t.Errorf("entries = %+v", es)
	}
}

// exim-msglog.txt is `exim.sh queue` of a private Exim 4.96 (testdata/README.md):
// `exim -bp`, then the deferrals of the messages' own logs. An attempt that
// failed (a 451 from the fake MTA, a refused connection) makes a message
// deferred; a message never tried, or only skipped because its host's retry
// time was not reached, is not.
func TestEximMsglogDeferred(t *testing.T) {
	now := time.Unix(1796225837, 0)
	es := parse(t, profile.QueueExim, "exim-msglog.txt", now)
	if len(es) != 5 {
		t.Fatalf("entries = %+v", es)
	}
	g := find(t, es, "1xYmMz-00037r-21")
	if !g.Deferred || g.Reason != "SMTP error from remote mail server after RCPT TO:<carol@rcpt.greyharness.test>: 451 4.7.1 Greylisted, please try again in 3597 seconds" ||
		!slices.Equal(g.Recipients, []string{"bob@rcpt.greyharness.test", "carol@rcpt.greyharness.test"}) {
		t.Errorf("greylisted (451 three times) = %+v", g)
	}
	r := find(t, es, "1xYmNl-0003Uq-1p")
	if !r.Deferred || r.Reason != "Connection refused" || r.Sender != "refused@client.greyharness.test" {
		t.Errorf("connection refused = %+v", r)
	}
	for _, id := range []string{"1xYmNU-0003K1-36", "1xYmNW-0003Ms-34"} {
		if e := find(t, es, id); e.Deferred || e.Reason != "" {
			t.Errorf("never tried, yet %+v", e)
		}
	}
	s := find(t, es, "1xYmNm-0003Ve-18")
	if s.Deferred || s.Reason != "retry time not reached for any host for 'rcpt.greyharness.test'" {
		t.Errorf("skipped for its host's retry time (no attempt) = %+v", s)
	}
}

func TestEximShapes(t *testing.T) {
	now := time.Date(2026, 11, 24, 18, 0, 0, 0, time.UTC)
	// Ages and sizes as Exim prints them for older messages; an ID whose time
	// does not match the age (foreign ID scheme) falls back to now - age.
	out := "25m  2.9K 1t5C6F-000123-AB <bob@example.org>\n          rcpt@x.example\n        +D child@x.example\n\n" +
		" 3h   12M 1rmXxc-00000000ABC-0Tmp <> *** frozen ***\n        D done@y.example\n          left@y.example\n"
	es, err := ParseExim([]byte(out), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].Sender != "bob@example.org" || !slices.Equal(es[0].Recipients, []string{"rcpt@x.example"}) {
		t.Fatalf("entries = %+v", es)
	}
	if !es[0].Arrival.Equal(now.Add(-25 * time.Minute)) {
		t.Errorf("arrival from age = %v", es[0].Arrival)
	}
	if es[1].QueueID != "1rmXxc-00000000ABC-0Tmp" || es[1].Reason != "frozen" || !slices.Equal(es[1].Recipients, []string{"left@y.example"}) {
		t.Errorf("entry = %+v", es[1])
	}
	if _, err := ParseExim([]byte("garbage here\n"), now); err == nil {
		t.Error("garbage accepted")
	}
	if es, err := ParseExim(nil, now); err != nil || len(es) != 0 {
		t.Errorf("empty listing = %v %v", es, err)
	}
}

// Shapes of the msglog part that the capture does not show.
func TestEximMsglogShapes(t *testing.T) {
	now := time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)
	out := " 5m   1K 1xYmMz-00037r-21 <a@client.test> *** frozen ***\n          x@rcpt.test\n\n" +
		" 1m   1K 1xYmNl-0003Uq-1p <a@client.test>\n          y@rcpt.test\n\n" +
		" 0m   1K 1xYmNm-0003Ve-18 <b defer (1)@client.test>\n          z@rcpt.test\n\n" +
		// a real deferral, then a skip for the host's retry time: still deferred
		"msglog 1xYmMz-00037r-21: 2026-12-02 15:55:00 x@rcpt.test R=r T=t defer (110): Connection timed out H=127.0.0.2 [127.0.0.2]:2536: SMTP timeout after initial connection\n" +
		"msglog 1xYmMz-00037r-21: 2026-12-02 15:55:02 x@rcpt.test R=r T=t defer (-53): retry time not reached for any host\n" +
		// split_spool_directory: msglog/l/ID
		"msglog l/1xYmNl-0003Uq-1p: 2026-12-02 15:59:00 y@rcpt.test <parent@rcpt.test> R=r defer (-1): host lookup did not complete\n" +
		// grep's " defer (" in a sender is not a deferral
		"msglog 1xYmNm-0003Ve-18: 2026-12-02 15:59:59 Received from b defer (1)@client.test H=(c) [127.0.0.1] P=esmtp S=1\n" +
		// a message no longer listed (delivered between -bp and grep)
		"msglog 1xYmZZ-0003Ve-18: 2026-12-02 15:59:59 w@rcpt.test R=r T=t defer (111): Connection refused DT=0s\n"
	es, err := ParseExim([]byte(out), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 {
		t.Fatalf("entries = %+v", es)
	}
	if e := es[0]; !e.Deferred || e.Reason != "frozen; Connection timed out; SMTP timeout after initial connection" {
		t.Errorf("frozen, deferred = %+v", e)
	}
	if e := es[1]; !e.Deferred || e.Reason != "host lookup did not complete" {
		t.Errorf("router deferral (split spool) = %+v", e)
	}
	if e := es[2]; e.Deferred || e.Reason != "" {
		t.Errorf("not a deferral line, yet %+v", e)
	}
	if _, err := ParseExim([]byte("msglog ../../etc/passwd: x\n"), now); err == nil {
		t.Error("msglog line without a message ID accepted")
	}
}

// testdata/opensmtpd.txt follows OpenSMTPD's smtpctl.c show_queue_envelope()
// (no OpenSMTPD on this machine to capture from).
func TestOpenSMTPD(t *testing.T) {
	now := time.Unix(1795537420, 0)
	es := parse(t, profile.QueueOpenSMTPD, "opensmtpd.txt", now)
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	m := find(t, es, "1d2a3b4c")
	if m.Sender != "sender@example.test" || !slices.Equal(m.Recipients, []string{"rcpt1@example.net", "rcpt2@example.org"}) {
		t.Errorf("entry = %+v", m)
	}
	if !m.Arrival.Equal(time.Unix(1795537400, 0)) || !m.NextAttempt.Equal(now.Add(3*time.Second)) {
		t.Errorf("times = %v %v", m.Arrival, m.NextAttempt)
	}
	if m.Reason != "421 4.7.1 greylisted, try again later" {
		t.Errorf("reason = %q", m.Reason)
	}
	b := find(t, es, "2e0f00aa")
	if b.Sender != "" || b.Reason != "on hold" || !b.NextAttempt.IsZero() {
		t.Errorf("bounce = %+v", b)
	}
	if _, err := ParseOpenSMTPD([]byte("1|2|3\n"), now); err == nil {
		t.Error("short line accepted")
	}
}

func TestSample(t *testing.T) {
	es := parse(t, profile.QueueSample, "sample.json", time.Time{})
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	if es[0].HarnessID != "gh-1" || es[0].MessageID != "m1@greyharness.test" || es[0].NextAttempt.IsZero() || len(es[0].Recipients) != 2 {
		t.Errorf("entry = %+v", es[0])
	}
	if es[1].Sender != "" || !es[1].NextAttempt.IsZero() || !es[0].Deferred || es[1].Deferred {
		t.Errorf("entries = %+v", es)
	}
	for _, bad := range []string{`{"queue_id":"x"}`, `[{"queue_id":"x","bogus":1}]`, `[{"sender":"a"}]`, `[] []`} {
		if _, err := ParseSample([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	for _, empty := range []string{"", "[]\n", "null"} {
		if es, err := ParseSample([]byte(empty)); err != nil || len(es) != 0 {
			t.Errorf("%q: %v %v", empty, es, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := Parse(profile.QueuePostfixJSON, []byte("{\"queue_id\": \"A\"}\nnot json\n"), time.Now()); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("err = %v", err)
	}
	if _, err := Parse("mailq", nil, time.Now()); err == nil {
		t.Error("unknown format accepted")
	}
	if es, err := Parse(profile.QueueNone, []byte("anything"), time.Now()); err != nil || es != nil {
		t.Errorf("none = %v %v", es, err)
	}
}

// Captured from Haraka 3.3.4 (ci/haraka, `haraka.sh queue`) with a sink
// answering 451 4.7.1 to delayed*@: one message per file and per domain,
// the todo JSON first, then the message.
func TestHaraka(t *testing.T) {
	es := parse(t, profile.QueueHaraka, "haraka-greylisted.tar", time.Time{})
	if len(es) != 5 {
		t.Fatalf("entries = %+v", es)
	}
	m := find(t, es, "FF31C1D8-2A6F-4250-AF40-D4875A0BCB4E.1.1")
	if m.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(m.Recipients, []string{"delayed2@remote.test", "delayed3@remote.test"}) {
		t.Errorf("entry = %+v", m)
	}
	if !m.Arrival.Equal(time.UnixMilli(1796189865334)) || !m.NextAttempt.Equal(time.UnixMilli(1796189870672)) {
		t.Errorf("times = %v %v", m.Arrival, m.NextAttempt)
	}
	if m.MessageID != "hk-q2@client.test" || m.HarnessID != "gh-hkq2" || m.Reason != "deferred 1 time" {
		t.Errorf("ids = %q %q, reason %q", m.MessageID, m.HarnessID, m.Reason)
	}
	p := find(t, es, "E7C1463B-5D94-4108-8049-6B1B1621FE9D.1.1")
	if p.Sender != "sender@client.test" || !slices.Equal(p.Recipients, []string{"delayed1@remote.test"}) ||
		p.HarnessID != "gh-hk-q1" || p.MessageID != "hk-q1.20250101@client.test" || p.Reason != "deferred 7 times" {
		t.Errorf("entry = %+v", p)
	}

	null := parse(t, profile.QueueHaraka, "haraka-null-sender.tar", time.Time{})
	var found bool
	for _, e := range null {
		if e.HarnessID == "gh-hknull" {
			found = true
			if e.Sender != "" || !slices.Equal(e.Recipients, []string{"sender@client.greyharness.test"}) {
				t.Errorf("null sender entry = %+v", e)
			}
		}
	}
	if !found {
		t.Errorf("no null-sender entry in %+v", null)
	}

	for _, empty := range []string{"haraka-empty.tar"} {
		if es := parse(t, profile.QueueHaraka, empty, time.Time{}); len(es) != 0 {
			t.Errorf("%s: %+v", empty, es)
		}
	}
	if es, err := ParseHaraka(nil); err != nil || len(es) != 0 {
		t.Errorf("no output: %v %v", es, err)
	}
}

func TestHarakaErrors(t *testing.T) {
	good := read(t, "haraka-greylisted.tar")
	if _, err := ParseHaraka([]byte("Q: file rcpt:1 from:<a@b> domain:b\n")); err == nil {
		t.Error("--qlist text accepted")
	}
	if _, err := ParseHaraka(good[:700]); err == nil {
		t.Error("truncated archive accepted")
	}
	// A queue file whose todo length points past its end.
	bad := harakaTar(t, "1796189833820_1796189833820_0_20710_ZJJoeo_1_mx.test", append([]byte{0, 0, 9, 0}, `{"uuid":"x"}`...))
	if _, err := ParseHaraka(bad); err == nil || !strings.Contains(err.Error(), "ZJJoeo") {
		t.Errorf("bad todo length: %v", err)
	}
	bad = harakaTar(t, "notaqueuefile", []byte{0, 0, 0, 2, '{', '}'})
	if _, err := ParseHaraka(bad); err == nil || !strings.Contains(err.Error(), "notaqueuefile") {
		t.Errorf("bad name: %v", err)
	}
	bad = harakaTar(t, "1_2_0_3_abc_1_h", []byte{0, 0, 0, 2, '{', '}'})
	if _, err := ParseHaraka(bad); err == nil || !strings.Contains(err.Error(), "uuid") {
		t.Errorf("no uuid: %v", err)
	}
}

func harakaTar(t *testing.T, name string, body []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// The generic format: a versioned object, or a bare array (the sample
// relay's listing, which sample-json still names).
func TestJSON(t *testing.T) {
	es := parse(t, profile.QueueJSON, "json-v1.json", time.Time{})
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	if es[0].QueueID != "A1" || es[0].Sender != "alice@example.test" || !slices.Equal(es[0].Recipients, []string{"bob@example.net"}) ||
		!es[0].Arrival.Equal(time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)) || !es[0].NextAttempt.Equal(time.Date(2026, 12, 2, 5, 0, 30, 0, time.UTC)) ||
		es[0].Reason != "451 4.7.1 Greylisted" || es[0].MessageID != "m1@example.test" || es[0].HarnessID != "gh-1" {
		t.Errorf("entry = %+v", es[0])
	}
	if es[1].Sender != "" || !es[1].NextAttempt.IsZero() || !es[0].Deferred || es[1].Deferred {
		t.Errorf("entries = %+v", es)
	}
	// What docs/relays.md's Exchange example (jq) prints.
	ex := parse(t, profile.QueueJSON, "json-exchange-example.json", time.Time{})
	if len(ex) != 2 || ex[0].QueueID != `EX1\Submission\1234` || ex[0].MessageID != "m1@example.test" ||
		ex[1].Sender != "" || !slices.Equal(ex[1].Recipients, []string{"carol@example.net"}) {
		t.Errorf("exchange example = %+v", ex)
	}
	// The sample relay's bare array is version 1 too.
	if es := parse(t, profile.QueueJSON, "sample.json", time.Time{}); len(es) != 2 {
		t.Errorf("bare array: %+v", es)
	}
	for _, empty := range []string{"", "[]", `{"greyharness_queue": 1, "messages": []}`} {
		if es, err := ParseJSON([]byte(empty)); err != nil || len(es) != 0 {
			t.Errorf("%q: %v %v", empty, es, err)
		}
	}
	for bad, want := range map[string]string{
		`{"greyharness_queue": 2, "messages": []}`: "version 2",
		`{"messages": []}`:                         "greyharness_queue",
		`{"greyharness_queue": 1, "messages": [{"queue_id": "x", "sendr": "a"}]}`:   "sendr",
		`{"greyharness_queue": 1, "messages": [{"sender": "a"}]}`:                   "queue_id",
		`{"greyharness_queue": 1, "messages": [{"queue_id": "x", "arrival": "5"}]}`: "arrival",
		`[] []`: "trailing",
	} {
		if _, err := ParseJSON([]byte(bad)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", bad, err, want)
		}
	}
}

// Captured from OpenSMTPD 6.8.0p2 (ci/opensmtpd, `opensmtpd.sh queue`) at
// 1796190481, 4-7s after a sink answered 451 4.7.1: one line per envelope,
// the three-recipient message's two deferred envelopes merged; 6.8 prints
// expire = creation and lasttry 0.
func TestOpenSMTPDReal(t *testing.T) {
	now := time.Unix(1796190481, 0)
	es := parse(t, profile.QueueOpenSMTPD, "opensmtpd-greylisted.txt", now)
	if len(es) != 2 {
		t.Fatalf("entries = %+v", es)
	}
	m := find(t, es, "2d53991a")
	if m.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(m.Recipients, []string{"delayed2@remote.test", "delayed3@other.test"}) {
		t.Errorf("entry = %+v", m)
	}
	if !m.Arrival.Equal(time.Unix(1796190477, 0)) || !m.NextAttempt.Equal(now.Add(396*time.Second)) {
		t.Errorf("times = %v %v", m.Arrival, m.NextAttempt)
	}
	if m.Reason != "451 4.7.1 <delayed2@remote.test>: Recipient address rejected: Greylisted, try again later" {
		t.Errorf("reason = %q", m.Reason)
	}
	o := find(t, es, "7e3a6de9")
	if o.Sender != "sender@client.test" || !slices.Equal(o.Recipients, []string{"delayed1@remote.test"}) || !o.NextAttempt.Equal(now.Add(393*time.Second)) {
		t.Errorf("entry = %+v", o)
	}
}

// Captured from sendmail 8.17.1.9 (Debian 12 sendmail-bin, unpacked) with
// `sendmail -bp -v` after a sink answered 451 4.7.1 to delayed*@ and then
// went down (the null-sender message: connection refused).
func TestSendmail(t *testing.T) {
	now := time.Date(2026, 12, 2, 5, 53, 40, 0, time.UTC)
	es := parse(t, profile.QueueSendmail, "sendmail-deferred.txt", now)
	if len(es) != 3 {
		t.Fatalf("entries = %+v", es)
	}
	n := find(t, es, "6B25riUk004895")
	if n.Sender != "" || !slices.Equal(n.Recipients, []string{"sender@client.greyharness.test"}) ||
		n.Reason != "Deferred: Connection refused by [127.0.0.1]" || !n.Arrival.Equal(time.Date(2026, 12, 2, 5, 53, 0, 0, time.UTC)) {
		t.Errorf("null sender entry = %+v", n)
	}
	m := find(t, es, "6B25raCA004399")
	if m.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(m.Recipients, []string{"delayed2@remote.test", "delayed3@other.test"}) ||
		m.Reason != "Deferred: 451 4.7.1 <delayed3@other.test>: Recipient address rejected: Greylisted, try again later" {
		t.Errorf("entry = %+v", m)
	}
	// A listing from the first days of January shows December's messages.
	jan := time.Date(2027, 1, 1, 0, 10, 0, 0, time.UTC)
	if es := parse(t, profile.QueueSendmail, "sendmail-deferred.txt", jan); !es[0].Arrival.Equal(time.Date(2026, 12, 2, 5, 53, 0, 0, time.UTC)) {
		t.Errorf("arrival across the new year = %v", es[0].Arrival)
	}
	if es := parse(t, profile.QueueSendmail, "sendmail-empty.txt", now); len(es) != 0 {
		t.Errorf("empty = %+v", es)
	}
	// Plain mailq (no -v): no priority column, recipients indented by spaces,
	// a message in progress marked "*".
	plain := "\t\t/var/spool/mqueue (1 request)\n" +
		"-----Q-ID----- --Size-- -----Q-Time----- ------------Sender/Recipient-----------\n" +
		"6B25rVxt004162*     34 Wed Dec  2 05:53 <sender@client.test>\n" +
		"                 (Deferred: 451 4.7.1 Greylisted)\n" +
		"                                         <delayed1@remote.test>\n" +
		"\t\tTotal requests: 1\n"
	es, err := ParseSendmail([]byte(plain), now)
	if err != nil || len(es) != 1 || es[0].QueueID != "6B25rVxt004162" || !slices.Equal(es[0].Recipients, []string{"delayed1@remote.test"}) ||
		es[0].Reason != "Deferred: 451 4.7.1 Greylisted" {
		t.Errorf("plain mailq = %+v, %v", es, err)
	}
	// "-" after the queue id marks a message too young for a queue run
	// (MinQueueAge, sendmail's printqueue: w_tooyoung), not a quarantined
	// one. Captured from sendmail 8.17.1.9 with MinQueueAge 1h after a 451.
	young := parse(t, profile.QueueSendmail, "sendmail-tooyoung.txt", time.Date(2026, 12, 2, 8, 12, 30, 0, time.UTC))
	if len(young) != 2 {
		t.Fatalf("too-young entries = %+v", young)
	}
	y := find(t, young, "6B28CRu2031787")
	if y.Reason != "Deferred: 451 4.7.1 Greylisted, please try again in 3600 seconds" ||
		y.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(y.Recipients, []string{"carol@rcpt.greyharness.test", "dave@other.greyharness.test"}) {
		t.Errorf("too-young entry = %+v", y)
	}
	if _, err := ParseSendmail([]byte("\t\t/q (1 request)\nsomething else entirely\n"), now); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("garbage: %v", err)
	}
	if _, err := ParseSendmail([]byte("\t\t\t\t\t\t<orphan@example.test>\n"), now); err == nil {
		t.Error("recipient before any message accepted")
	}
}

// Captured from nullmailer 2.2 (ci/nullmailer, `nullmailer.sh queue`: a
// tar stream of its queue/ folder) with the fake MTA greylisting everything
// for an hour; see testdata/README.md.
func TestNullmailer(t *testing.T) {
	es := parse(t, profile.QueueNullmailer, "nullmailer-greylisted.tar", time.Time{})
	if len(es) != 3 {
		t.Fatalf("entries = %+v", es)
	}
	one := find(t, es, "1796198080.8574")
	if one.Sender != "sender+gh-1@client.greyharness.test" || !slices.Equal(one.Recipients, []string{"alice@rcpt.greyharness.test"}) ||
		one.MessageID != "nmcap-0001.20250101@client.test" || one.HarnessID != "gh-nmcap-0001" ||
		!one.Arrival.Equal(time.Unix(1796198080, 0)) || !one.NextAttempt.IsZero() || one.Reason != "" {
		t.Errorf("entry = %+v", one)
	}
	two := find(t, es, "1796198082.8706")
	if two.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(two.Recipients, []string{"carol@rcpt.greyharness.test", "dave@other.greyharness.test"}) ||
		two.HarnessID != "gh-nmcap-0002" {
		t.Errorf("entry = %+v", two)
	}
	null := find(t, es, "1796198082.8723")
	if null.Sender != "" || !slices.Equal(null.Recipients, []string{"postmaster@client.greyharness.test"}) || null.MessageID != "nmcap-0003@relay" {
		t.Errorf("null sender entry = %+v", null)
	}
	if es := parse(t, profile.QueueNullmailer, "nullmailer-empty.tar", time.Time{}); len(es) != 0 {
		t.Errorf("empty: %+v", es)
	}
	if es, err := ParseNullmailer(nil); err != nil || len(es) != 0 {
		t.Errorf("no output: %v %v", es, err)
	}
}

func TestNullmailerErrors(t *testing.T) {
	if _, err := ParseNullmailer([]byte("Mail queue is empty\n")); err == nil {
		t.Error("mailq text accepted")
	}
	good := read(t, "nullmailer-greylisted.tar")
	if _, err := ParseNullmailer(good[:700]); err == nil {
		t.Error("truncated archive accepted")
	}
	// A queue file with no blank line after the envelope.
	bad := harakaTar(t, "queue/1796198080.1", []byte("a@b\nc@d\n"))
	if _, err := ParseNullmailer(bad); err == nil || !strings.Contains(err.Error(), "1796198080.1") {
		t.Errorf("no end of envelope: %v", err)
	}
	// A file name that is not TIME.PID.
	bad = harakaTar(t, "queue/notaqueuefile", []byte("a@b\nc@d\n\nSubject: x\n\n"))
	if _, err := ParseNullmailer(bad); err == nil || !strings.Contains(err.Error(), "notaqueuefile") {
		t.Errorf("bad name: %v", err)
	}
	// An envelope without recipients.
	bad = harakaTar(t, "queue/1796198080.2", []byte("a@b\n\nSubject: x\n\n"))
	if _, err := ParseNullmailer(bad); err == nil || !strings.Contains(err.Error(), "recipient") {
		t.Errorf("no recipient: %v", err)
	}
}

// Captured from maddy 0.8.1 (ci/maddy, `maddy.sh queue`: a tar stream of
// its queue's ID.meta and ID.header files) with the fake MTA greylisting
// everything for an hour; see testdata/README.md.
func TestMaddy(t *testing.T) {
	es := parse(t, profile.QueueMaddy, "maddy-greylisted.tar", time.Time{})
	if len(es) != 3 {
		t.Fatalf("entries = %+v", es)
	}
	one := find(t, es, "75b7897e")
	first := time.Date(2026, 12, 2, 7, 55, 5, 145673237, time.UTC)
	last := time.Date(2026, 12, 2, 7, 55, 5, 228059224, time.UTC)
	if one.Sender != "sender+gh-1@client.greyharness.test" || !slices.Equal(one.Recipients, []string{"alice@rcpt.greyharness.test"}) ||
		one.MessageID != "mdcap-0001.20250101@client.test" || one.HarnessID != "gh-mdcap-0001" ||
		!one.Arrival.Equal(first) || !one.NextAttempt.Equal(last.Add(15*time.Minute)) ||
		one.Reason != "451 4.0.0 Greylisted, please try again in 3600 seconds" {
		t.Errorf("entry = %+v", one)
	}
	two := find(t, es, "68b2875f")
	if two.Sender != "sender+long.address.beyond.forty.chars@client.greyharness.test" ||
		!slices.Equal(two.Recipients, []string{"carol@rcpt.greyharness.test", "dave@other.greyharness.test"}) ||
		two.HarnessID != "gh-mdcap-0002" {
		t.Errorf("entry = %+v", two)
	}
	null := find(t, es, "7445060b")
	if null.Sender != "" || !slices.Equal(null.Recipients, []string{"postmaster@client.greyharness.test"}) ||
		null.MessageID != "mdcap-0003@relay" || null.HarnessID != "" {
		t.Errorf("null sender entry = %+v", null)
	}
	if es, err := ParseMaddy(nil); err != nil || len(es) != 0 {
		t.Errorf("no output: %v %v", es, err)
	}
}

// maddy's retry schedule (internal/target/queue/queue.go): 15 min times
// 1.25^(tries-1), the factor truncated to an integer.
func TestMaddyNextAttempt(t *testing.T) {
	last := time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)
	for tries, want := range map[int]time.Duration{1: 15 * time.Minute, 4: 15 * time.Minute, 5: 30 * time.Minute, 7: 45 * time.Minute} {
		meta := []byte(`{"MsgMeta":{"ID":"a1"},"From":"a@b","To":["c@d"],"TriesCount":{"c@d":` + strconv.Itoa(tries) + `},"FirstAttempt":"2026-12-02T08:00:00Z","LastAttempt":"2026-12-02T08:00:00Z"}`)
		es, err := ParseMaddy(harakaTar(t, "a1.meta", meta))
		if err != nil || len(es) != 1 {
			t.Fatalf("tries %d: %v %v", tries, es, err)
		}
		if !es[0].NextAttempt.Equal(last.Add(want)) {
			t.Errorf("tries %d: next attempt %v, want +%v", tries, es[0].NextAttempt, want)
		}
	}
}

func TestMaddyErrors(t *testing.T) {
	good := read(t, "maddy-greylisted.tar")
	if _, err := ParseMaddy(good[:700]); err == nil {
		t.Error("truncated archive accepted")
	}
	if _, err := ParseMaddy([]byte("{}\n")); err == nil {
		t.Error("bare JSON accepted")
	}
	bad := harakaTar(t, "a1.meta", []byte(`{"MsgMeta":`))
	if _, err := ParseMaddy(bad); err == nil || !strings.Contains(err.Error(), "a1.meta") {
		t.Errorf("broken JSON: %v", err)
	}
	bad = harakaTar(t, "a2.meta", []byte(`{"From":"a@b","To":["c@d"]}`))
	if _, err := ParseMaddy(bad); err == nil || !strings.Contains(err.Error(), "a2.meta") {
		t.Errorf("no MsgMeta.ID: %v", err)
	}
	// A header file without its .meta is a message being stored or removed: skipped.
	if es, err := ParseMaddy(harakaTar(t, "a3.header", []byte("Message-ID: <x@y>\r\n\r\n"))); err != nil || len(es) != 0 {
		t.Errorf("lone header: %v %v", es, err)
	}
}
