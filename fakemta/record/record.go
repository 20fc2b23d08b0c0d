// Package record holds the fake MTA journal's record types: the pure data a
// run's history keeps and the ledger judges. It imports nothing of the server,
// so readers of a journal need not pull in SMTP, HTTP or metrics.
package record

import (
	"time"

	"github.com/greyharness/greyharness/fakemta/dsn"
)

// EventKind names what a journal Event records.
type EventKind string

// Journal event kinds. A connection produces connect, then command/reply
// pairs (and tls), a transaction event at the end of every MAIL transaction
// (whether it reached DATA or not), and close.
const (
	EventConnect     EventKind = "connect"
	EventCommand     EventKind = "command"
	EventReply       EventKind = "reply"
	EventTLS         EventKind = "tls"
	EventTransaction EventKind = "transaction"
	EventClose       EventKind = "close"
	// EventControl records a control action: policy swap, reset, start/stop.
	EventControl EventKind = "control"
)

// Reply is one SMTP reply as the fake MTA sent it (or would have sent it,
// for a dropped connection: then Dropped is true and nothing reached the wire).
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced,omitempty"` // "4.7.1"
	Text     string `json:"text,omitempty"`
	Dropped  bool   `json:"dropped,omitempty"`
}

// Event is one journal record. Seq is strictly increasing across the life of
// a state directory (it survives restarts).
type Event struct {
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Kind   EventKind `json:"kind"`
	Conn   uint64    `json:"conn,omitempty"`   // server connection number, from 1
	Client string    `json:"client,omitempty"` // remote address ip:port
	Local  string    `json:"local,omitempty"`  // listener address
	TLS    bool      `json:"tls,omitempty"`
	// Tenant names the tenant (the scenario sharing the fake MTA) whose
	// traffic or control action this is; "" for none or unknown yet
	// (connect, helo, starttls come before any address).
	Tenant string `json:"tenant,omitempty"`

	Command string `json:"command,omitempty"` // command line as received (EventCommand)
	Reply   *Reply `json:"reply,omitempty"`   // EventReply

	Transaction *Transaction `json:"transaction,omitempty"` // EventTransaction
	Note        string       `json:"note,omitempty"`        // EventControl, EventTLS, EventClose detail
}

// RcptAttempt is one RCPT TO inside a transaction with the reply it got.
// Attempt counts this (client subnet, sender, recipient)'s RCPT commands
// since the fake MTA's state began, from 1.
type RcptAttempt struct {
	Addr    string `json:"addr"`
	Attempt int    `json:"attempt"`
	Reply   Reply  `json:"reply"`
	// Greylist is "deferred", "passed", "whitelisted" or "" (not greylisted).
	Greylist string `json:"greylist,omitempty"`
	// Key, BodyKey and WhitelistKey are the greylist keys the outcome came
	// from (the restart replays them; the policy may have changed since).
	Key          string `json:"key,omitempty"`
	BodyKey      string `json:"body_key,omitempty"`
	WhitelistKey string `json:"whitelist_key,omitempty"`
}

// Transaction is one MAIL FROM ... (RCPT TO)* [DATA ... .] sequence.
type Transaction struct {
	Helo     string        `json:"helo,omitempty"`
	MailFrom string        `json:"mail_from"`
	Mail     Reply         `json:"mail_reply"`
	Rcpts    []RcptAttempt `json:"rcpts,omitempty"`
	// Data is the reply to the final dot (the eod reply), nil when the
	// transaction never got a body. Data.Dropped means the line was cut
	// after the body was received and before any reply (RFC 1047 gap).
	Data *Reply `json:"data_reply,omitempty"`
	// Message is set when the body was received in full.
	Message *Message `json:"message,omitempty"`
	// Aborted says why the transaction ended without a final reply:
	// "rset", "quit", "disconnect", "helo", "" when it completed.
	Aborted string `json:"aborted,omitempty"`
	// MX is the listener (MX host) that answered, host:port.
	MX string `json:"mx,omitempty"`
}

// Message is a message body the fake MTA received in full.
type Message struct {
	ID         string    `json:"id"`         // fake MTA's own id, unique
	MessageID  string    `json:"message_id"` // Message-ID header without angle brackets
	HarnessID  string    `json:"harness_id"` // X-Greyharness-Id header
	MailFrom   string    `json:"mail_from"`
	RcptTo     []string  `json:"rcpt_to"` // recipients accepted at RCPT
	ReceivedAt time.Time `json:"received_at"`
	Size       int64     `json:"size"`
	SHA256     string    `json:"sha256"`
	Subject    string    `json:"subject,omitempty"`
	// Accepted is true when the eod reply was 2xx.
	Accepted bool `json:"accepted"`
	// BodyPath is the file holding the body with --keep-bodies.
	BodyPath string `json:"body_path,omitempty"`
	// MX is the listener (MX host) that received it, host:port.
	MX  string      `json:"mx,omitempty"`
	DSN *dsn.Report `json:"dsn"`
}
