package dsn

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// utc builds a UTC time for expectations.
func utc(y int, mo time.Month, d, h, mi, s int) time.Time {
	return time.Date(y, mo, d, h, mi, s, 0, time.UTC)
}

// normalize puts every time in UTC so that reflect.DeepEqual compares
// instants, not zone pointers.
func normalize(r *Report) *Report {
	if r == nil {
		return nil
	}
	c := *r
	c.ArrivalDate = c.ArrivalDate.UTC()
	c.Recipients = append([]Recipient(nil), r.Recipients...)
	for i := range c.Recipients {
		c.Recipients[i].LastAttemptDate = c.Recipients[i].LastAttemptDate.UTC()
		c.Recipients[i].WillRetryUntil = c.Recipients[i].WillRetryUntil.UTC()
	}
	return &c
}

func assertReport(t *testing.T, got, want *Report) {
	t.Helper()
	g, w := normalize(got), normalize(want)
	if !reflect.DeepEqual(g, w) {
		t.Errorf("report mismatch\n got: %+v\nwant: %+v", g, w)
	}
}

// sampleWant is the exact report each sample in testdata must parse to.
var sampleWant = map[string]*Report{
	"postfix-failed.eml": {
		ReportingMTA: "mx.client.test",
		ArrivalDate:  utc(2026, 11, 24, 16, 25, 31),
		Recipients: []Recipient{{
			Action:            "failed",
			Status:            "5.1.1",
			FinalRecipient:    "failed@remote.test",
			OriginalRecipient: "failed@remote.test",
			DiagnosticCode:    "smtp; 550 5.1.1 <failed@remote.test>: Recipient address rejected: User unknown",
			RemoteMTA:         "127.0.0.1",
		}},
		OriginalMessageID: "pf-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-pf-failed-0001",
		OriginalSubject:   "greyharness probe pf-failed-0001",
	},
	"postfix-delayed.eml": {
		ReportingMTA: "mx.client.test",
		ArrivalDate:  utc(2026, 11, 24, 16, 25, 31),
		Recipients: []Recipient{{
			Action:            "delayed",
			Status:            "4.7.1",
			FinalRecipient:    "delayed@remote.test",
			OriginalRecipient: "delayed@remote.test",
			DiagnosticCode:    "smtp; 451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:         "127.0.0.1",
			WillRetryUntil:    utc(2026, 11, 24, 16, 25, 51),
		}},
		OriginalMessageID: "pf-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-pf-delayed-0001",
		OriginalSubject:   "greyharness probe pf-delayed-0001",
	},
	"exim-failed.eml": {
		ReportingMTA: "mx.exim.test",
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "5.0.0",
			FinalRecipient: "failed@remote.test",
			DiagnosticCode: "smtp; 550 5.1.1 <failed@remote.test>: Recipient address rejected: User unknown",
			RemoteMTA:      "127.0.0.1",
		}},
		OriginalMessageID: "exim-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-exim-failed-0001",
		OriginalSubject:   "greyharness probe exim-failed-0001",
	},
	"exim-delayed.eml": {
		ReportingMTA: "mx.exim.test",
		Recipients: []Recipient{{
			Action:         "delayed",
			Status:         "4.0.0",
			FinalRecipient: "delayed@remote.test",
			DiagnosticCode: "smtp; 451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:      "127.0.0.1",
		}},
		OriginalMessageID: "exim-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-exim-delayed-0001",
		OriginalSubject:   "greyharness probe exim-delayed-0001",
	},
	"exchange-failed.eml": {
		ReportingMTA: "EXCH01.contoso.test",
		ArrivalDate:  utc(2025, 1, 6, 7, 15, 40),
		Recipients: []Recipient{{
			Action:            "failed",
			Status:            "4.4.7",
			FinalRecipient:    "delayed@remote.test",
			OriginalRecipient: "delayed@remote.test",
			DiagnosticCode:    "smtp;400 4.4.7 Message delayed",
			RemoteMTA:         "mx.remote.test",
		}},
		OriginalMessageID: "exch-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-exch-failed-0001",
		OriginalSubject:   "greyharness probe exch-failed-0001 été", // RFC 2047, iso-8859-1
	},
	// OpenSMTPD 6.8: multipart/mixed (not multipart/report) with a
	// message/delivery-status part; Status is only the class; the
	// text/rfc822-headers part holds the whole original message.
	"opensmtpd-failed.eml": {
		ReportingMTA: "mx.osmtpd.test",
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "5.0.0",
			FinalRecipient: "failed@remote.test",
		}},
		OriginalMessageID: "osmtpd-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-osmtpd-failed-0001",
		OriginalSubject:   "greyharness probe osmtpd-failed-0001",
	},
	"opensmtpd-delayed.eml": {
		ReportingMTA: "mx.osmtpd.test",
		Recipients: []Recipient{{
			Action:         "delayed",
			Status:         "4.0.0",
			FinalRecipient: "delayed@remote.test",
		}},
		OriginalMessageID: "osmtpd-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-osmtpd-delayed-0001",
		OriginalSubject:   "greyharness probe osmtpd-delayed-0001",
	},
	// OpenSMTPD 6.8 at queue ttl: the message is dropped from the queue, but
	// the notice says Action: delayed with Status 4.4.7 ("Envelope expired").
	"opensmtpd-expired.eml": {
		ReportingMTA: "mx.osmtpd.test",
		Recipients: []Recipient{{
			Action:         "delayed",
			Status:         "4.4.7",
			FinalRecipient: "delayed@remote.test",
		}},
		OriginalMessageID: "osmtpd-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-osmtpd-delayed-0001",
		OriginalSubject:   "greyharness probe osmtpd-delayed-0001",
	},
	// nullmailer 2.2: multipart/report; Reporting-MTA typed x-local-hostname.
	"nullmailer-failed.eml": {
		ReportingMTA: "mx.nullmailer.test",
		ArrivalDate:  utc(2026, 12, 2, 4, 44, 8),
		Recipients: []Recipient{{
			Action:          "failed",
			Status:          "5.1.1",
			FinalRecipient:  "failed@remote.test",
			DiagnosticCode:  "SMTP; 550 5.1.1 <failed@remote.test>: Recipient address rejected: User unknown",
			RemoteMTA:       "127.0.0.1",
			LastAttemptDate: utc(2026, 12, 2, 4, 44, 8),
		}},
		OriginalMessageID: "nullmailer-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-nullmailer-failed-0001",
		OriginalSubject:   "greyharness probe nullmailer-failed-0001",
	},
	// nullmailer 2.2 at queuelifetime: the message is moved to failed/, but
	// the DSN says Action: delayed (the remote's 4.7.1 as Status).
	"nullmailer-expired.eml": {
		ReportingMTA: "mx.nullmailer.test",
		ArrivalDate:  utc(2026, 12, 2, 4, 44, 21),
		Recipients: []Recipient{{
			Action:          "delayed",
			Status:          "4.7.1",
			FinalRecipient:  "delayed@remote.test",
			DiagnosticCode:  "SMTP; 451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:       "127.0.0.1",
			LastAttemptDate: utc(2026, 12, 2, 4, 44, 21),
		}},
		OriginalMessageID: "nullmailer-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-nullmailer-delayed-0001",
		OriginalSubject:   "greyharness probe nullmailer-delayed-0001",
	},
	// Haraka 3.3.4: multipart/report without From, To or Subject; the
	// original Message-ID doubles as Original-Envelope-Id; no space after
	// "dns;" and "rfc822;"; an untyped Remote-MTA.
	"haraka-failed.eml": {
		ReportingMTA:       "mx.haraka.test",
		OriginalEnvelopeID: "<haraka-failed-0001.20250101@client.test>",
		ArrivalDate:        utc(2026, 12, 2, 4, 46, 47),
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "5.1.1",
			FinalRecipient: "failed@remote.test",
			DiagnosticCode: "smtp;550 5.1.1 <failed@remote.test>: Recipient address rejected: User unknown",
			RemoteMTA:      "127.0.0.1",
		}},
		OriginalMessageID: "haraka-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-haraka-failed-0001",
		OriginalSubject:   "greyharness probe haraka-failed-0001",
	},
	// Haraka 3.3.4 when temp_fail_intervals are used up: Action: failed, and
	// the remote's 4.7.1 turned into Status 5.7.1.
	"haraka-expired.eml": {
		ReportingMTA:       "mx.haraka.test",
		OriginalEnvelopeID: "<haraka-delayed-0001.20250101@client.test>",
		ArrivalDate:        utc(2026, 12, 2, 4, 46, 50),
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "5.7.1",
			FinalRecipient: "delayed@remote.test",
			DiagnosticCode: "smtp;451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:      "127.0.0.1",
		}},
		OriginalMessageID: "haraka-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-haraka-delayed-0001",
		OriginalSubject:   "greyharness probe haraka-delayed-0001",
	},
	// sendmail 8.17: multipart/report; the first part has no Content-Type;
	// "RFC822;" and "DNS;" in capitals, X-Actual-Recipient, the ENVID given
	// at submission as Original-Envelope-Id, an address literal as Remote-MTA.
	"sendmail-failed.eml": {
		ReportingMTA:       "mx.sendmail.test",
		OriginalEnvelopeID: "env-sendmail-failed-0001",
		ArrivalDate:        utc(2026, 12, 2, 4, 47, 48),
		Recipients: []Recipient{{
			Action:          "failed",
			Status:          "5.1.1",
			FinalRecipient:  "failed@remote.test",
			DiagnosticCode:  "SMTP; 550 5.1.1 <failed@remote.test>: Recipient address rejected: User unknown",
			RemoteMTA:       "[127.0.0.1]",
			LastAttemptDate: utc(2026, 12, 2, 4, 47, 48),
		}},
		OriginalMessageID: "sendmail-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-sendmail-failed-0001",
		OriginalSubject:   "greyharness probe sendmail-failed-0001",
	},
	"sendmail-delayed.eml": {
		ReportingMTA:       "mx.sendmail.test",
		OriginalEnvelopeID: "env-sendmail-delayed-0001",
		ArrivalDate:        utc(2026, 12, 2, 4, 47, 52),
		Recipients: []Recipient{{
			Action:          "delayed",
			Status:          "4.7.1",
			FinalRecipient:  "delayed@remote.test",
			DiagnosticCode:  "SMTP; 451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:       "[127.0.0.1]",
			LastAttemptDate: utc(2026, 12, 2, 4, 47, 57),
		}},
		OriginalMessageID: "sendmail-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-sendmail-delayed-0001",
		OriginalSubject:   "greyharness probe sendmail-delayed-0001",
	},
	// maddy 0.8.1: the original headers come as message/rfc822-headers (a
	// type no RFC defines) and the DSN has no In-Reply-To or References, so
	// that part is the only link to the original message; the status
	// fields are in reverse order, Last-Attempt-Date sits in the
	// per-message group (not returned), the remote's 5.1.1 becomes 5.0.0.
	"maddy-failed.eml": {
		ReportingMTA: "mx.maddy.test",
		ArrivalDate:  utc(2026, 12, 2, 5, 13, 53),
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "5.0.0",
			FinalRecipient: "failed@remote.test",
			DiagnosticCode: "smtp; 550 5.0.0 <failed@remote.test>: Recipient address rejected: User unknown",
		}},
		OriginalMessageID: "maddy-failed-0001.20250101@client.test",
		OriginalHarnessID: "gh-maddy-failed-0001",
		OriginalSubject:   "greyharness probe maddy-failed-0001",
	},
	// maddy 0.8.1 with max_tries 1 after one 451 4.7.1: Action: failed,
	// Status 4.0.0.
	"maddy-expired.eml": {
		ReportingMTA: "mx.maddy.test",
		ArrivalDate:  utc(2026, 12, 2, 5, 13, 59),
		Recipients: []Recipient{{
			Action:         "failed",
			Status:         "4.0.0",
			FinalRecipient: "delayed@remote.test",
			DiagnosticCode: "smtp; 451 4.0.0 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
		}},
		OriginalMessageID: "maddy-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-maddy-delayed-0001",
		OriginalSubject:   "greyharness probe maddy-delayed-0001",
	},
	// sendmail 8.17 at Timeout.queuereturn: Action: failed, Status: 4.4.7.
	"sendmail-expired.eml": {
		ReportingMTA:       "mx.sendmail.test",
		OriginalEnvelopeID: "env-sendmail-delayed-0001",
		ArrivalDate:        utc(2026, 12, 2, 4, 47, 52),
		Recipients: []Recipient{{
			Action:          "failed",
			Status:          "4.4.7",
			FinalRecipient:  "delayed@remote.test",
			DiagnosticCode:  "SMTP; 451 4.7.1 <delayed@remote.test>: Recipient address rejected: Greylisted, try again later",
			RemoteMTA:       "[127.0.0.1]",
			LastAttemptDate: utc(2026, 12, 2, 4, 48, 22),
		}},
		OriginalMessageID: "sendmail-delayed-0001.20250101@client.test",
		OriginalHarnessID: "gh-sendmail-delayed-0001",
		OriginalSubject:   "greyharness probe sendmail-delayed-0001",
	},
}

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func toLF(b []byte) []byte   { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }
func toCRLF(b []byte) []byte { return bytes.ReplaceAll(toLF(b), []byte("\n"), []byte("\r\n")) }

func TestParseSamples(t *testing.T) {
	for name, want := range sampleWant {
		raw := readSample(t, name)
		for _, v := range []struct {
			ending string
			data   []byte
		}{{"as-saved", raw}, {"LF", toLF(raw)}, {"CRLF", toCRLF(raw)}} {
			t.Run(name+"/"+v.ending, func(t *testing.T) {
				got, err := Parse(bytes.NewReader(v.data))
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				assertReport(t, got, want)
			})
		}
	}
}

// TestSamplesCovered keeps sampleWant and testdata in step.
func TestSamplesCovered(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(sampleWant) {
		t.Fatalf("testdata has %d .eml files, sampleWant has %d", len(files), len(sampleWant))
	}
	for _, f := range files {
		if sampleWant[filepath.Base(f)] == nil {
			t.Errorf("%s has no expected report", f)
		}
	}
}

func TestParseNotDSN(t *testing.T) {
	cases := map[string]string{
		"plain text": "From: a@b\r\nSubject: hi\r\n\r\nhello\r\n",
		"no header":  "",
		"multipart/mixed without a status part": "Content-Type: multipart/mixed; boundary=x\r\n\r\n" +
			"--x\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
			"--x\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <m1@x>\r\n\r\n--x--\r\n",
		// A forwarded DSN is a message about a DSN, not a DSN: only a
		// top-level status part counts.
		"DSN forwarded as message/rfc822": "Content-Type: multipart/mixed; boundary=x\r\n\r\n" +
			"--x\r\nContent-Type: text/plain\r\n\r\nFYI\r\n" +
			"--x\r\nContent-Type: message/rfc822\r\n\r\n" +
			"Content-Type: multipart/report; report-type=delivery-status; boundary=y\r\n\r\n" +
			"--y\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; a\r\n\r\n" +
			"Final-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--y--\r\n" +
			"--x--\r\n",
		"single-part delivery-status": "Content-Type: message/delivery-status\r\n\r\n" +
			"Reporting-MTA: dns; a\r\n\r\nFinal-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n",
		"MDN report with a status part": "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n" +
			"--x\r\nContent-Type: message/delivery-status\r\n\r\n" +
			"Final-Recipient: rfc822; b@c\r\nAction: failed\r\nStatus: 5.0.0\r\n\r\n--x--\r\n",
		"MDN report": "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n" +
			"--x\r\nContent-Type: text/plain\r\n\r\nread\r\n--x--\r\n",
		"report without report-type": "Content-Type: multipart/report; boundary=x\r\n\r\n--x--\r\n",
		"bad media params":           "Content-Type: multipart/report; report-type=delivery-status; boundary=\"x\r\n\r\n",
	}
	for name, msg := range cases {
		t.Run(name, func(t *testing.T) {
			rep, err := Parse(strings.NewReader(msg))
			if !errors.Is(err, ErrNotDSN) {
				t.Fatalf("err = %v, want ErrNotDSN", err)
			}
			if rep != nil {
				t.Errorf("report = %+v, want nil", rep)
			}
		})
	}
}

func TestParseMalformedKeepsPartialReport(t *testing.T) {
	// A report whose status part is missing: the returned headers still name
	// the message, for a "bad DSN" verdict.
	msg := "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
		"--b\nContent-Type: text/plain\n\nsorry\n" +
		"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <m1@x>\nX-Greyharness-Id: gh-1\n\n--b--\n"
	rep, err := Parse(strings.NewReader(msg))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
	assertReport(t, rep, &Report{OriginalMessageID: "m1@x", OriginalHarnessID: "gh-1"})

	// A status part without any per-recipient group.
	msg = "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
		"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.a\n\n--b--\n"
	rep, err = Parse(strings.NewReader(msg))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
	assertReport(t, rep, &Report{ReportingMTA: "mx.a"})

	// OpenSMTPD's layout (multipart/mixed) with a status part that has no
	// per-recipient group: a DSN, and a broken one.
	msg = "Content-Type: multipart/mixed; boundary=b\n\n" +
		"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.a\n\n" +
		"--b\nContent-Type: text/rfc822-headers\n\nMessage-ID: <m2@x>\n\n--b--\n"
	rep, err = Parse(strings.NewReader(msg))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("multipart/mixed: err = %v, want ErrMalformed", err)
	}
	assertReport(t, rep, &Report{ReportingMTA: "mx.a", OriginalMessageID: "m2@x"})

	// An unreadable top-level header.
	if _, err := Parse(strings.NewReader(" leading continuation\r\n\r\n")); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
}

func TestParseTooLarge(t *testing.T) {
	head := "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
	r := io.MultiReader(strings.NewReader(head), io.LimitReader(zeros{}, MaxMessageBytes))
	if _, err := Parse(r); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	return len(p), nil
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestParseReadError(t *testing.T) {
	_, err := Parse(failingReader{})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("err = %v, want the read error", err)
	}
}

// TestParseQuirks covers layouts seen in the wild that the samples do not:
// several recipients, typed addresses in angle brackets, status comments,
// junk lines, base64 and unknown charsets, truncation, and the
// In-Reply-To/References fallback.
func TestParseQuirks(t *testing.T) {
	tests := []struct {
		name string
		msg  string
		want *Report
	}{{
		name: "two recipients, comments, brackets, blank-ish separators",
		msg: "Content-Type: Multipart/Report; Report-Type=\"Delivery-Status\"; boundary=\"b\"\n\n" +
			"preamble\n--b\nContent-Type: message/delivery-status\n\n" +
			"\n  \nReporting-MTA: dns; mx.a.test\nOriginal-Envelope-Id: ENV-1\n" +
			"Arrival-Date: Mon, 6 Jan 2025 07:15:40 -0500\n\n" +
			"Final-Recipient: RFC822; <one@x.test>\nAction: Failed\nStatus: 5.0.0 (permanent failure)\n" +
			"Last-Attempt-Date: Mon, 6 Jan 2025 07:16:00 -0500\n\n\n" +
			"Final-Recipient: rfc822;two@x.test\nAction: DELAYED\nStatus: 4.4.1\n" +
			"Diagnostic-Code: X-Postfix;\n connect to mx.x.test[192.0.2.1]:25:\n\tConnection refused\n" +
			"--b--\n",
		want: &Report{
			ReportingMTA:       "mx.a.test",
			OriginalEnvelopeID: "ENV-1",
			ArrivalDate:        utc(2025, 1, 6, 12, 15, 40),
			Recipients: []Recipient{
				{Action: "failed", Status: "5.0.0", FinalRecipient: "one@x.test", LastAttemptDate: utc(2025, 1, 6, 12, 16, 0)},
				{Action: "delayed", Status: "4.4.1", FinalRecipient: "two@x.test",
					DiagnosticCode: "X-Postfix; connect to mx.x.test[192.0.2.1]:25: Connection refused"},
			},
		},
	}, {
		name: "malformed line skips rest of its group only",
		msg: "Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n" +
			"--b\r\nContent-Type: message/delivery-status\r\n\r\n" +
			"Reporting-MTA: dns; mx.a.test\r\nthis line has no colon\r\nArrival-Date: junk\r\n\r\n" +
			"Final-Recipient: rfc822; one@x.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n" +
			"--b--\r\n",
		want: &Report{
			ReportingMTA: "mx.a.test",
			Recipients:   []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "one@x.test"}},
		},
	}, {
		name: "base64 status, unknown charsets, encoded subject in unknown charset",
		msg: "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: text/plain; charset=x-no-such-charset\n\n\xff\xfe\n" +
			"--b\nContent-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n" +
			"UmVwb3J0aW5nLU1UQTogZG5zOyBteC5iNjQudGVzdAoKRmluYWwtUmVjaXBpZW50OiByZmM4\n" +
			"MjI7IGJAeC50ZXN0CkFjdGlvbjogZmFpbGVkClN0YXR1czogNS4xLjEK\n" +
			"--b\nContent-Type: text/rfc822-headers; charset=x-no-such-charset\n\n" +
			"Subject: =?x-no-such-charset?Q?caf=E9?=\nMessage-Id: <q@x>\n\n" +
			"--b--\n",
		want: &Report{
			ReportingMTA:      "mx.b64.test",
			Recipients:        []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "q@x",
			OriginalSubject:   "=?x-no-such-charset?Q?caf=E9?=",
		},
	}, {
		name: "known legacy charset part and quoted-printable returned headers",
		msg: "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: message/delivery-status\n\n" +
			"Reporting-MTA: dns; mx.a.test\n\nFinal-Recipient: rfc822; b@x.test\nAction: failed\nStatus: 5.1.1\n\n" +
			"--b\nContent-Type: text/rfc822-headers; charset=windows-1252\nContent-Transfer-Encoding: quoted-printable\n\n" +
			"Subject: caf=E9 =80\nMessage-Id: <q@x>\n\n" +
			"--b--\n",
		want: &Report{
			ReportingMTA:      "mx.a.test",
			Recipients:        []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "q@x",
			OriginalSubject:   "café €",
		},
	}, {
		name: "truncated after the status part, id from References",
		msg: "References: <older@x> <orig@client.test>\n" +
			"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: message/delivery-status\n\n" +
			"Reporting-MTA: dns; mx.a.test\n\nFinal-Recipient: rfc822; b@x.test\nAction: delayed\nStatus: 4.7.1\n",
		want: &Report{
			ReportingMTA:      "mx.a.test",
			Recipients:        []Recipient{{Action: "delayed", Status: "4.7.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "orig@client.test",
		},
	}, {
		name: "multipart/mixed with a status part after other attachments",
		msg: "Content-Type: multipart/mixed; boundary=b\n\n" +
			"--b\nContent-Type: text/html\n\n<p>sorry</p>\n" +
			"--b\nContent-Type: message/rfc822\n\nMessage-ID: <orig@client.test>\nSubject: s\n\nbody\n" +
			"--b\nContent-Type: message/delivery-status\n\n" +
			"Reporting-MTA: dns; mx.a.test\n\nFinal-Recipient: rfc822; b@x.test\nAction: failed\nStatus: 5.1.1\n\n" +
			"--b--\n",
		want: &Report{
			ReportingMTA:      "mx.a.test",
			Recipients:        []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "orig@client.test",
			OriginalSubject:   "s",
		},
	}, {
		name: "multipart/report without report-type, global status part",
		msg: "In-Reply-To: <irt@client.test>\nContent-Type: multipart/report; boundary=b\n\n" +
			"--b\nContent-Type: message/global-delivery-status\n\n" +
			"Final-Recipient: utf-8; b@x.test\nAction: delayed\nStatus: 4.4.7\n\n--b--\n",
		want: &Report{
			Recipients:        []Recipient{{Action: "delayed", Status: "4.4.7", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "irt@client.test",
		},
	}, {
		name: "In-Reply-To preferred over References",
		msg: "In-Reply-To: <irt@client.test>\nReferences: <other@x>\n" +
			"Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: message/delivery-status\n\n" +
			"Final-Recipient: rfc822; b@x.test\nAction: failed\nStatus: 5.1.1\n\n--b--\n",
		want: &Report{
			Recipients:        []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "irt@client.test",
		},
	}, {
		name: "RFC 6533 global delivery status with utf-8 addresses",
		msg: "Content-Type: multipart/report; report-type=global-delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: message/global-delivery-status\n\n" +
			"Reporting-MTA: dns; mx.a.test\n\n" +
			"Original-Recipient: utf-8; j\\x{00F6}rg@b\\x{00FC}cher.test\n" +
			"Final-Recipient: utf-8; jörg@bücher.test\nAction: failed\nStatus: 5.1.1\n\n" +
			"--b\nContent-Type: message/global-headers\n\n" +
			"Message-ID: <g@x>\nSubject: Grüße\nX-Greyharness-Id: gh-g\n\n" +
			"--b--\n",
		want: &Report{
			ReportingMTA: "mx.a.test",
			Recipients: []Recipient{{Action: "failed", Status: "5.1.1",
				FinalRecipient: "jörg@bücher.test", OriginalRecipient: "jörg@bücher.test"}},
			OriginalMessageID: "g@x",
			OriginalHarnessID: "gh-g",
			OriginalSubject:   "Grüße",
		},
	}, {
		name: "returned message with leading blank line and bare Message-ID",
		msg: "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n" +
			"--b\nContent-Type: message/delivery-status\n\n" +
			"Final-Recipient: rfc822; b@x.test\nAction: failed\nStatus: 5.1.1\n\n" +
			"--b\nContent-Type: message/rfc822\n\n\nMessage-ID: bare-id@x\nSubject:\n  folded\n  subject\n\nbody\n" +
			"--b--\n",
		want: &Report{
			Recipients:        []Recipient{{Action: "failed", Status: "5.1.1", FinalRecipient: "b@x.test"}},
			OriginalMessageID: "bare-id@x",
			OriginalSubject:   "folded subject",
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.msg))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			assertReport(t, got, tt.want)
		})
	}
}

func TestStripType(t *testing.T) {
	for in, want := range map[string]string{
		"rfc822; a@b":           "a@b",
		"rfc822;a@b":            "a@b",
		" RFC822 ; <a@b> ":      "a@b",
		"a@b":                   "a@b",
		"dns; mx.example":       "mx.example",
		`"a;b"@c`:               `"a;b"@c`,
		"utf-8; \\x{41}\\x{zz}": "A\\x{zz}",
		"utf-8; \\x{41":         "\\x{41",
		"":                      "",
	} {
		if got := stripType(in); got != want {
			t.Errorf("stripType(%q) = %q, want %q", in, got, want)
		}
	}
}
