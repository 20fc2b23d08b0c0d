package dsn

import (
	"bufio"
	"bytes"
	"io"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

var origHeaders = []byte("Return-Path: <sender@client.test>\n" +
	"From: Sender <sender@client.test>\n" +
	"To: <greylisted@remote.test>\n" +
	"Subject: =?utf-8?q?greyharness_probe_=C3=A9t=C3=A9?=\n" +
	"Message-ID: <probe-42@client.test>\n" +
	"X-Greyharness-Id: gh-42\n")

func failedNotice() Notice {
	return Notice{
		ReportingMTA: "relay.sample.test",
		From:         "Mail Delivery System <MAILER-DAEMON@relay.sample.test>",
		To:           "sender@client.test",
		Date:         time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("", -5*3600)),
		ArrivalDate:  time.Date(2025, 3, 4, 5, 0, 0, 0, time.UTC),
		EnvelopeID:   "ENV-42",
		MessageID:    "<dsn-1@relay.sample.test>",
		Recipients: []Recipient{{
			Action:            "Failed",
			Status:            "5.1.1",
			FinalRecipient:    "greylisted@remote.test",
			OriginalRecipient: "Greylisted@Remote.test",
			DiagnosticCode: "smtp; 550 5.1.1 <greylisted@remote.test>: Recipient address rejected: " +
				"User unknown in virtual mailbox table; see https://remote.test/policy/a-very-long-url-without-spaces-at-all-0123456789",
			RemoteMTA:       "mx.remote.test",
			LastAttemptDate: time.Date(2025, 3, 4, 5, 6, 0, 0, time.UTC),
		}, {
			Action:         "delayed",
			Status:         "4.7.1",
			FinalRecipient: "later@remote.test",
			DiagnosticCode: "smtp; 451 4.7.1  two  spaces\tand a tab are kept",
			WillRetryUntil: time.Date(2025, 3, 9, 5, 0, 0, 0, time.UTC),
		}},
		OriginalHeaders: origHeaders,
		OriginalBody:    []byte("line one\nline two\n"),
		ReturnFull:      true,
	}
}

// wantFromNotice is what Parse must return for Build(n).
func wantFromNotice(n Notice) *Report {
	r := &Report{
		ReportingMTA:       n.ReportingMTA,
		OriginalEnvelopeID: n.EnvelopeID,
		ArrivalDate:        n.ArrivalDate,
	}
	for _, rc := range n.Recipients {
		rc.Action = strings.ToLower(rc.Action)
		r.Recipients = append(r.Recipients, rc)
	}
	return r
}

func TestBuildParseRoundTrip(t *testing.T) {
	full := failedNotice()

	headersOnly := failedNotice()
	headersOnly.ReturnFull = false
	headersOnly.Recipients = headersOnly.Recipients[1:]
	headersOnly.HumanText = "Custom text with ünïcödé and a " + strings.Repeat("x", 1200) + " long line\n"

	bare := Notice{
		ReportingMTA: "relay.sample.test",
		To:           "sender@client.test",
		Recipients:   []Recipient{{Action: "delivered", Status: "2.0.0", FinalRecipient: "ok@remote.test"}},
	}

	global := failedNotice()
	global.Recipients = []Recipient{{
		Action: "failed", Status: "5.1.1",
		FinalRecipient: "jörg@bücher.test", OriginalRecipient: "jörg@bücher.test",
		DiagnosticCode: "smtp; 550 5.1.1 unbekannter Empfänger",
	}}

	tests := []struct {
		name      string
		n         Notice
		subject   string
		statusTyp string
		origTyp   string
	}{
		{"failed, full message returned", full, SubjectFailed, "message/delivery-status", "message/rfc822"},
		{"delayed, headers returned", headersOnly, SubjectDelayed, "message/delivery-status", "text/rfc822-headers"},
		{"delivered, nothing returned", bare, SubjectDelivered, "message/delivery-status", ""},
		{"utf-8 addresses", global, SubjectFailed, "message/global-delivery-status", "message/rfc822"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Build(tt.n)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			checkWireFormat(t, b)

			got, err := Parse(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("Parse(Build(n)): %v\n%s", err, b)
			}
			want := wantFromNotice(tt.n)
			if len(tt.n.OriginalHeaders) > 0 {
				want.OriginalMessageID = "probe-42@client.test"
				want.OriginalHarnessID = "gh-42"
				want.OriginalSubject = "greyharness probe été"
			}
			assertReport(t, got, want)

			// Top-level header, as any mail reader sees it.
			m, err := mail.ReadMessage(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("net/mail: %v", err)
			}
			if s := m.Header.Get("Subject"); s != tt.subject {
				t.Errorf("Subject = %q, want %q", s, tt.subject)
			}
			wantFrom := tt.n.From
			if wantFrom == "" {
				wantFrom = "Mail Delivery System <MAILER-DAEMON@relay.sample.test>"
			}
			for k, want := range map[string]string{
				"From": wantFrom, "To": tt.n.To, "MIME-Version": "1.0", "Auto-Submitted": "auto-replied",
			} {
				if got := m.Header.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			if tt.n.MessageID != "" && m.Header.Get("Message-Id") != "<dsn-1@relay.sample.test>" {
				t.Errorf("Message-ID = %q", m.Header.Get("Message-Id"))
			}
			if !strings.HasPrefix(m.Header.Get("Message-Id"), "<") || !strings.Contains(m.Header.Get("Message-Id"), "@relay.sample.test>") {
				t.Errorf("Message-ID = %q", m.Header.Get("Message-Id"))
			}
			d, err := m.Header.Date()
			if err != nil {
				t.Fatalf("Date: %v", err)
			}
			if !tt.n.Date.IsZero() && !d.Equal(tt.n.Date) {
				t.Errorf("Date = %v, want %v", d, tt.n.Date)
			}

			// MIME structure.
			types, texts := partTypes(t, b)
			wantTypes := []string{"text/plain", tt.statusTyp}
			if tt.origTyp != "" {
				wantTypes = append(wantTypes, tt.origTyp)
			}
			if strings.Join(types, ",") != strings.Join(wantTypes, ",") {
				t.Errorf("parts = %v, want %v", types, wantTypes)
			}
			if tt.n.HumanText != "" && texts[0] != string(crlf([]byte(tt.n.HumanText))) {
				t.Errorf("human text = %q, want %q", texts[0], tt.n.HumanText)
			}
			if tt.n.ReturnFull && !strings.HasSuffix(texts[2], "\r\n\r\nline one\r\nline two\r\n") {
				t.Errorf("returned message does not end with the body: %q", texts[2])
			}
		})
	}
}

// checkWireFormat asserts CRLF everywhere and no line over 998 octets.
func checkWireFormat(t *testing.T, b []byte) {
	t.Helper()
	for i, l := range bytes.Split(b, []byte("\r\n")) {
		if bytes.ContainsAny(l, "\r\n") {
			t.Fatalf("line %d has a bare CR or LF: %q", i+1, l)
		}
		if len(l) > 998 {
			t.Fatalf("line %d is %d octets long", i+1, len(l))
		}
	}
}

// partTypes returns the media types and decoded bodies of the report's parts.
func partTypes(t *testing.T, b []byte) (types, bodies []string) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := e.Header.ContentType()
	if mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %s %v", mt, params)
	}
	mr := e.MultipartReader()
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return types, bodies
		}
		if err != nil {
			t.Fatal(err)
		}
		pt, _, _ := p.Header.ContentType()
		body, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, pt)
		bodies = append(bodies, string(body))
	}
}

func TestBuildDefaults(t *testing.T) {
	n := Notice{
		ReportingMTA: "relay.sample.test",
		To:           "sender@client.test",
		Recipients:   []Recipient{{Action: "delayed", Status: "4.7.1", FinalRecipient: "x@remote.test", DiagnosticCode: "smtp; 451 4.7.1 greylisted"}},
	}
	before := time.Now().Add(-time.Second)
	b1, err := Build(n)
	if err != nil {
		t.Fatal(err)
	}
	b2, err := Build(n)
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := mail.ReadMessage(bytes.NewReader(b1))
	m2, _ := mail.ReadMessage(bytes.NewReader(b2))
	if m1.Header.Get("Message-Id") == m2.Header.Get("Message-Id") {
		t.Errorf("two DSNs share Message-ID %q", m1.Header.Get("Message-Id"))
	}
	if d, err := m1.Header.Date(); err != nil || d.Before(before) || d.After(time.Now().Add(time.Second)) {
		t.Errorf("Date = %v, %v; want now", d, err)
	}
	_, texts := partTypes(t, b1)
	for _, want := range []string{"relay.sample.test", "WARNING", "<x@remote.test>: delayed 4.7.1 (smtp; 451 4.7.1 greylisted)"} {
		if !strings.Contains(texts[0], want) {
			t.Errorf("default human text lacks %q:\n%s", want, texts[0])
		}
	}
}

func TestBuildRejects(t *testing.T) {
	ok := Notice{
		ReportingMTA: "relay.sample.test",
		To:           "sender@client.test",
		Recipients:   []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "x@remote.test"}},
	}
	if _, err := Build(ok); err != nil {
		t.Fatalf("valid notice: %v", err)
	}
	cases := map[string]func(n *Notice){
		"no reporting MTA":     func(n *Notice) { n.ReportingMTA = "" },
		"spaced reporting MTA": func(n *Notice) { n.ReportingMTA = "a b" },
		"null sender":          func(n *Notice) { n.To = "" },
		"no recipients":        func(n *Notice) { n.Recipients = nil },
		"no final recipient":   func(n *Notice) { n.Recipients[0].FinalRecipient = " " },
		"bad action":           func(n *Notice) { n.Recipients[0].Action = "bounced" },
		"bad status":           func(n *Notice) { n.Recipients[0].Status = "550" },
		"status class 3":       func(n *Notice) { n.Recipients[0].Status = "3.0.0" },
		"header injection To":  func(n *Notice) { n.To = "a@b\r\nBcc: victim@c" },
		"LF in diagnostic":     func(n *Notice) { n.Recipients[0].DiagnosticCode = "smtp; 550\nAction: delivered" },
		"invalid utf-8":        func(n *Notice) { n.Recipients[0].FinalRecipient = "\xff@b" },
		"NUL in envelope id":   func(n *Notice) { n.EnvelopeID = "a\x00b" },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			n := ok
			n.Recipients = append([]Recipient(nil), ok.Recipients...)
			mutate(&n)
			if b, err := Build(n); err == nil {
				t.Fatalf("Build accepted it:\n%s", b)
			}
		})
	}
}

func TestFold(t *testing.T) {
	long := "smtp; 550 5.1.1 " + strings.Repeat("word ", 40) + "end"
	for _, v := range []string{"short", long, strings.Repeat("x", 200), "a  b " + strings.Repeat("y", 100) + " c"} {
		f := fold("Diagnostic-Code", v)
		sc := bufio.NewScanner(strings.NewReader(f))
		for sc.Scan() {
			if l := sc.Text(); len(l) > foldWidth+1 && strings.Contains(strings.TrimSpace(l), " ") && v == long {
				t.Errorf("line not folded: %q", l)
			}
		}
		// Unfold as RFC 5322 (and textproto) does: join lines with one space.
		unfolded := strings.TrimSuffix(strings.ReplaceAll(f, "\r\n ", " "), "\r\n")
		if unfolded != "Diagnostic-Code: "+v {
			t.Errorf("fold did not round-trip:\n%q\n%q", unfolded, v)
		}
	}
}
