package samplerelay

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/greyharness/greyharness/fakemta/dsn"
)

// queueDSN writes a DSN about env for rcpts (action "failed" or "delayed")
// and queues it (null sender, to env's sender) like any other message.
// Called with r.mu held.
func (r *relay) queueDSN(env *envelope, rcpts []*rcptState, action string, now time.Time) {
	if env.IsDSN {
		return // never a DSN about a DSN
	}
	if env.Sender == "" && !r.bugs[BugDSNToNullSender] {
		return // RFC 3464 §2: no DSN about a null-sender message
	}
	body, err := r.st.readBody(env.ID)
	if err != nil {
		r.logf("DSN for %s: read original: %v", env.ID, err)
		return
	}
	_, _, headers := headerFields(body)
	n := dsn.Notice{
		ReportingMTA:    r.cfg.Hostname,
		From:            "Mail Delivery System <MAILER-DAEMON@" + r.cfg.Hostname + ">",
		To:              env.Sender,
		Date:            now,
		ArrivalDate:     env.Arrival,
		OriginalHeaders: headers,
	}
	if action == "failed" && r.bugs[BugDSNToNullSender] {
		n.OriginalHeaders = nil // the bug: the message can no longer be identified
	}
	var lines []string
	for _, rc := range rcpts {
		rec := dsn.Recipient{
			Action:          action,
			Status:          statusOf(rc),
			FinalRecipient:  rc.Addr,
			LastAttemptDate: rc.LastAttempt,
		}
		switch {
		case rc.LastReply != "":
			rec.DiagnosticCode = "smtp; " + rc.LastReply
		case rc.LastError != "":
			rec.DiagnosticCode = "X-Greyharness; " + rc.LastError
		}
		if action == "failed" && rec.Status[0] == '2' {
			rec.Status = "5.0.0"
		}
		if action == "delayed" {
			rec.WillRetryUntil = env.Arrival.Add(r.cfg.QueueLifetime)
		}
		n.Recipients = append(n.Recipients, rec)
		lines = append(lines, fmt.Sprintf("<%s>: %s", rc.Addr, rcptReason(rc)))
	}
	if action == "failed" {
		n.HumanText = fmt.Sprintf("This is the mail system at host %s.\r\n\r\n"+
			"Your message could not be delivered to one or more recipients.\r\n\r\n%s\r\n",
			r.cfg.Hostname, strings.Join(lines, "\r\n"))
	} else {
		n.HumanText = fmt.Sprintf("This is the mail system at host %s.\r\n\r\n"+
			"Your message has not been delivered yet. It is still queued and will be\r\n"+
			"retried until %s. You do not need to resend it.\r\n\r\n%s\r\n",
			r.cfg.Hostname, env.Arrival.Add(r.cfg.QueueLifetime).UTC().Format(time.RFC1123Z), strings.Join(lines, "\r\n"))
	}
	data, err := r.buildDSN(n)
	if err != nil {
		r.logf("DSN for %s: build: %v", env.ID, err)
		return
	}
	msgID, harnessID, _ := headerFields(data)
	d := &envelope{
		ID:         newQueueID(),
		Sender:     "",
		Arrival:    now,
		MessageID:  msgID,
		HarnessID:  harnessID,
		IsDSN:      true,
		Stamp:      r.stamp,
		Recipients: []*rcptState{{Addr: env.Sender, State: statePending, NextAttempt: now}},
	}
	if err := r.st.add(d, data); err != nil {
		r.logf("DSN for %s: queue: %v", env.ID, err)
		return
	}
	r.msgs[d.ID] = d
	r.logf("queued %s DSN %s about %s to <%s>", action, d.ID, env.ID, env.Sender)
	r.kick()
}

// buildDSN writes the DSN with fakemta/dsn.Build. Build refuses a DSN
// addressed to the null sender (as it should), so the dsn-to-null-sender
// bug writes that one with its own minimal writer, nullSenderDSN.
func (r *relay) buildDSN(n dsn.Notice) ([]byte, error) {
	if n.To == "" && r.bugs[BugDSNToNullSender] {
		return nullSenderDSN(n)
	}
	return dsn.Build(n)
}

// nullSenderDSN is the dsn-to-null-sender bug's DSN writer: a minimal
// RFC 3464 report (go-message writer) that, unlike dsn.Build, accepts an
// empty To, because writing that bad DSN is the bug.
func nullSenderDSN(n dsn.Notice) ([]byte, error) {
	var h message.Header
	h.Set("From", n.From)
	if n.To == "" {
		h.Set("To", "undisclosed-recipients:;")
	} else {
		h.Set("To", "<"+n.To+">")
	}
	subject := "Undelivered Mail Returned to Sender"
	if len(n.Recipients) > 0 && n.Recipients[0].Action == "delayed" {
		subject = "Delayed Mail (still being retried)"
	}
	h.Set("Subject", subject)
	h.Set("Date", n.Date.Format(time.RFC1123Z))
	h.Set("Message-Id", fmt.Sprintf("<%d.%s@%s>", n.Date.UnixNano(), randHex(4), n.ReportingMTA))
	h.Set("MIME-Version", "1.0")
	h.Set("Auto-Submitted", "auto-replied")
	h.SetContentType("multipart/report", map[string]string{"report-type": "delivery-status"})
	var buf bytes.Buffer
	mw, err := message.CreateWriter(&buf, h)
	if err != nil {
		return nil, err
	}
	part := func(ct string, body []byte) error {
		var ph message.Header
		ph.SetContentType(ct, nil)
		w, err := mw.CreatePart(ph)
		if err != nil {
			return err
		}
		if _, err := w.Write(body); err != nil {
			return err
		}
		return w.Close()
	}
	if err := part("text/plain", []byte(n.HumanText)); err != nil {
		return nil, err
	}
	var ds strings.Builder
	fmt.Fprintf(&ds, "Reporting-MTA: dns; %s\r\n", n.ReportingMTA)
	if n.EnvelopeID != "" {
		fmt.Fprintf(&ds, "Original-Envelope-Id: %s\r\n", n.EnvelopeID)
	}
	if !n.ArrivalDate.IsZero() {
		fmt.Fprintf(&ds, "Arrival-Date: %s\r\n", n.ArrivalDate.Format(time.RFC1123Z))
	}
	for _, rc := range n.Recipients {
		ds.WriteString("\r\n")
		fmt.Fprintf(&ds, "Final-Recipient: rfc822; %s\r\n", rc.FinalRecipient)
		fmt.Fprintf(&ds, "Action: %s\r\n", rc.Action)
		fmt.Fprintf(&ds, "Status: %s\r\n", rc.Status)
		if rc.DiagnosticCode != "" {
			fmt.Fprintf(&ds, "Diagnostic-Code: %s\r\n", rc.DiagnosticCode)
		}
		if !rc.LastAttemptDate.IsZero() {
			fmt.Fprintf(&ds, "Last-Attempt-Date: %s\r\n", rc.LastAttemptDate.Format(time.RFC1123Z))
		}
		if !rc.WillRetryUntil.IsZero() {
			fmt.Fprintf(&ds, "Will-Retry-Until: %s\r\n", rc.WillRetryUntil.Format(time.RFC1123Z))
		}
	}
	if err := part("message/delivery-status", []byte(ds.String())); err != nil {
		return nil, err
	}
	if len(n.OriginalHeaders) > 0 {
		if err := part("text/rfc822-headers", n.OriginalHeaders); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
