package dsn

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Subjects Build writes, chosen by the recipients' actions.
const (
	SubjectFailed    = "Undelivered Mail Returned to Sender"
	SubjectDelayed   = "Delayed Mail (still being retried)"
	SubjectDelivered = "Successful Mail Delivery Report"
)

// dateLayout is the RFC 5322 date-time Build writes (second precision).
const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// foldWidth is the line length Build folds header fields at, where it can.
const foldWidth = 76

var validActions = map[string]bool{
	"failed": true, "delayed": true, "delivered": true, "relayed": true, "expanded": true,
}

// Build writes a complete RFC 5322 message holding an RFC 3464 DSN:
// multipart/report; report-type=delivery-status with a text/plain part (the
// human text, generated when n.HumanText is empty), a message/delivery-status
// part (message/global-delivery-status when a field is not ASCII), and, when
// n.OriginalHeaders is set, a text/rfc822-headers part (message/rfc822 with
// n.OriginalBody when n.ReturnFull).
//
// The Subject is SubjectFailed when any recipient failed, else
// SubjectDelayed when any was delayed, else SubjectDelivered. Dates are
// written with second precision. Parse(Build(n)) returns every field of n
// (Action lowercased, addresses and MTA names without their type, as Parse
// always does); header values are folded only at single spaces so that
// unfolding restores them exactly.
func Build(n Notice) ([]byte, error) {
	if err := n.validate(); err != nil {
		return nil, err
	}
	date := n.Date
	if date.IsZero() {
		date = time.Now()
	}
	from := n.From
	if from == "" {
		from = "Mail Delivery System <MAILER-DAEMON@" + n.ReportingMTA + ">"
	}
	msgID := strings.Trim(strings.TrimSpace(n.MessageID), "<>")
	if msgID == "" {
		msgID = date.UTC().Format("20060102150405") + "." + randomHex(8) + "@" + n.ReportingMTA
	}
	global := !isASCII(n.EnvelopeID) || !isASCII(n.ReportingMTA)
	for _, r := range n.Recipients {
		if !isASCII(r.FinalRecipient) || !isASCII(r.OriginalRecipient) || !isASCII(r.DiagnosticCode) || !isASCII(r.RemoteMTA) {
			global = true
		}
	}

	boundary := "dsn-" + randomHex(16)
	var h message.Header
	h.Header = headerOf([][2]string{
		{"From", from},
		{"To", n.To},
		{"Date", date.Format(dateLayout)},
		{"Subject", subjectFor(n.Recipients)},
		{"Message-ID", "<" + msgID + ">"},
		{"MIME-Version", "1.0"},
		{"Auto-Submitted", "auto-replied"},
		{"Content-Type", mime.FormatMediaType("multipart/report", map[string]string{
			"report-type": "delivery-status",
			"boundary":    boundary,
		})},
	})

	var buf bytes.Buffer
	mw, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, fmt.Errorf("dsn: build: %w", err)
	}

	// Part 1: human-readable text.
	text := n.HumanText
	if text == "" {
		text = defaultHumanText(n)
	}
	text = string(crlf([]byte(text)))
	if !strings.HasSuffix(text, "\r\n") {
		text += "\r\n"
	}
	cte := "7bit"
	if !isASCII(text) || hasLongLine(text) {
		cte = "quoted-printable"
	}
	if err := writePart(mw, [][2]string{
		{"Content-Description", "Notification"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", cte},
	}, []byte(text)); err != nil {
		return nil, err
	}

	// Part 2: the machine-readable delivery status.
	status, err := statusBody(n, global)
	if err != nil {
		return nil, err
	}
	statusType, statusCTE := "message/delivery-status", "7bit"
	if global {
		statusType, statusCTE = "message/global-delivery-status", "8bit"
	}
	if err := writePart(mw, [][2]string{
		{"Content-Description", "Delivery report"},
		{"Content-Type", statusType},
		{"Content-Transfer-Encoding", statusCTE},
	}, status); err != nil {
		return nil, err
	}

	// Part 3: the original headers, or the whole original message.
	if len(bytes.TrimSpace(n.OriginalHeaders)) > 0 {
		orig := crlf(bytes.TrimRight(n.OriginalHeaders, "\r\n"))
		orig = append(orig, "\r\n\r\n"...)
		desc, typ := "Undelivered Message Headers", "text/rfc822-headers"
		if n.ReturnFull {
			desc, typ = "Undelivered Message", "message/rfc822"
			orig = append(orig, crlf(n.OriginalBody)...)
		}
		cte := "7bit"
		if !isASCII(string(orig)) {
			cte = "8bit"
		}
		if err := writePart(mw, [][2]string{
			{"Content-Description", desc},
			{"Content-Type", typ},
			{"Content-Transfer-Encoding", cte},
		}, orig); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("dsn: build: %w", err)
	}
	return buf.Bytes(), nil
}

// validate rejects a Notice that would make a DSN Parse (or a real MTA)
// cannot use, or that would inject header lines.
func (n *Notice) validate() error {
	if n.ReportingMTA == "" || strings.ContainsAny(n.ReportingMTA, " \t;<>") {
		return fmt.Errorf("dsn: build: ReportingMTA %q must be a host name", n.ReportingMTA)
	}
	if strings.TrimSpace(n.To) == "" {
		return errors.New("dsn: build: To is required (a DSN is never sent to the null sender)")
	}
	if len(n.Recipients) == 0 {
		return errors.New("dsn: build: at least one recipient is required")
	}
	fields := map[string]string{
		"ReportingMTA": n.ReportingMTA, "From": n.From, "To": n.To,
		"EnvelopeID": n.EnvelopeID, "MessageID": n.MessageID,
	}
	for k, v := range fields {
		if err := checkValue(k, v); err != nil {
			return err
		}
	}
	for i, r := range n.Recipients {
		if strings.TrimSpace(r.FinalRecipient) == "" {
			return fmt.Errorf("dsn: build: recipient %d: FinalRecipient is required", i)
		}
		if !validActions[strings.ToLower(r.Action)] {
			return fmt.Errorf("dsn: build: recipient %d: Action %q is not one of failed, delayed, delivered, relayed, expanded", i, r.Action)
		}
		if !validStatus(r.Status) {
			return fmt.Errorf("dsn: build: recipient %d: Status %q is not an enhanced status code like 4.7.1", i, r.Status)
		}
		for k, v := range map[string]string{
			"FinalRecipient": r.FinalRecipient, "OriginalRecipient": r.OriginalRecipient,
			"DiagnosticCode": r.DiagnosticCode, "RemoteMTA": r.RemoteMTA,
		} {
			if err := checkValue(fmt.Sprintf("recipient %d: %s", i, k), v); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkValue rejects control characters (header injection) and invalid UTF-8.
func checkValue(name, v string) error {
	if !utf8.ValidString(v) {
		return fmt.Errorf("dsn: build: %s is not valid UTF-8", name)
	}
	for _, c := range v {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return fmt.Errorf("dsn: build: %s contains control character %U", name, c)
		}
	}
	return nil
}

// validStatus reports whether s is an RFC 3463 status code (class.subject.detail).
func validStatus(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 {
			return false
		}
		for i := 0; i < len(p); i++ {
			if p[i] < '0' || p[i] > '9' {
				return false
			}
		}
	}
	return true
}

// subjectFor picks the Subject from the recipients' actions.
func subjectFor(rs []Recipient) string {
	delayed := false
	for _, r := range rs {
		switch strings.ToLower(r.Action) {
		case "failed":
			return SubjectFailed
		case "delayed":
			delayed = true
		}
	}
	if delayed {
		return SubjectDelayed
	}
	return SubjectDelivered
}

// statusBody writes the message/delivery-status body: the per-message group
// then one group per recipient, each ended by an empty line (textproto
// WriteHeader writes the group's fields and the empty line).
func statusBody(n Notice, global bool) ([]byte, error) {
	addrType := "rfc822"
	if global {
		addrType = "utf-8"
	}
	var b bytes.Buffer
	msg := [][2]string{{"Reporting-MTA", "dns; " + n.ReportingMTA}}
	if n.EnvelopeID != "" {
		msg = append(msg, [2]string{"Original-Envelope-Id", strings.TrimSpace(n.EnvelopeID)})
	}
	if !n.ArrivalDate.IsZero() {
		msg = append(msg, [2]string{"Arrival-Date", n.ArrivalDate.Format(dateLayout)})
	}
	if err := textproto.WriteHeader(&b, headerOf(msg)); err != nil {
		return nil, fmt.Errorf("dsn: build: %w", err)
	}
	for _, r := range n.Recipients {
		var g [][2]string
		if r.OriginalRecipient != "" {
			g = append(g, [2]string{"Original-Recipient", addrType + "; " + strings.TrimSpace(r.OriginalRecipient)})
		}
		g = append(g,
			[2]string{"Final-Recipient", addrType + "; " + strings.TrimSpace(r.FinalRecipient)},
			[2]string{"Action", strings.ToLower(r.Action)},
			[2]string{"Status", r.Status},
		)
		if r.RemoteMTA != "" {
			g = append(g, [2]string{"Remote-MTA", "dns; " + strings.TrimSpace(r.RemoteMTA)})
		}
		if r.DiagnosticCode != "" {
			g = append(g, [2]string{"Diagnostic-Code", strings.TrimSpace(r.DiagnosticCode)})
		}
		if !r.LastAttemptDate.IsZero() {
			g = append(g, [2]string{"Last-Attempt-Date", r.LastAttemptDate.Format(dateLayout)})
		}
		if !r.WillRetryUntil.IsZero() {
			g = append(g, [2]string{"Will-Retry-Until", r.WillRetryUntil.Format(dateLayout)})
		}
		if err := textproto.WriteHeader(&b, headerOf(g)); err != nil {
			return nil, fmt.Errorf("dsn: build: %w", err)
		}
	}
	return b.Bytes(), nil
}

// defaultHumanText is the first part's text when the Notice has none.
func defaultHumanText(n Notice) string {
	var b strings.Builder
	fmt.Fprintf(&b, "This is the mail system at host %s.\n\n", n.ReportingMTA)
	switch subjectFor(n.Recipients) {
	case SubjectFailed:
		b.WriteString("I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n")
	case SubjectDelayed:
		b.WriteString("THIS IS A WARNING ONLY. YOU DO NOT NEED TO RESEND YOUR MESSAGE.\n\nYour message could not be delivered yet; it is still being retried.\n")
	default:
		b.WriteString("Your message was successfully delivered to the destination(s) listed below.\n")
	}
	b.WriteString("\n")
	for _, r := range n.Recipients {
		fmt.Fprintf(&b, "<%s>: %s %s", r.FinalRecipient, strings.ToLower(r.Action), r.Status)
		if r.DiagnosticCode != "" {
			fmt.Fprintf(&b, " (%s)", r.DiagnosticCode)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writePart writes one part with the given header fields (in order) and body.
func writePart(mw *message.Writer, fields [][2]string, body []byte) error {
	pw, err := mw.CreatePart(message.Header{Header: headerOf(fields)})
	if err != nil {
		return fmt.Errorf("dsn: build: %w", err)
	}
	if _, err := pw.Write(body); err != nil {
		return fmt.Errorf("dsn: build: %w", err)
	}
	if err := pw.Close(); err != nil {
		return fmt.Errorf("dsn: build: %w", err)
	}
	return nil
}

// headerOf makes a textproto.Header that WriteHeader writes in the given
// order (it writes fields last-added first), each field folded by fold.
func headerOf(fields [][2]string) textproto.Header {
	var h textproto.Header
	for i := len(fields) - 1; i >= 0; i-- {
		h.AddRaw([]byte(fold(fields[i][0], fields[i][1])))
	}
	return h
}

// fold formats "Key: value\r\n", breaking lines longer than foldWidth only at
// a single space between two non-blank characters, so that unfolding (which
// joins lines with one space) gives back exactly value.
func fold(k, v string) string {
	var b strings.Builder
	b.WriteString(k)
	b.WriteString(": ")
	col := len(k) + 2
	for len(v) > 0 {
		if col+len(v) <= foldWidth {
			break
		}
		// The last fold point that keeps this line within foldWidth, or
		// failing that the first fold point at all.
		cut := -1
		for i := 1; i < len(v)-1; i++ {
			if v[i] == ' ' && !isBlank(v[i-1]) && !isBlank(v[i+1]) {
				if col+i <= foldWidth || cut < 0 {
					cut = i
				}
				if col+i > foldWidth {
					break
				}
			}
		}
		if cut < 0 {
			break
		}
		b.WriteString(v[:cut])
		b.WriteString("\r\n ")
		v = v[cut+1:]
		col = 1
	}
	b.WriteString(v)
	b.WriteString("\r\n")
	return b.String()
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

// crlf turns bare LF (and bare CR) line ends into CRLF.
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch c := b[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// hasLongLine reports whether s has a line over 998 octets (RFC 5322 limit).
func hasLongLine(s string) bool {
	for _, l := range strings.Split(s, "\n") {
		if len(l) > 998 {
			return true
		}
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
