// Package dsn parses and builds RFC 3464 delivery status notifications
// (multipart/report; report-type=delivery-status, or any multipart message
// with a message/delivery-status part) with go-message.
package dsn

import "time"

// Recipient is one per-recipient block of a DSN (RFC 3464 §2.3).
type Recipient struct {
	Action            string    `json:"action"`                       // failed, delayed, delivered, relayed, expanded (lowercased)
	Status            string    `json:"status"`                       // "4.7.1"
	FinalRecipient    string    `json:"final_recipient"`              // address only, type stripped ("rfc822;" removed)
	OriginalRecipient string    `json:"original_recipient,omitempty"` // address only
	DiagnosticCode    string    `json:"diagnostic_code,omitempty"`    // as written, type kept ("smtp; 451 4.7.1 ...")
	RemoteMTA         string    `json:"remote_mta,omitempty"`
	LastAttemptDate   time.Time `json:"last_attempt_date,omitempty"`
	WillRetryUntil    time.Time `json:"will_retry_until,omitempty"`
}

// Report is a parsed DSN.
type Report struct {
	ReportingMTA       string      `json:"reporting_mta,omitempty"`
	OriginalEnvelopeID string      `json:"original_envelope_id,omitempty"`
	ArrivalDate        time.Time   `json:"arrival_date,omitempty"`
	Recipients         []Recipient `json:"recipients"`
	// Original message identification, from the returned message/rfc822 or
	// text/rfc822-headers part (angle brackets stripped from Message-ID).
	OriginalMessageID string `json:"original_message_id,omitempty"`
	OriginalHarnessID string `json:"original_harness_id,omitempty"`
	OriginalSubject   string `json:"original_subject,omitempty"`
}

// Notice is what Build needs to write a DSN for a relay (the sample relay
// uses it; so can tests).
type Notice struct {
	ReportingMTA string    // host name of the relay writing the DSN
	From         string    // header From, e.g. MAILER-DAEMON@host
	To           string    // the original envelope sender (the DSN goes there)
	Date         time.Time // Date header
	ArrivalDate  time.Time
	EnvelopeID   string // Original-Envelope-Id, optional
	// MessageID is the DSN's own Message-ID (angle brackets optional); Build
	// generates one from Date, a random part and ReportingMTA when empty.
	MessageID  string
	Recipients []Recipient
	// OriginalHeaders is the original message's header block; it is returned
	// as text/rfc822-headers (or message/rfc822 with OriginalBody when ReturnFull).
	OriginalHeaders []byte
	OriginalBody    []byte
	ReturnFull      bool
	// HumanText is the first, human-readable part.
	HumanText string
}
