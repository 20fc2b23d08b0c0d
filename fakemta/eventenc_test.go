package fakemta

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta/dsn"
)

// encodeLine encodes ev as the journal does: hand-encoded when it can be,
// encoding/json otherwise.
func encodeLine(ev Event) ([]byte, bool) {
	tail, ok := appendEventTail(nil, &ev)
	if !ok {
		return nil, false
	}
	head, ok := appendEventHead(nil, ev.Seq, ev.Time)
	if !ok {
		return nil, false
	}
	return append(head, tail...), true
}

// nasty strings: escaping, HTML characters, control bytes, invalid UTF-8,
// JS line separators, multi-byte runes.
var nastyStrings = []string{
	"",
	"plain",
	`quote " backslash \ slash /`,
	"<tag> & ampersand",
	"ctl \x00\x01\x07\b\f\n\r\t\x1b\x1f\x7f end",
	"bad utf8 \xff\xfe \xc3\x28 \xe2\x82 \xf0\x9f\x98",
	"seps \u2028 \u2029 ok",
	"unicode ü 日本 😀 \ufffd",
	"MAIL FROM:<a@b.test> SIZE=10 BODY=8BITMIME",
	"RCPT TO:<\xe9t\xe9@example.test>",
	strings.Repeat("x\x80", 40),
}

func representativeEvents() []Event {
	utc := time.Date(2026, 11, 24, 17, 7, 56, 123456789, time.UTC)
	zoned := time.Date(2025, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -(7*3600+30*60)))
	local := time.Now() // monotonic reading and local zone
	report := &dsn.Report{ReportingMTA: "dns; relay.test", ArrivalDate: zoned,
		Recipients: []dsn.Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "x@y.test",
			DiagnosticCode: "smtp; 550 <x@y.test> & \"no\"", LastAttemptDate: utc}},
		OriginalMessageID: "<id@x>", OriginalSubject: "bad \xff subject"}
	var evs []Event
	for i, s := range nastyStrings {
		t := []time.Time{utc, zoned, local, time.Time{}.Add(time.Nanosecond)}[i%4]
		evs = append(evs,
			Event{Seq: uint64(i), Time: t, Kind: EventCommand, Conn: uint64(i * 7), Client: "127.0.0.1:" + s, TLS: i%2 == 0, Command: s},
			Event{Seq: 1 << 63, Time: t, Kind: EventReply, Conn: 1, Client: s, Reply: &Reply{Code: 250, Enhanced: s, Text: s}},
			Event{Seq: 2, Time: t, Kind: EventReply, Reply: &Reply{Dropped: true}},
			Event{Seq: 3, Time: t, Kind: EventReply, Reply: &Reply{Code: -5, Text: s, Dropped: i%3 == 0}},
			Event{Seq: 4, Time: t, Kind: EventConnect, Conn: 3, Client: "[::1]:25", Local: s},
			Event{Seq: 5, Time: t, Kind: EventClose, Conn: 3, Client: s, Note: s},
			Event{Seq: 6, Time: t, Kind: EventKind(s)},
			Event{Seq: 7, Time: t, Kind: EventControl, Note: s, Tenant: s},
			Event{Seq: 8, Time: t, Kind: EventTLS, TLS: true, Note: s},
		)
	}
	txs := []*Transaction{
		{},
		{MailFrom: "", Mail: Reply{Code: 250}},
		{Helo: "relay.test", MailFrom: "a@b.test", Mail: Reply{Code: 250, Enhanced: "2.1.0", Text: "Sender OK"},
			Rcpts: []RcptAttempt{}, Aborted: "rset"},
		{Helo: "h\xff<>", MailFrom: "a\"@b", Mail: Reply{Code: 451, Enhanced: "4.7.1", Text: "Greylisted\nline 2"},
			Rcpts: []RcptAttempt{{Addr: "x@y", Attempt: 1, Reply: Reply{Code: 451, Enhanced: "4.7.1", Text: "try later"}, Greylist: "deferred"},
				{Addr: "z\u2028@y", Attempt: 99, Reply: Reply{Code: 250}}},
			Data: &Reply{Dropped: true}, Aborted: "disconnect"},
		{MailFrom: "a@b", Mail: Reply{Code: 250, Enhanced: "2.1.0", Text: "Sender OK"},
			Rcpts: []RcptAttempt{{Addr: "b@c", Attempt: 2, Reply: Reply{Code: 250, Enhanced: "2.1.5", Text: "Recipient OK"}, Greylist: "passed", Key: "mx=127.0.0.2:25|127.0.0.0/24|a@b|<x\u2028>", BodyKey: "body=abc", WhitelistKey: "127.0.0.1 h\"elo"}}, MX: "127.0.0.2:2525",
			Data: &Reply{Code: 250, Enhanced: "2.0.0", Text: "OK: queued as m1-x"},
			Message: &Message{ID: "m1-x", MX: "127.0.0.3:2525", MessageID: "id@client.test", HarnessID: "gh-1", MailFrom: "a@b", RcptTo: []string{"b@c", "d<e>@f"},
				ReceivedAt: utc, Size: 1234, SHA256: strings.Repeat("ab", 32), Subject: "Hello \xff & <world>", Accepted: true, BodyPath: "/tmp/m1-x.eml"}},
		{MailFrom: "", Mail: Reply{Code: 250},
			Data:    &Reply{Code: 554, Text: "no"},
			Message: &Message{ID: "m2", RcptTo: []string{}, ReceivedAt: zoned}},
		{Message: &Message{ID: "m3"}}, // nil RcptTo, zero ReceivedAt
		{MailFrom: "", Message: &Message{ID: "m4", ReceivedAt: local, DSN: report}},                               // nested DSN: encoding/json
		{MailFrom: "", Message: &Message{ID: "m5", ReceivedAt: local, DSN: &dsn.Report{}}},                        // empty DSN
		{Message: &Message{ID: "m6", ReceivedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},                   // json refuses
		{Message: &Message{ID: "m7", ReceivedAt: time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)}},                      // json refuses
		{Message: &Message{ID: "m8", ReceivedAt: time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 30*3600))}}, // json refuses
	}
	for i, tx := range txs {
		evs = append(evs, Event{Seq: uint64(100 + i), Time: utc, Kind: EventTransaction, Conn: 9, Client: "10.0.0.1:2525", TLS: i%2 == 1, Transaction: tx})
	}
	evs = append(evs,
		Event{},
		Event{Seq: 1, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Kind: EventControl, Note: "year"},
		Event{Seq: 1, Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("", 23*3600+59*60)), Kind: EventControl},
	)
	return evs
}

// TestEventEncoderMatchesJSON: the hand encoder writes exactly what
// json.Encoder wrote before (byte for byte), or declines so that
// encoding/json does, and what it writes decodes to the same event.
func TestEventEncoderMatchesJSON(t *testing.T) {
	hand, fallback := 0, 0
	for i, ev := range representativeEvents() {
		want, werr := json.Marshal(ev)
		got, ok := encodeLine(ev)
		if !ok {
			fallback++
			continue
		}
		hand++
		if werr != nil {
			t.Errorf("event %d: hand-encoded an event json refuses (%v): %s", i, werr, got)
			continue
		}
		if !bytes.Equal(got, append(want, '\n')) {
			t.Errorf("event %d:\n got %s\nwant %s", i, got, want)
			continue
		}
		var back, orig Event
		if err := json.Unmarshal(got, &back); err != nil {
			t.Errorf("event %d: %v", i, err)
		}
		json.Unmarshal(want, &orig)
		if !reflect.DeepEqual(back, orig) {
			t.Errorf("event %d: round trip differs:\n%+v\n%+v", i, back, orig)
		}
	}
	if hand < 100 || fallback < 5 {
		t.Errorf("hand-encoded %d, fell back %d: the set no longer covers both paths", hand, fallback)
	}
}

// TestJournalFileMatchesJSON: every line the journal writes equals
// json.Marshal of the event Append returned, and reads back equal.
func TestJournalFileMatchesJSON(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	var appended []Event
	for i, ev := range representativeEvents() {
		ev.Seq = 0
		if i%3 == 0 {
			ev.Time = time.Time{} // stamped by the journal
		}
		if ev.Time.Year() > 9999 {
			continue // json refuses it: the journal would stop (tested below)
		}
		if tx := ev.Transaction; tx != nil && tx.Message != nil && (tx.Message.ReceivedAt.Year() > 9999 || tx.Message.ReceivedAt.Year() < 0 ||
			tx.Message.ReceivedAt.Format("Z07") == "+30") {
			continue
		}
		out, err := j.Append(ev, i%5 == 0)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		appended = append(appended, out)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for ; sc.Scan(); n++ {
		if n >= len(appended) {
			t.Fatalf("more lines than events")
		}
		want, _ := json.Marshal(appended[n])
		if !bytes.Equal(sc.Bytes(), want) {
			t.Errorf("line %d:\n got %s\nwant %s", n, sc.Bytes(), want)
		}
	}
	if n != len(appended) {
		t.Fatalf("%d lines for %d events", n, len(appended))
	}
	got, err := ReadJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		var orig Event
		b, _ := json.Marshal(appended[i])
		json.Unmarshal(b, &orig)
		if !reflect.DeepEqual(got[i], orig) {
			t.Errorf("event %d reads back as %+v, want %+v", i, got[i], orig)
		}
	}
}

// TestJournalRefusesUnencodableTime: an event json cannot encode stops the
// journal with an error, as json.Encoder did, and leaves no torn line.
func TestJournalRefusesUnencodableTime(t *testing.T) {
	dir := t.TempDir()
	j, err := openJournal(dir, 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(Event{Kind: EventControl, Note: "ok"}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Append(Event{Kind: EventControl, Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}, false); err == nil {
		t.Fatal("no error for a year json refuses")
	}
	j.Close()
	evs, err := ReadJournal(dir)
	if err != nil || len(evs) != 1 || evs[0].Note != "ok" {
		t.Fatalf("journal after the refused event: %+v, %v", evs, err)
	}
}

// FuzzEventEncoder: any strings encode as json.Marshal does.
func FuzzEventEncoder(f *testing.F) {
	for _, s := range nastyStrings {
		f.Add(s, s, 250, int64(1))
	}
	f.Fuzz(func(t *testing.T, a, b string, code int, nsec int64) {
		tm := time.Unix(0, nsec).In(time.FixedZone("", int(nsec%(18*3600))))
		evs := []Event{
			{Seq: uint64(code), Time: tm, Kind: EventCommand, Conn: 1, Client: a, Command: b},
			{Seq: 1, Time: tm, Kind: EventReply, Reply: &Reply{Code: code, Enhanced: a, Text: b}},
			{Seq: 2, Time: tm, Kind: EventTransaction, Transaction: &Transaction{Helo: a, MailFrom: b,
				Rcpts:   []RcptAttempt{{Addr: a, Attempt: code, Greylist: b}},
				Message: &Message{ID: a, Subject: b, RcptTo: []string{a, b}, ReceivedAt: tm}}},
		}
		for _, ev := range evs {
			want, werr := json.Marshal(ev)
			got, ok := encodeLine(ev)
			if !ok {
				if werr == nil {
					t.Fatalf("declined an event json encodes: %s", want)
				}
				continue
			}
			if werr != nil || !bytes.Equal(got, append(want, '\n')) {
				t.Fatalf("got %s\nwant %s (%v)", got, want, werr)
			}
		}
	})
}

// TestTimeCacheMatchesJSON: the journal's cached time formatting writes
// what time.Time's MarshalJSON does, across seconds, fractions with
// trailing zeros, zones and locations switching back and forth.
func TestTimeCacheMatchesJSON(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		ny = time.FixedZone("NY", -5*3600)
	}
	locs := []*time.Location{time.UTC, time.Local, ny, time.FixedZone("", 0), time.FixedZone("odd", 5*3600+45*60), time.FixedZone("neg", -(9*3600 + 30*60))}
	base := time.Date(2026, 3, 8, 6, 59, 58, 0, time.UTC) // around a DST change in New York
	nanos := []int{0, 1, 10, 100000, 120000000, 999999999, 500000000, 123456789, 100}
	var tc timeCache
	n := 0
	for step := 0; step < 400; step++ {
		tm := base.Add(time.Duration(step/len(locs)) * 250 * time.Millisecond).Add(time.Duration(nanos[step%len(nanos)]))
		tm = tm.In(locs[(step*7)%len(locs)])
		for _, x := range []time.Time{tm, tm, time.Now(), tm.Add(time.Nanosecond)} {
			want, werr := x.MarshalJSON()
			got, ok := tc.appendTime(nil, x)
			if ok != (werr == nil) || ok && !bytes.Equal(got, want) {
				t.Fatalf("%v: got %s (%v), want %s (%v)", x, got, ok, want, werr)
			}
			n++
		}
	}
	for _, x := range []time.Time{{}, time.Date(10000, 1, 1, 0, 0, 0, 5, time.UTC), time.Date(-3, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2000, 1, 1, 0, 0, 0, 0, time.FixedZone("", 24*3600))} {
		want, werr := x.MarshalJSON()
		got, ok := tc.appendTime(nil, x)
		if ok != (werr == nil) || ok && !bytes.Equal(got, want) {
			t.Fatalf("%v: got %s (%v), want %s (%v)", x, got, ok, want, werr)
		}
	}
}
