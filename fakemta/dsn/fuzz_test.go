package dsn

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary bytes to the parser. It calls parse directly
// (Parse's recover would hide a panic) and checks Parse's contract: a nil
// error always comes with at least one recipient, ErrNotDSN with no report.
// Seeds: every sample in testdata and a built DSN.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b := readSample(f, filepath.Base(name))
		f.Add(b)
		f.Add(toLF(b))
	}
	built, err := Build(failedNotice())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(built)
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := parse(data)
		switch {
		case err == nil:
			if rep == nil || len(rep.Recipients) == 0 {
				t.Fatalf("nil error with report %+v", rep)
			}
		case errors.Is(err, ErrNotDSN):
			if rep != nil {
				t.Fatalf("ErrNotDSN with report %+v", rep)
			}
		case !errors.Is(err, ErrMalformed):
			t.Fatalf("unexpected error kind: %v", err)
		}
		// The public entry point agrees.
		rep2, err2 := Parse(bytes.NewReader(data))
		if (err == nil) != (err2 == nil) || (rep == nil) != (rep2 == nil) {
			t.Fatalf("Parse and parse disagree: %v / %v", err, err2)
		}
	})
}

// FuzzBuildRoundTrip checks Parse(Build(n)) == n for arbitrary field values
// that Build accepts.
func FuzzBuildRoundTrip(f *testing.F) {
	f.Add("relay.test", "sender@client.test", "ENV-1", "failed", "5.1.1", "a@remote.test", "A@remote.test",
		"smtp; 550 5.1.1 user unknown", "mx.remote.test", "<m@x>", "gh-1", "subject", true)
	f.Add("relay.test", "s@c", "", "delayed", "4.7.1", "jörg@bücher.test", "",
		"smtp; 451 4.7.1 "+strings.Repeat("greylisted ", 30), "", "", "", "=?utf-8?q?caf=C3=A9?=", false)
	f.Fuzz(func(t *testing.T, mta, to, envID, action, status, final, orig, diag, remote, msgID, ghID, subject string, full bool) {
		n := Notice{
			ReportingMTA: mta,
			To:           to,
			Date:         time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
			ArrivalDate:  time.Date(2025, 1, 2, 3, 0, 0, 0, time.UTC),
			EnvelopeID:   envID,
			Recipients: []Recipient{{
				Action: action, Status: status, FinalRecipient: final, OriginalRecipient: orig,
				DiagnosticCode: diag, RemoteMTA: remote,
				WillRetryUntil: time.Date(2025, 1, 7, 3, 0, 0, 0, time.UTC),
			}},
			OriginalHeaders: []byte("Message-ID: " + msgID + "\r\nX-Greyharness-Id: " + ghID + "\r\nSubject: " + subject + "\r\n"),
			OriginalBody:    []byte("body\r\n"),
			ReturnFull:      full,
		}
		b, err := Build(n)
		if err != nil {
			return // invalid notice, rejected: fine
		}
		rep, err := Parse(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("Parse(Build(n)): %v\n%s", err, b)
		}
		r := rep.Recipients[0]
		trim := strings.TrimSpace
		// Values Build writes unchanged must come back unchanged. Leading
		// and trailing blanks are not significant in header fields.
		checks := []struct{ field, got, want string }{
			{"ReportingMTA", rep.ReportingMTA, mta},
			{"EnvelopeID", rep.OriginalEnvelopeID, trim(envID)},
			{"Action", r.Action, strings.ToLower(action)},
			{"Status", r.Status, status},
		}
		if simple(final) {
			checks = append(checks, struct{ field, got, want string }{"FinalRecipient", r.FinalRecipient, trim(final)})
		}
		if simple(orig) {
			checks = append(checks, struct{ field, got, want string }{"OriginalRecipient", r.OriginalRecipient, trim(orig)})
		}
		if simple(remote) {
			checks = append(checks, struct{ field, got, want string }{"RemoteMTA", r.RemoteMTA, trim(remote)})
		}
		if !strings.ContainsAny(envID, "\t") && !strings.Contains(trim(envID), "  ") {
			checks = append(checks, struct{ field, got, want string }{"EnvelopeID", rep.OriginalEnvelopeID, trim(envID)})
		}
		if !strings.Contains(diag, "\t") {
			checks = append(checks, struct{ field, got, want string }{"DiagnosticCode", r.DiagnosticCode, trim(diag)})
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s = %q, want %q\n%s", c.field, c.got, c.want, b)
			}
		}
		if !r.WillRetryUntil.Equal(n.Recipients[0].WillRetryUntil) || !rep.ArrivalDate.Equal(n.ArrivalDate) {
			t.Errorf("dates did not round-trip: %v %v", r.WillRetryUntil, rep.ArrivalDate)
		}
	})
}

// simple reports whether an address or MTA name has none of the characters
// that Parse treats as syntax (type separator, brackets, xtext escapes).
func simple(s string) bool {
	return !strings.ContainsAny(s, ";<>\\\t") && !strings.Contains(strings.TrimSpace(s), "  ")
}
