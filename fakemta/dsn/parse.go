package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // decode non-UTF-8 parts and encoded words
	"github.com/emersion/go-message/textproto"
)

// MaxMessageBytes is the largest message Parse reads; a longer one is
// rejected with ErrTooLarge without reading further.
const MaxMessageBytes = 32 << 20

const (
	// maxStatusBytes bounds the decoded message/delivery-status body.
	maxStatusBytes = 4 << 20
	// maxOriginalHeaderBytes bounds the returned original header block.
	maxOriginalHeaderBytes = 1 << 20
	// maxParts bounds how many MIME parts of the report are looked at.
	maxParts = 256
	// maxRecipients bounds the per-recipient blocks kept from one report.
	maxRecipients = 10000
)

var (
	// ErrNotDSN is returned by Parse for a message that is neither a
	// multipart/report; report-type=delivery-status nor a multipart message
	// with a message/delivery-status part.
	ErrNotDSN = errors.New("dsn: not a delivery status notification")
	// ErrMalformed is returned (wrapped) by Parse for a message that claims
	// to be a DSN but lacks a usable message/delivery-status part or any
	// per-recipient block.
	ErrMalformed = errors.New("dsn: malformed delivery status notification")
	// ErrTooLarge is returned by Parse for a message over MaxMessageBytes.
	ErrTooLarge = errors.New("dsn: message exceeds 32 MiB")
)

// Parse reads a whole message (at most MaxMessageBytes) and returns its
// delivery status report.
//
// A DSN is a multipart/report with report-type delivery-status (or
// global-delivery-status, RFC 6533), or any other multipart message with a
// message/delivery-status (or message/global-delivery-status) part at its
// top level — OpenSMTPD's notices are multipart/mixed. Anything else gives
// ErrNotDSN. When a DSN is malformed (a declared report without a
// message/delivery-status part, or a status part without any per-recipient
// block) the error wraps ErrMalformed and Parse still returns the partial
// Report, so a caller can name the message in a "bad DSN" verdict. Parse
// never panics.
func Parse(r io.Reader) (rep *Report, err error) {
	defer func() {
		if p := recover(); p != nil {
			rep, err = nil, fmt.Errorf("%w: internal error: %v", ErrMalformed, p)
		}
	}()
	b, err := io.ReadAll(io.LimitReader(r, MaxMessageBytes+1))
	if err != nil {
		return nil, fmt.Errorf("dsn: reading message: %w", err)
	}
	if len(b) > MaxMessageBytes {
		return nil, ErrTooLarge
	}
	return parse(b)
}

// parse is Parse without the size limit and panic guard (the fuzz test calls
// it directly so that a panic is reported, not hidden).
func parse(b []byte) (*Report, error) {
	e, err := message.Read(bytes.NewReader(b))
	if e == nil {
		return nil, fmt.Errorf("%w: reading header: %v", ErrMalformed, err)
	}
	mt, params, perr := mime.ParseMediaType(e.Header.Get("Content-Type"))
	if perr != nil || !strings.HasPrefix(mt, "multipart/") {
		return nil, ErrNotDSN
	}
	// declared: the message says it is a DSN (RFC 3462 multipart/report).
	// Otherwise it is one only if a top-level part is a
	// message/delivery-status: OpenSMTPD sends its failure and delay notices
	// as multipart/mixed.
	declared := false
	if mt == "multipart/report" {
		switch strings.ToLower(strings.TrimSpace(params["report-type"])) {
		case "delivery-status", "global-delivery-status":
			declared = true
		case "":
			// No report type: decided by the parts, as for multipart/mixed.
		default:
			return nil, ErrNotDSN // an MDN or another kind of report
		}
	}
	mr := e.MultipartReader()
	if mr == nil {
		return nil, ErrNotDSN
	}
	defer mr.Close()

	rep := &Report{}
	var haveStatus, haveOriginal bool
	for i := 0; i < maxParts; i++ {
		p, _ := mr.NextPart()
		if p == nil {
			// io.EOF, or a truncated/garbled multipart body: keep what we
			// have so far.
			break
		}
		// A non-nil err here is an unknown charset or transfer encoding:
		// the part is still readable, undecoded.
		pt, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		switch pt {
		case "message/delivery-status", "message/global-delivery-status":
			if !haveStatus {
				haveStatus = true
				parseStatus(io.LimitReader(p.Body, maxStatusBytes), rep)
			}
		case "message/rfc822", "message/global", "text/rfc822-headers", "message/global-headers",
			"message/rfc822-headers": // maddy's name for text/rfc822-headers
			if !haveOriginal {
				haveOriginal = true
				parseOriginal(io.LimitReader(p.Body, maxOriginalHeaderBytes), rep)
			}
		}
	}
	if !declared && !haveStatus {
		// Ordinary mail with attachments (or a bounce written only for
		// humans): nothing claims it is a DSN.
		return nil, ErrNotDSN
	}
	if rep.OriginalMessageID == "" {
		// No returned message (or it had no Message-ID): Exim and Exchange
		// name the original in In-Reply-To / References of the DSN itself.
		if id := lastMsgID(e.Header.Get("In-Reply-To")); id != "" {
			rep.OriginalMessageID = id
		} else {
			rep.OriginalMessageID = lastMsgID(e.Header.Get("References"))
		}
	}
	if !haveStatus {
		return rep, fmt.Errorf("%w: no message/delivery-status part", ErrMalformed)
	}
	if len(rep.Recipients) == 0 {
		return rep, fmt.Errorf("%w: no per-recipient fields in message/delivery-status", ErrMalformed)
	}
	return rep, nil
}

// parseStatus reads the groups of header fields of a message/delivery-status
// body with textproto.ReadHeader, one group per call.
func parseStatus(r io.Reader, rep *Report) {
	br := bufio.NewReader(r)
	for {
		c, err := br.Peek(1)
		if err != nil {
			return // EOF (or read error): no more groups
		}
		if c[0] == ' ' || c[0] == '\t' {
			// A whitespace-only separator line, or a stray continuation
			// line at the start of a group: ReadHeader would reject it.
			if discardLine(br) != nil {
				return
			}
			continue
		}
		h, err := textproto.ReadHeader(br)
		if h.Len() > 0 {
			applyGroup(h, rep)
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return
			}
			// Malformed line inside a group: the fields before it are kept;
			// skip the rest of this group and go on with the next one.
			if skipGroup(br) != nil {
				return
			}
		}
	}
}

// applyGroup stores one group of delivery-status fields: a group naming a
// recipient is a per-recipient block, any other is the per-message block.
func applyGroup(h textproto.Header, rep *Report) {
	if h.Has("Final-Recipient") || h.Has("Original-Recipient") || h.Has("Action") || h.Has("Status") {
		if len(rep.Recipients) >= maxRecipients {
			return
		}
		rep.Recipients = append(rep.Recipients, Recipient{
			Action:            strings.ToLower(firstToken(h.Get("Action"))),
			Status:            firstToken(h.Get("Status")),
			FinalRecipient:    stripType(h.Get("Final-Recipient")),
			OriginalRecipient: stripType(h.Get("Original-Recipient")),
			DiagnosticCode:    strings.TrimSpace(h.Get("Diagnostic-Code")),
			RemoteMTA:         stripType(h.Get("Remote-MTA")),
			LastAttemptDate:   parseDate(h.Get("Last-Attempt-Date")),
			WillRetryUntil:    parseDate(h.Get("Will-Retry-Until")),
		})
		return
	}
	if rep.ReportingMTA == "" {
		rep.ReportingMTA = stripType(h.Get("Reporting-MTA"))
	}
	if rep.OriginalEnvelopeID == "" {
		rep.OriginalEnvelopeID = strings.TrimSpace(h.Get("Original-Envelope-Id"))
	}
	if rep.ArrivalDate.IsZero() {
		rep.ArrivalDate = parseDate(h.Get("Arrival-Date"))
	}
}

// parseOriginal reads the header block of the returned message
// (message/rfc822) or returned headers (text/rfc822-headers).
func parseOriginal(r io.Reader, rep *Report) {
	br := bufio.NewReader(r)
	// Tolerate blank or indented lines before the header block.
	for {
		c, err := br.Peek(1)
		if err != nil {
			return
		}
		if c[0] != ' ' && c[0] != '\t' && c[0] != '\r' && c[0] != '\n' {
			break
		}
		if discardLine(br) != nil {
			return
		}
	}
	// On a malformed line ReadHeader returns the fields read so far.
	h, _ := textproto.ReadHeader(br)
	mh := message.Header{Header: h}
	rep.OriginalMessageID = firstMsgID(h.Get("Message-Id"))
	rep.OriginalHarnessID = strings.TrimSpace(h.Get("X-Greyharness-Id"))
	if h.Has("Subject") {
		// Text decodes RFC 2047 encoded words; with an unknown charset it
		// returns the raw value, which is the best we can do.
		s, _ := mh.Text("Subject")
		rep.OriginalSubject = strings.TrimSpace(s)
	}
}

// discardLine consumes one line (of any length) from br.
func discardLine(br *bufio.Reader) error {
	for {
		_, more, err := br.ReadLine()
		if err != nil {
			return err
		}
		if !more {
			return nil
		}
	}
}

// skipGroup consumes lines up to and including the next empty line.
func skipGroup(br *bufio.Reader) error {
	for {
		l, more, err := br.ReadLine()
		if err != nil {
			return err
		}
		empty := len(l) == 0 && !more
		for more {
			if _, more, err = br.ReadLine(); err != nil {
				return err
			}
		}
		if empty {
			return nil
		}
	}
}

// stripType removes the type of a typed field ("rfc822; a@b" -> "a@b",
// "dns; mx.example" -> "mx.example") and angle brackets around an address.
// A "utf-8" address (RFC 6533) has its \x{HEX} escapes decoded.
func stripType(v string) string {
	v = strings.TrimSpace(v)
	typ := ""
	if i := strings.IndexByte(v, ';'); i >= 0 && isAtom(strings.TrimSpace(v[:i])) {
		typ = strings.ToLower(strings.TrimSpace(v[:i]))
		v = strings.TrimSpace(v[i+1:])
	}
	if len(v) >= 2 && v[0] == '<' && v[len(v)-1] == '>' {
		v = strings.TrimSpace(v[1 : len(v)-1])
	}
	if typ == "utf-8" {
		v = decodeUTF8Xtext(v)
	}
	return v
}

// isAtom reports whether s can be an address or MTA-name type token.
func isAtom(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"[]`, c) >= 0 {
			return false
		}
	}
	return true
}

// decodeUTF8Xtext decodes the \x{HEX} escapes of RFC 6533's utf-8-addr-xtext.
func decodeUTF8Xtext(s string) string {
	if !strings.Contains(s, `\x{`) {
		return s
	}
	var b strings.Builder
	for {
		i := strings.Index(s, `\x{`)
		if i < 0 {
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			break
		}
		n, err := strconv.ParseUint(s[i+3:i+j], 16, 32)
		b.WriteString(s[:i])
		if err != nil || n > 0x10FFFF {
			b.WriteString(s[i : i+j+1])
		} else {
			b.WriteRune(rune(n))
		}
		s = s[i+j+1:]
	}
	b.WriteString(s)
	return b.String()
}

// firstToken returns the first word of v, without a trailing comment
// ("5.0.0 (permanent failure)" -> "5.0.0").
func firstToken(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t("); i >= 0 {
		v = v[:i]
	}
	return v
}

// parseDate parses an RFC 5322 date-time; an unparsable date gives the zero
// time.
func parseDate(v string) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	t, err := mail.ParseDate(v)
	if err != nil {
		return time.Time{}
	}
	return t
}

// firstMsgID returns the first msg-id of v without angle brackets.
func firstMsgID(v string) string {
	ids := msgIDs(v)
	if len(ids) == 0 {
		return ""
	}
	return ids[0]
}

// lastMsgID returns the last msg-id of v without angle brackets.
func lastMsgID(v string) string {
	ids := msgIDs(v)
	if len(ids) == 0 {
		return ""
	}
	return ids[len(ids)-1]
}

// msgIDs splits a Message-ID, In-Reply-To or References value into its ids,
// angle brackets stripped. A bare id without brackets is taken whole.
func msgIDs(v string) []string {
	v = strings.TrimSpace(v)
	if v == "" {
		return nil
	}
	if !strings.Contains(v, "<") {
		return []string{strings.Fields(v)[0]}
	}
	var ids []string
	for {
		i := strings.IndexByte(v, '<')
		if i < 0 {
			break
		}
		j := strings.IndexByte(v[i:], '>')
		if j < 0 {
			if id := strings.TrimSpace(v[i+1:]); id != "" {
				ids = append(ids, id)
			}
			break
		}
		if id := strings.TrimSpace(v[i+1 : i+j]); id != "" {
			ids = append(ids, id)
		}
		v = v[i+j+1:]
	}
	return ids
}
