// Package queue turns a relay's queue listing (the output of the profile's
// commands.queue) into history.QueueEntry values, one per queued message.
//
// Formats (profile.QueueFormat):
//
//   - postfix-json: `postqueue -j`, one JSON object per line.
//   - exim: `exim -bp`, one block per message.
//   - opensmtpd: `smtpctl show queue`, one pipe-separated line per envelope
//     (one envelope per recipient; envelopes of one message are merged).
//   - sample-json: a JSON array of SampleEntry, what greyharness's sample relay prints.
//   - none: no listing; Parse returns nil.
//
// A null (bounce) sender is always reported as "" whatever the relay prints
// ("<>", "MAILER-DAEMON", "@"). Recipients already delivered are left out:
// an entry lists who is still waiting.
package queue

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
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
	case profile.QueueSample:
		return ParseSample(out)
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

// ParseExim parses `exim -bp`. Arrival comes from the message ID (its first
// part is the arrival time in base 62) and falls back to now minus the
// printed age. Recipients marked "D" (delivered) are left out. Reason is
// "frozen" for frozen messages (or whatever "*** ... ***" note Exim prints).
func ParseExim(out []byte, now time.Time) ([]history.QueueEntry, error) {
	entries := []history.QueueEntry{}
	var cur *history.QueueEntry
	lines := strings.Split(string(out), "\n")
	for i, raw := range lines {
		line := strings.TrimRight(raw, " \t\r")
		if strings.TrimSpace(line) == "" {
			cur = nil
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
	return entries, nil
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
		NextAttempt: s.NextAttempt, Reason: s.Reason, MessageID: s.MessageID, HarnessID: s.HarnessID,
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
