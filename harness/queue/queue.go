// Package queue turns a relay's queue listing (the output of the profile's
// commands.queue) into history.QueueEntry values, one per queued message.
//
// Formats (profile.QueueFormat):
//
//   - postfix-json: `postqueue -j`, one JSON object per line.
//   - exim: `exim -bp`, one block per message, then optionally the messages'
//     msglog deferrals (exim.sh queue), which make entries Deferred.
//   - opensmtpd: `smtpctl show queue`, one pipe-separated line per envelope
//     (one envelope per recipient; envelopes of one message are merged).
//   - sendmail: `sendmail -bp -v` (or plain mailq), one block per message.
//   - haraka: a tar stream of Haraka's outbound queue folder (haraka.sh queue).
//   - nullmailer: a tar stream of nullmailer's queue/ folder (nullmailer.sh queue).
//   - maddy: a tar stream of maddy's queue ID.meta and ID.header files (maddy.sh queue).
//   - json: greyharness's generic, versioned format (see ParseJSON); what a
//     small script prints for any other relay.
//   - sample-json: alias of json (the sample relay prints a bare array).
//   - none: no listing; Parse returns nil.
//
// A null (bounce) sender is always reported as "" whatever the relay prints
// ("<>", "MAILER-DAEMON", "@"). Recipients already delivered are left out:
// an entry lists who is still waiting.
package queue

import (
	"archive/tar"
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/textproto"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/queuelist"
)

// Parse parses a queue listing in format. now is when the listing was taken
// (formats that print ages or countdowns are relative to it).
func Parse(format profile.QueueFormat, out []byte, now time.Time) ([]history.QueueEntry, error) {
	switch format {
	case profile.QueuePostfixJSON:
		return ParsePostfixJSON(out)
	case profile.QueueExim:
		return ParseExim(out, now)
	case profile.QueueOpenSMTPD:
		return ParseOpenSMTPD(out, now)
	case profile.QueueHaraka:
		return ParseHaraka(out)
	case profile.QueueSendmail:
		return ParseSendmail(out, now)
	case profile.QueueNullmailer:
		return ParseNullmailer(out)
	case profile.QueueMaddy:
		return ParseMaddy(out)
	case profile.QueueJSON, profile.QueueSample:
		return ParseJSON(out)
	case profile.QueueNone, "":
		return nil, nil
	}
	return nil, fmt.Errorf("queue: unknown queue format %q", format)
}

// nullSender maps the ways relays print the null reverse-path to "".
func nullSender(s string) string {
	switch s {
	case "<>", "MAILER-DAEMON", "@":
		return ""
	}
	return s
}

// postfixJSON is one line of `postqueue -j` (Postfix 3.1+).
type postfixJSON struct {
	QueueName    string `json:"queue_name"`
	QueueID      string `json:"queue_id"`
	ArrivalTime  int64  `json:"arrival_time"`
	MessageSize  int64  `json:"message_size"`
	ForcedExpire bool   `json:"forced_expire"`
	Sender       string `json:"sender"`
	Recipients   []struct {
		Address     string `json:"address"`
		DelayReason string `json:"delay_reason"`
	} `json:"recipients"`
}

// ParsePostfixJSON parses `postqueue -j`. Reason is the first recipient's
// delay_reason, prefixed "on hold; " for the hold queue and "forced to
// expire; " when postsuper -e was used. Postfix prints no next attempt.
func ParsePostfixJSON(out []byte) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var m postfixJSON
		if err := json.Unmarshal(line, &m); err != nil {
			return nil, fmt.Errorf("postfix-json line %d: %v: %q", n, err, clip(line))
		}
		if m.QueueID == "" {
			return nil, fmt.Errorf("postfix-json line %d: no queue_id: %q", n, clip(line))
		}
		e := history.QueueEntry{QueueID: m.QueueID, Sender: nullSender(m.Sender), Recipients: []string{}}
		if m.ArrivalTime > 0 {
			e.Arrival = time.Unix(m.ArrivalTime, 0)
		}
		for _, r := range m.Recipients {
			e.Recipients = append(e.Recipients, r.Address)
			if e.Reason == "" {
				e.Reason = r.DelayReason
			}
			// Postfix writes a delay reason when an attempt is deferred.
			e.Deferred = e.Deferred || r.DelayReason != ""
		}
		if m.ForcedExpire {
			e.Reason = join("forced to expire", e.Reason)
		}
		if m.QueueName == "hold" {
			e.Reason = join("on hold", e.Reason)
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("postfix-json: %v", err)
	}
	return entries, nil
}

func join(a, b string) string {
	if b == "" {
		return a
	}
	return a + "; " + b
}

func clip(b []byte) string {
	if len(b) > 120 {
		return string(b[:120]) + "..."
	}
	return string(b)
}

// eximHeader matches the first line of an `exim -bp` block:
//
//	25m  2.9K 1t5C6F-000123-AB <sender@example.org> *** frozen ***
var eximHeader = regexp.MustCompile(`^\s*(\d+[smhdw]|\S+)\s+(\S+)\s+([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\s+<([^>]*)>\s*(.*)$`)

// ParseExim parses `exim -bp`, optionally followed by the deferrals of the
// messages' own logs (what ci/exim/exim.sh queue prints), one per line:
//
//	msglog ID: LINE
//
// LINE as Exim writes it in spool/msglog/ID, e.g.
//
//	2026-12-02 15:36:33 frank@rcpt.test R=to_next_hop T=remote_smtp defer (111): Connection refused DT=0s
//
// Arrival comes from the message ID (its first part is the arrival time in
// base 62) and falls back to now minus the printed age. Recipients marked
// "D" (delivered) are left out. Reason is "frozen" for frozen messages (or
// whatever "*** ... ***" note Exim prints), then the last deferral's text.
// A message is Deferred when its log has a deferral after an attempt: not
// when it was never tried, nor when it was only skipped because its
// host's retry time had not come ("retry time not reached": no attempt).
// Plain `exim -bp` says nothing of deferrals: no entry is Deferred.
func ParseExim(out []byte, now time.Time) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	var cur *history.QueueEntry
	defers := map[string]*eximDeferral{}
	lines := strings.Split(string(out), "\n")
	for i, raw := range lines {
		line := strings.TrimRight(raw, " \t\r")
		if strings.TrimSpace(line) == "" {
			cur = nil
			continue
		}
		if rest, ok := strings.CutPrefix(line, "msglog "); ok {
			cur = nil
			if err := eximMsglogLine(rest, defers); err != nil {
				return nil, fmt.Errorf("exim line %d: %v: %q", i+1, err, line)
			}
			continue
		}
		if m := eximHeader.FindStringSubmatch(line); m != nil {
			e := history.QueueEntry{QueueID: m[3], Sender: m[4], Recipients: []string{}} // "<>" gives ""
			e.Arrival = eximArrival(m[3], m[1], now)
			if note := strings.TrimSpace(m[5]); note != "" {
				e.Reason = strings.TrimSpace(strings.Trim(note, "*"))
			}
			entries = append(entries, e)
			cur = &entries[len(entries)-1]
			continue
		}
		if cur == nil || (line[0] != ' ' && line[0] != '\t') {
			return nil, fmt.Errorf("exim line %d: not a queue listing line: %q", i+1, line)
		}
		rcpt := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(rcpt, "D "), strings.HasPrefix(rcpt, "+D "):
			continue // delivered
		case strings.HasPrefix(rcpt, "+ "):
			rcpt = strings.TrimSpace(rcpt[2:]) // generated address, still pending
		}
		cur.Recipients = append(cur.Recipients, rcpt)
	}
	for i := range entries {
		e := &entries[i]
		if d := defers[e.QueueID]; d != nil {
			e.Deferred = d.tried != ""
			why := d.tried
			if why == "" {
				why = d.skipped
			}
			e.Reason = join2(e.Reason, why)
		}
	}
	return entries, nil
}

// join2 joins two reasons with "; ", either of which may be empty.
func join2(a, b string) string {
	if a == "" {
		return b
	}
	return join(a, b)
}

// eximDeferral is what a message's log says of its deferrals: the text of
// the last one after an attempt (tried) and of the last one without
// (skipped: its host's retry time not reached).
type eximDeferral struct{ tried, skipped string }

var (
	// eximMsglogRef is "ID: LINE", ID possibly under a split-spool
	// subfolder ("X/ID").
	eximMsglogRef = regexp.MustCompile(`^(?:[0-9A-Za-z]/)?([0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}): (.*)$`)
	// eximDeferLine is a deferral as Exim's deliver.c logs it (without the
	// "ID ==" of the main log): TIME address [<parent>] R=router [T=transport]
	// defer (ERRNO)[: strerror][ H=host [ip][:port]][ DT=time][: message].
	eximDeferLine = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?(?: [-+]\d{4})? \S+(?: <[^>]*>)* R=\S+(?: T=\S+)? defer \((-?\d+)\)(.*)$`)
	eximDeferRest = regexp.MustCompile(`^(?:: (.*?))?(?: H=\S+(?: \[[^\]]*\])?(?::\d+)?)?(?: DT=\S+)?(?:: (.*))?$`)
)

// eximMsglogLine records the deferral of one "ID: LINE" of exim.sh queue's
// msglog part. A line that is not a deferral (grep found " defer (" in a
// sender, say) is skipped.
func eximMsglogLine(ref string, defers map[string]*eximDeferral) error {
	m := eximMsglogRef.FindStringSubmatch(ref)
	if m == nil {
		return errors.New(`not "msglog ID: LINE" with an Exim message ID`)
	}
	d := eximDeferLine.FindStringSubmatch(m[2])
	if d == nil {
		return nil
	}
	why := strings.TrimPrefix(d[2], ": ")
	if r := eximDeferRest.FindStringSubmatch(d[2]); r != nil {
		why = join2(r[1], r[2])
	}
	if why == "" {
		why = "defer (" + d[1] + ")"
	}
	rec := defers[m[1]]
	if rec == nil {
		rec = &eximDeferral{}
		defers[m[1]] = rec
	}
	if strings.Contains(strings.ToLower(why), "retry time not reached") {
		rec.skipped = why
	} else {
		rec.tried = why
	}
	return nil
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func eximArrival(id, age string, now time.Time) time.Time {
	fromAge := time.Time{}
	if d, ok := eximAge(age); ok && !now.IsZero() {
		fromAge = now.Add(-d)
	}
	var secs int64
	for _, c := range id[:6] {
		secs = secs*62 + int64(strings.IndexRune(base62, c))
	}
	t := time.Unix(secs, 0)
	// Trust the ID when it agrees with the age (it is exact; the age is
	// rounded to minutes, hours or days).
	if fromAge.IsZero() {
		return t
	}
	if diff := t.Sub(fromAge); diff > -25*time.Hour && diff < 25*time.Hour {
		return t
	}
	return fromAge
}

// eximAge parses Exim's age column: "0m", "25m", "5h", "3d" (or a Go duration).
func eximAge(s string) (time.Duration, bool) {
	if n := len(s); n > 1 {
		v, err := strconv.Atoi(s[:n-1])
		if err == nil {
			switch s[n-1] {
			case 's':
				return time.Duration(v) * time.Second, true
			case 'm':
				return time.Duration(v) * time.Minute, true
			case 'h':
				return time.Duration(v) * time.Hour, true
			case 'd':
				return time.Duration(v) * 24 * time.Hour, true
			case 'w':
				return time.Duration(v) * 7 * 24 * time.Hour, true
			}
		}
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// ParseOpenSMTPD parses `smtpctl show queue` (OpenSMTPD 6.x/7.x), one line
// per envelope, fields separated by "|":
//
//	evpid|src|agent|flags|sender|rcpt|dest|creation|expire|lasttry|retry|runstate|runstate-arg|errorline
//
// evpid is 16 hex digits whose upper 8 are the message id; src is
// local/inet4/inet6; agent mda/mta/bounce; flags a comma list (bounce, auth,
// internal, suspend, hold); sender, rcpt and dest are user@domain ("@" for
// the null sender); creation, expire and lasttry are Unix seconds; retry a
// count; runstate is "pending|<seconds until next try>", "inflight|<seconds
// since the try began>", "invalid|" or "offline|"; errorline is the last
// error and may itself contain "|". Envelopes of one message become one
// entry (QueueID = the 8-digit message id), recipients in listing order.
func ParseOpenSMTPD(out []byte, now time.Time) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	index := map[string]int{}
	for n, line := range strings.Split(string(out), "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.SplitN(line, "|", 14)
		if len(f) < 13 {
			return nil, fmt.Errorf("opensmtpd line %d: want 14 |-separated fields, got %d: %q", n+1, len(f), line)
		}
		evpid := f[0]
		if len(evpid) != 16 {
			return nil, fmt.Errorf("opensmtpd line %d: envelope id %q is not 16 hex digits", n+1, evpid)
		}
		if _, err := strconv.ParseUint(evpid, 16, 64); err != nil {
			return nil, fmt.Errorf("opensmtpd line %d: envelope id %q is not hex", n+1, evpid)
		}
		msgid := evpid[:8]
		flags := f[3]
		rcpt := f[5]
		if rcpt == "@" {
			rcpt = f[6]
		}
		var created int64
		if f[7] != "" {
			v, err := strconv.ParseInt(f[7], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("opensmtpd line %d: creation time %q: not a number", n+1, f[7])
			}
			created = v
		}
		var next time.Time
		if f[11] == "pending" && !now.IsZero() {
			if secs, err := strconv.ParseInt(f[12], 10, 64); err == nil {
				next = now.Add(time.Duration(secs) * time.Second)
			}
		}
		reason := ""
		if len(f) == 14 {
			reason = f[13]
		}
		for _, fl := range strings.Split(flags, ",") {
			if fl == "hold" || fl == "suspend" {
				reason = join("on "+fl, reason)
			}
		}
		i, ok := index[msgid]
		if !ok {
			e := history.QueueEntry{QueueID: msgid, Sender: nullSender(f[4]), Recipients: []string{}}
			if created > 0 {
				e.Arrival = time.Unix(created, 0)
			}
			entries = append(entries, e)
			i = len(entries) - 1
			index[msgid] = i
		}
		e := &entries[i]
		e.Recipients = append(e.Recipients, rcpt)
		if e.Reason == "" {
			e.Reason = reason
		}
		if !next.IsZero() && (e.NextAttempt.IsZero() || next.Before(e.NextAttempt)) {
			e.NextAttempt = next
		}
	}
	return entries, nil
}

// SampleEntry is one message in the sample-json queue listing: the sample
// relay prints a JSON array of these (an empty queue is "[]").
type SampleEntry = queuelist.Entry

// sampleQueueEntry converts s to a history.QueueEntry.
func sampleQueueEntry(s SampleEntry) history.QueueEntry {
	rcpts := append([]string{}, s.Recipients...)
	return history.QueueEntry{
		QueueID: s.QueueID, Sender: nullSender(s.Sender), Recipients: rcpts, Arrival: s.Arrival,
		NextAttempt: s.NextAttempt, Reason: s.Reason, Deferred: s.Deferred, MessageID: s.MessageID, HarnessID: s.HarnessID,
	}
}

// ParseSample parses the sample relay's listing: a JSON array of SampleEntry.
// Empty output means an empty queue.
func ParseSample(out []byte) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	if len(bytes.TrimSpace(out)) == 0 {
		return entries, nil
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	var list []SampleEntry
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("sample-json: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("sample-json: trailing data after the array")
	}
	for i, s := range list {
		if s.QueueID == "" {
			return nil, fmt.Errorf("sample-json: entry %d has no queue_id", i)
		}
		entries = append(entries, sampleQueueEntry(s))
	}
	return entries, nil
}

// JSONVersion is the version of the generic queue format ParseJSON reads.
const JSONVersion = 1

// jsonListing is the generic format's versioned envelope.
type jsonListing struct {
	Version  *int        `json:"greyharness_queue"`
	Messages []jsonEntry `json:"messages"`
}

// jsonEntry is one message of the generic format; times are RFC 3339
// strings so that a script can print them without a JSON library's help.
type jsonEntry struct {
	QueueID     string   `json:"queue_id"`
	Sender      string   `json:"sender"`
	Recipients  []string `json:"recipients"`
	Arrival     string   `json:"arrival"`
	NextAttempt string   `json:"next_attempt"`
	Reason      string   `json:"reason"`
	Deferred    bool     `json:"deferred"`
	MessageID   string   `json:"message_id"`
	HarnessID   string   `json:"harness_id"`
}

// ParseJSON parses the generic queue format, version 1 (docs/relays.md):
//
//	{"greyharness_queue": 1, "messages": [{"queue_id": "...", "sender": "...",
//	  "recipients": [...], "arrival": RFC3339, "next_attempt": RFC3339,
//	  "reason": "...", "deferred": true, "message_id": "...", "harness_id": "..."}]}
//
// Only queue_id is required. A bare array of messages (what the sample
// relay prints) is read as version 1; empty output is an empty queue.
// Unknown keys and other versions are errors, so a converter's typo is not
// silently read as a missing field.
func ParseJSON(out []byte) ([]history.QueueEntry, error) {
	trimmed := bytes.TrimSpace(out)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return ParseSample(out)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var l jsonListing
	if err := dec.Decode(&l); err != nil {
		return nil, fmt.Errorf("json queue listing: %v", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("json queue listing: trailing data after the object")
	}
	if l.Version == nil {
		return nil, fmt.Errorf(`json queue listing: no "greyharness_queue" version (want %d)`, JSONVersion)
	}
	if *l.Version != JSONVersion {
		return nil, fmt.Errorf("json queue listing: version %d, this greyharness reads version %d", *l.Version, JSONVersion)
	}
	entries := []history.QueueEntry{}
	for i, m := range l.Messages {
		if m.QueueID == "" {
			return nil, fmt.Errorf("json queue listing: message %d has no queue_id", i)
		}
		e := history.QueueEntry{QueueID: m.QueueID, Sender: nullSender(m.Sender), Recipients: append([]string{}, m.Recipients...),
			Reason: m.Reason, Deferred: m.Deferred, MessageID: strings.Trim(m.MessageID, "<>"), HarnessID: m.HarnessID}
		var err error
		if e.Arrival, err = jsonTime(m.Arrival); err != nil {
			return nil, fmt.Errorf("json queue listing: message %d (%s): arrival: %v", i, m.QueueID, err)
		}
		if e.NextAttempt, err = jsonTime(m.NextAttempt); err != nil {
			return nil, fmt.Errorf("json queue listing: message %d (%s): next_attempt: %v", i, m.QueueID, err)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func jsonTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time", s)
	}
	return t, nil
}

// harakaTodo is the JSON header of a Haraka outbound queue file
// (outbound/todo.js: TODOItem), as far as a listing needs it.
type harakaTodo struct {
	QueueTime int64        `json:"queue_time"` // ms
	RcptTo    []harakaAddr `json:"rcpt_to"`
	MailFrom  *harakaAddr  `json:"mail_from"`
	UUID      string       `json:"uuid"`
}

type harakaAddr struct {
	Original string `json:"original"`
	User     string `json:"user"`
	Host     string `json:"host"`
}

func (a harakaAddr) String() string {
	if o := strings.TrimSpace(a.Original); o != "" {
		return strings.TrimSuffix(strings.TrimPrefix(o, "<"), ">")
	}
	if a.User == "" && a.Host == "" {
		return ""
	}
	return a.User + "@" + a.Host
}

// ParseHaraka parses a tar stream of Haraka's outbound queue folder, one
// file per message and destination domain (Haraka 3.x, outbound/qfile.js):
// the name is ARRIVAL_NEXTATTEMPT_ATTEMPTS_PID_UNIQ_COUNTER_HOST (times in
// ms), the content a 4-byte big-endian length, that many bytes of JSON
// (the "todo": uuid, mail_from, rcpt_to, queue_time) and the message.
// Haraka's own `--qlist` prints neither recipients nor delays, hence the
// files. QueueID is the todo's uuid (what Haraka logs); Reason is "deferred
// N times" from ATTEMPTS, since Haraka keeps no error text in the file.
// Empty output or an empty archive is an empty queue.
func ParseHaraka(out []byte) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	if len(bytes.TrimSpace(out)) == 0 {
		return entries, nil
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries, nil
		}
		if err != nil {
			return nil, fmt.Errorf("haraka queue listing (a tar stream of the queue folder): %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("haraka queue file %s: %v", h.Name, err)
		}
		e, err := harakaEntry(path.Base(h.Name), body)
		if err != nil {
			return nil, fmt.Errorf("haraka queue file %s: %v", h.Name, err)
		}
		entries = append(entries, e)
	}
}

// tarFiles calls fn for each regular file of the tar stream out, in order.
// Empty output or an empty archive has no files.
func tarFiles(out []byte, what string, fn func(name string, body []byte) error) error {
	if len(bytes.TrimSpace(out)) == 0 {
		return nil
	}
	tr := tar.NewReader(bytes.NewReader(out))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("%s: file %s: %v", what, h.Name, err)
		}
		if err := fn(h.Name, body); err != nil {
			return fmt.Errorf("%s: file %s: %v", what, h.Name, err)
		}
	}
}

// messageIDs reads the Message-ID and X-Greyharness-Id of a message's
// header block (a header that cannot be read gives none).
func messageIDs(header []byte) (messageID, harnessID string) {
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(header))).ReadMIMEHeader()
	if err != nil && len(hdr) == 0 {
		return "", ""
	}
	return strings.Trim(strings.TrimSpace(hdr.Get("Message-Id")), "<>"), strings.TrimSpace(hdr.Get("X-Greyharness-Id"))
}

// ParseNullmailer parses a tar stream of nullmailer's queue/ folder
// (nullmailer 2.x; nullmailer.sh queue), one file per message named
// TIME.PID (TIME: arrival, Unix seconds), its content the sender on the
// first line (empty: the null sender), one recipient per line, a blank
// line, then the message. nullmailer's own mailq prints no addresses, and
// nullmailer keeps no delay reason nor retry time: Reason and NextAttempt
// stay empty. Files outside queue/ (failed/ holds given-up messages) are not
// expected and are left out.
func ParseNullmailer(out []byte) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	err := tarFiles(out, "nullmailer queue listing (a tar stream of the queue folder)", func(name string, body []byte) error {
		if dir := path.Dir(path.Clean(name)); dir != "queue" && dir != "." {
			return nil
		}
		base := path.Base(name)
		sec, _, ok := strings.Cut(base, ".")
		arrival, err := strconv.ParseInt(sec, 10, 64)
		if !ok || err != nil {
			return errors.New("not a queue file name (TIME.PID)")
		}
		head, msg, ok := bytes.Cut(body, []byte("\n\n"))
		if !ok {
			return errors.New("no blank line after the envelope (sender, recipients)")
		}
		lines := strings.Split(string(head), "\n")
		e := history.QueueEntry{QueueID: base, Sender: nullSender(strings.TrimSpace(lines[0])), Recipients: []string{}, Arrival: time.Unix(arrival, 0)}
		for _, r := range lines[1:] {
			if r = strings.TrimSpace(r); r != "" {
				e.Recipients = append(e.Recipients, r)
			}
		}
		if len(e.Recipients) == 0 {
			return errors.New("no recipient in the envelope")
		}
		e.MessageID, e.HarnessID = messageIDs(msg)
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return entries, nil
}

// maddyMeta is the part of maddy's QueueMetadata (internal/target/queue,
// maddy 0.8.x) the harness reads from ID.meta.
type maddyMeta struct {
	MsgMeta *struct {
		ID string `json:"ID"`
	} `json:"MsgMeta"`
	From     string                     `json:"From"`
	To       []string                   `json:"To"`
	RcptErrs map[string]*maddySMTPError `json:"RcptErrs"`
	// TriesCount: attempts already made, per recipient.
	TriesCount   map[string]int `json:"TriesCount"`
	FirstAttempt time.Time      `json:"FirstAttempt"`
	LastAttempt  time.Time      `json:"LastAttempt"`
}

type maddySMTPError struct {
	Code         int    `json:"Code"`
	EnhancedCode []int  `json:"EnhancedCode"`
	Message      string `json:"Message"`
}

func (e *maddySMTPError) String() string {
	s := strconv.Itoa(e.Code)
	if len(e.EnhancedCode) == 3 && e.EnhancedCode[0] != 0 {
		s += fmt.Sprintf(" %d.%d.%d", e.EnhancedCode[0], e.EnhancedCode[1], e.EnhancedCode[2])
	}
	if e.Message != "" {
		s += " " + e.Message
	}
	return s
}

// maddy 0.8.1's retry schedule (internal/target/queue/queue.go): the next
// attempt is LastAttempt + 15 min x 1.25^(fewest tries - 1), the factor
// truncated to an integer (15, 15, 15, 15, 30, 45 min...).
const (
	maddyInitialRetry = 15 * time.Minute
	maddyRetryScale   = 1.25
)

// ParseMaddy parses a tar stream of maddy's queue folder's ID.meta (JSON)
// and ID.header files (maddy 0.8.x; maddy.sh queue): maddy has no queue
// listing command. QueueID is the message ID maddy logs ("msg_id");
// Recipients are the meta's To (still to be tried); Arrival its
// FirstAttempt (set when the message is queued); NextAttempt from
// LastAttempt and TriesCount by maddy's own schedule; Reason the first
// waiting recipient's last error. Message-ID and X-Greyharness-Id come from
// ID.header. A header file without its .meta (a message being stored or
// removed) is left out.
func ParseMaddy(out []byte) ([]history.QueueEntry, error) {
	metas := map[string]history.QueueEntry{}
	var order []string
	headers := map[string][]byte{}
	err := tarFiles(out, "maddy queue listing (a tar stream of the queue's .meta and .header files)", func(name string, body []byte) error {
		base := path.Base(name)
		switch {
		case strings.HasSuffix(base, ".header"):
			headers[strings.TrimSuffix(base, ".header")] = body
			return nil
		case !strings.HasSuffix(base, ".meta"):
			return nil
		}
		var m maddyMeta
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("queue metadata JSON: %v", err)
		}
		if m.MsgMeta == nil || m.MsgMeta.ID == "" {
			return errors.New("queue metadata without MsgMeta.ID")
		}
		e := history.QueueEntry{QueueID: m.MsgMeta.ID, Sender: nullSender(m.From), Recipients: []string{}}
		e.Recipients = append(e.Recipients, m.To...)
		if !m.FirstAttempt.IsZero() {
			e.Arrival = m.FirstAttempt
		}
		fewest := -1
		for _, n := range m.TriesCount {
			if fewest < 0 || n < fewest {
				fewest = n
			}
		}
		if fewest > 0 && !m.LastAttempt.IsZero() {
			factor := time.Duration(math.Pow(maddyRetryScale, float64(fewest-1)))
			e.NextAttempt = m.LastAttempt.Add(maddyInitialRetry * factor)
		}
		for _, r := range m.To {
			if re := m.RcptErrs[r]; re != nil {
				e.Reason = re.String()
				break
			}
		}
		metas[e.QueueID] = e
		order = append(order, e.QueueID)
		return nil
	})
	if err != nil {
		return nil, err
	}
	entries := []history.QueueEntry{}
	for _, id := range order {
		e := metas[id]
		if h, ok := headers[id]; ok {
			e.MessageID, e.HarnessID = messageIDs(h)
		}
		entries = append(entries, e)
	}
	return entries, nil
}

func harakaEntry(name string, body []byte) (history.QueueEntry, error) {
	parts := strings.SplitN(name, "_", 7)
	if len(parts) != 7 {
		return history.QueueEntry{}, errors.New("not a queue file name (ARRIVAL_NEXTATTEMPT_ATTEMPTS_PID_UNIQ_COUNTER_HOST)")
	}
	var nums [3]int64
	for i := range nums {
		v, err := strconv.ParseInt(parts[i], 10, 64)
		if err != nil {
			return history.QueueEntry{}, fmt.Errorf("name field %d %q is not a number", i+1, parts[i])
		}
		nums[i] = v
	}
	if len(body) < 4 {
		return history.QueueEntry{}, errors.New("shorter than its 4-byte header")
	}
	n := int(binary.BigEndian.Uint32(body))
	if n > len(body)-4 {
		return history.QueueEntry{}, fmt.Errorf("todo length %d past the end of the file (%d bytes)", n, len(body))
	}
	var todo harakaTodo
	if err := json.Unmarshal(body[4:4+n], &todo); err != nil {
		return history.QueueEntry{}, fmt.Errorf("todo JSON: %v", err)
	}
	if todo.UUID == "" {
		return history.QueueEntry{}, errors.New("todo has no uuid")
	}
	e := history.QueueEntry{QueueID: todo.UUID, Recipients: []string{}}
	if todo.MailFrom != nil {
		e.Sender = nullSender(todo.MailFrom.String())
	}
	for _, r := range todo.RcptTo {
		e.Recipients = append(e.Recipients, r.String())
	}
	e.Arrival = time.UnixMilli(nums[0])
	if todo.QueueTime > 0 {
		e.Arrival = time.UnixMilli(todo.QueueTime)
	}
	e.NextAttempt = time.UnixMilli(nums[1])
	switch nums[2] {
	case 0:
	case 1:
		e.Reason = "deferred 1 time"
	default:
		e.Reason = fmt.Sprintf("deferred %d times", nums[2])
	}
	// The message's own headers give the Message-ID and the harness id.
	hdr, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(body[4+n:]))).ReadMIMEHeader()
	if err == nil || len(hdr) > 0 {
		e.MessageID = strings.Trim(strings.TrimSpace(hdr.Get("Message-Id")), "<>")
		e.HarnessID = strings.TrimSpace(hdr.Get("X-Greyharness-Id"))
	}
	return e, nil
}

// sendmailHeader matches the first line of a message in `sendmail -bp`
// (with -v there is a priority column; sendmail's printqueue marks a
// message being delivered (locked) "*", one too young for a queue run
// (MinQueueAge) "-", and one a queue run would skip for the load average
// "X"; a quarantined message shows a "QUARANTINE:" line instead):
//
//	6B25rVxt004162       34      30235 Dec  2 05:53 <sender@client.test>
//	6B25rVxt004162*     34 Wed Dec  2 05:53 <sender@client.test>
var sendmailHeader = regexp.MustCompile(`^([0-9A-Za-z]{8,20})([*X-]?)\s+(\d+)\s+(?:(\d+)\s+)?(?:[A-Z][a-z]{2}\s+)?([A-Z][a-z]{2}\s+\d{1,2}\s+\d{1,2}:\d{2})\s+<([^>]*)>\s*$`)

// ParseSendmail parses `sendmail -bp -v` (sendmail 8.x; plain `mailq`
// too). The sender is printed whole only with -v (plain mailq cuts it at 40
// characters). Reason is the message's "(...)" status line, else the first
// recipient's. The Q-Time has no year: it is taken as the latest such time
// not after now (plus a day for clock skew).
func ParseSendmail(out []byte, now time.Time) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	var cur *history.QueueEntry
	sawRcpt := false
	if now.IsZero() {
		now = time.Now()
	}
	for i, raw := range strings.Split(string(out), "\n") {
		line := strings.TrimRight(raw, " \t\r")
		trimmed := strings.TrimSpace(line)
		switch {
		case trimmed == "":
			continue
		case strings.HasPrefix(trimmed, "-----Q-ID"), strings.HasPrefix(trimmed, "Total requests:"),
			strings.HasSuffix(trimmed, " is empty"), trimmed == "Mail queue is empty",
			strings.HasSuffix(trimmed, " request)"), strings.HasSuffix(trimmed, " requests)"):
			cur = nil
			continue
		}
		if m := sendmailHeader.FindStringSubmatch(line); m != nil {
			e := history.QueueEntry{QueueID: m[1], Sender: nullSender("<" + m[6] + ">"), Recipients: []string{}}
			if m[6] != "" {
				e.Sender = m[6]
			}
			e.Arrival = sendmailTime(m[5], now)
			entries = append(entries, e)
			cur = &entries[len(entries)-1]
			sawRcpt = false
			continue
		}
		if cur == nil || (line[0] != ' ' && line[0] != '\t') {
			return nil, fmt.Errorf("sendmail line %d: not a queue listing line: %q", i+1, line)
		}
		switch {
		case strings.HasPrefix(trimmed, "<") && strings.HasSuffix(trimmed, ">"):
			cur.Recipients = append(cur.Recipients, trimmed[1:len(trimmed)-1])
			sawRcpt = true
		case strings.HasPrefix(trimmed, "(") && strings.HasSuffix(trimmed, ")"):
			// The message's status comes before its recipients; a
			// recipient's own status only stands in when there is none.
			switch r := trimmed[1 : len(trimmed)-1]; {
			case cur.Reason == "":
				cur.Reason = r
			case !sawRcpt:
				cur.Reason += "; " + r
			}
		case strings.HasPrefix(trimmed, "QUARANTINE:"):
			cur.Reason = join("quarantined", strings.TrimSpace(strings.TrimPrefix(trimmed, "QUARANTINE:")))
		default:
			// Other indented notes (e.g. a recipient without angle
			// brackets) are kept as recipients: losing one would hide it.
			cur.Recipients = append(cur.Recipients, trimmed)
			sawRcpt = true
		}
	}
	return entries, nil
}

// sendmailTime reads "Dec  2 05:53" as the latest such time not after now
// (+24h, for clock skew between the relay and the harness).
func sendmailTime(s string, now time.Time) time.Time {
	t, err := time.ParseInLocation("Jan _2 15:04", strings.Join(strings.Fields(s), " "), now.Location())
	if err != nil {
		t, err = time.ParseInLocation("Jan 2 15:04", strings.Join(strings.Fields(s), " "), now.Location())
		if err != nil {
			return time.Time{}
		}
	}
	t = t.AddDate(now.Year()-t.Year(), 0, 0)
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t
}
