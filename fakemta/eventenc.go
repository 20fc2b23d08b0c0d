package fakemta

import (
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// The journal's hot path encodes events by hand, byte for byte as
// encoding/json would (field order, omitempty, HTML-safe string escaping,
// \ufffd for invalid UTF-8, RFC 3339 times): eventenc_test.go checks the
// output against json.Marshal. Events it cannot encode exactly (a parsed
// DSN report, a time json refuses) fall back to encoding/json.
//
// An event line is split in two: the head ({"seq":…,"time":"…") is written
// under the journal lock, where Seq and Time are assigned; the tail (the
// rest, with the newline) is encoded before taking the lock.

// appendEventTail appends everything after the time field: `,"kind":…}` and
// a newline. It returns false (and dst unchanged in length meaning) when the
// event needs encoding/json.
func appendEventTail(dst []byte, ev *Event) ([]byte, bool) {
	dst = append(dst, `,"kind":`...)
	dst = appendJSONString(dst, string(ev.Kind))
	if ev.Conn != 0 {
		dst = append(dst, `,"conn":`...)
		dst = strconv.AppendUint(dst, ev.Conn, 10)
	}
	if ev.Client != "" {
		dst = append(dst, `,"client":`...)
		dst = appendJSONString(dst, ev.Client)
	}
	if ev.Local != "" {
		dst = append(dst, `,"local":`...)
		dst = appendJSONString(dst, ev.Local)
	}
	if ev.TLS {
		dst = append(dst, `,"tls":true`...)
	}
	if ev.Tenant != "" {
		dst = append(dst, `,"tenant":`...)
		dst = appendJSONString(dst, ev.Tenant)
	}
	if ev.Command != "" {
		dst = append(dst, `,"command":`...)
		dst = appendJSONString(dst, ev.Command)
	}
	if ev.Reply != nil {
		dst = append(dst, `,"reply":`...)
		dst = appendReply(dst, ev.Reply)
	}
	if tx := ev.Transaction; tx != nil {
		dst = append(dst, `,"transaction":`...)
		var ok bool
		if dst, ok = appendTransaction(dst, tx); !ok {
			return dst, false
		}
	}
	if ev.Note != "" {
		dst = append(dst, `,"note":`...)
		dst = appendJSONString(dst, ev.Note)
	}
	dst = append(dst, '}', '\n')
	return dst, true
}

// appendEventHead appends `{"seq":N,"time":"…"`; false when json would
// refuse the time (then encoding/json reports the error).
func appendEventHead(dst []byte, seq uint64, t time.Time) ([]byte, bool) {
	dst = append(dst, `{"seq":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"time":`...)
	return appendJSONTime(dst, t)
}

// timeCache keeps the formatted whole second of the latest event time:
// within one second (and location) only the fraction changes. Used under
// the journal lock.
type timeCache struct {
	loc  *time.Location
	sec  int64
	date []byte // "2006-01-02T15:04:05"
	zone []byte // "Z" or "-07:00"
	ok   bool   // json accepts this second
}

// appendTime is appendJSONTime with the second's formatting cached.
func (tc *timeCache) appendTime(dst []byte, t time.Time) ([]byte, bool) {
	sec := t.Unix()
	if tc.date == nil || sec != tc.sec || t.Location() != tc.loc {
		whole := t.Add(-time.Duration(t.Nanosecond()))
		b, ok := appendJSONTime(nil, whole)
		if !ok || len(b) < len(`"2006-01-02T15:04:05Z"`) {
			return appendJSONTime(dst, t)
		}
		b = b[1 : len(b)-1] // unquoted
		tc.loc, tc.sec, tc.ok = t.Location(), sec, ok
		tc.date = append(tc.date[:0], b[:19]...)
		tc.zone = append(tc.zone[:0], b[19:]...)
	}
	dst = append(dst, '"')
	dst = append(dst, tc.date...)
	if ns := t.Nanosecond(); ns != 0 {
		// ".999999999": nine digits, trailing zeros dropped
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		dst = append(dst, frac[:n]...)
	}
	dst = append(dst, tc.zone...)
	return append(dst, '"'), true
}

func appendReply(dst []byte, r *Reply) []byte {
	dst = append(dst, `{"code":`...)
	dst = strconv.AppendInt(dst, int64(r.Code), 10)
	if r.Enhanced != "" {
		dst = append(dst, `,"enhanced":`...)
		dst = appendJSONString(dst, r.Enhanced)
	}
	if r.Text != "" {
		dst = append(dst, `,"text":`...)
		dst = appendJSONString(dst, r.Text)
	}
	if r.Dropped {
		dst = append(dst, `,"dropped":true`...)
	}
	return append(dst, '}')
}

func appendTransaction(dst []byte, tx *Transaction) ([]byte, bool) {
	dst = append(dst, '{')
	if tx.Helo != "" {
		dst = append(dst, `"helo":`...)
		dst = appendJSONString(dst, tx.Helo)
		dst = append(dst, ',')
	}
	dst = append(dst, `"mail_from":`...)
	dst = appendJSONString(dst, tx.MailFrom)
	dst = append(dst, `,"mail_reply":`...)
	dst = appendReply(dst, &tx.Mail)
	if len(tx.Rcpts) > 0 {
		dst = append(dst, `,"rcpts":[`...)
		for i := range tx.Rcpts {
			r := &tx.Rcpts[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, `{"addr":`...)
			dst = appendJSONString(dst, r.Addr)
			dst = append(dst, `,"attempt":`...)
			dst = strconv.AppendInt(dst, int64(r.Attempt), 10)
			dst = append(dst, `,"reply":`...)
			dst = appendReply(dst, &r.Reply)
			if r.Greylist != "" {
				dst = append(dst, `,"greylist":`...)
				dst = appendJSONString(dst, r.Greylist)
			}
			if r.Key != "" {
				dst = append(dst, `,"key":`...)
				dst = appendJSONString(dst, r.Key)
			}
			if r.BodyKey != "" {
				dst = append(dst, `,"body_key":`...)
				dst = appendJSONString(dst, r.BodyKey)
			}
			if r.WhitelistKey != "" {
				dst = append(dst, `,"whitelist_key":`...)
				dst = appendJSONString(dst, r.WhitelistKey)
			}
			dst = append(dst, '}')
		}
		dst = append(dst, ']')
	}
	if tx.Data != nil {
		dst = append(dst, `,"data_reply":`...)
		dst = appendReply(dst, tx.Data)
	}
	if m := tx.Message; m != nil {
		if m.DSN != nil {
			return dst, false // a parsed report: rare, left to encoding/json
		}
		dst = append(dst, `,"message":{"id":`...)
		dst = appendJSONString(dst, m.ID)
		dst = append(dst, `,"message_id":`...)
		dst = appendJSONString(dst, m.MessageID)
		dst = append(dst, `,"harness_id":`...)
		dst = appendJSONString(dst, m.HarnessID)
		dst = append(dst, `,"mail_from":`...)
		dst = appendJSONString(dst, m.MailFrom)
		dst = append(dst, `,"rcpt_to":`...)
		if m.RcptTo == nil {
			dst = append(dst, "null"...)
		} else {
			dst = append(dst, '[')
			for i, r := range m.RcptTo {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendJSONString(dst, r)
			}
			dst = append(dst, ']')
		}
		dst = append(dst, `,"received_at":`...)
		var ok bool
		if dst, ok = appendJSONTime(dst, m.ReceivedAt); !ok {
			return dst, false
		}
		dst = append(dst, `,"size":`...)
		dst = strconv.AppendInt(dst, m.Size, 10)
		dst = append(dst, `,"sha256":`...)
		dst = appendJSONString(dst, m.SHA256)
		if m.Subject != "" {
			dst = append(dst, `,"subject":`...)
			dst = appendJSONString(dst, m.Subject)
		}
		if m.Accepted {
			dst = append(dst, `,"accepted":true`...)
		} else {
			dst = append(dst, `,"accepted":false`...)
		}
		if m.BodyPath != "" {
			dst = append(dst, `,"body_path":`...)
			dst = appendJSONString(dst, m.BodyPath)
		}
		if m.MX != "" {
			dst = append(dst, `,"mx":`...)
			dst = appendJSONString(dst, m.MX)
		}
		dst = append(dst, `,"dsn":null}`...)
	}
	if tx.Aborted != "" {
		dst = append(dst, `,"aborted":`...)
		dst = appendJSONString(dst, tx.Aborted)
	}
	if tx.MX != "" {
		dst = append(dst, `,"mx":`...)
		dst = appendJSONString(dst, tx.MX)
	}
	return append(dst, '}'), true
}

// appendJSONTime appends t as time.Time's MarshalJSON does; false when
// MarshalJSON would fail (year outside [0,9999], odd zone offsets).
func appendJSONTime(dst []byte, t time.Time) ([]byte, bool) {
	dst = append(dst, '"')
	n0 := len(dst)
	dst = t.AppendFormat(dst, time.RFC3339Nano)
	if len(dst)-n0 < len("2006-01-02T15:04:05Z") || dst[n0+4] != '-' {
		return dst, false
	}
	if dst[len(dst)-1] != 'Z' {
		c := dst[len(dst)-len("Z07:00")]
		hh := 10*(dst[len(dst)-5]-'0') + (dst[len(dst)-4] - '0')
		if ('0' <= c && c <= '9') || hh >= 24 {
			return dst, false
		}
	}
	return append(dst, '"'), true
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes encoding/json writes as they are with
// HTML escaping on (its htmlSafeSet): printable, minus " \ < > &.
var jsonSafe = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = true
	}
	for _, b := range `"\<>&` {
		t[b] = false
	}
	return t
}()

// appendJSONString appends s quoted as encoding/json does with HTML
// escaping on (its default, and the journal's).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if jsonSafe[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '\\', '"':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// lineBufs recycles the buffers event tails are encoded into.
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}
