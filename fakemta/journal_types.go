package fakemta

import "github.com/greyharness/greyharness/fakemta/record"

// The journal's record types live in package record (pure data, no server);
// these aliases keep fakemta.Event and friends working.
type (
	EventKind   = record.EventKind
	Reply       = record.Reply
	Event       = record.Event
	RcptAttempt = record.RcptAttempt
	Transaction = record.Transaction
	Message     = record.Message
)

// Journal event kinds; see record.EventKind.
const (
	EventConnect     = record.EventConnect
	EventCommand     = record.EventCommand
	EventReply       = record.EventReply
	EventTLS         = record.EventTLS
	EventTransaction = record.EventTransaction
	EventClose       = record.EventClose
	EventControl     = record.EventControl
)

// Stage is a point of the SMTP dialogue a policy rule can act on.
type Stage string

// Stages, in dialogue order.
const (
	StageConnect  Stage = "connect"
	StageHelo     Stage = "helo"
	StageStartTLS Stage = "starttls"
	StageMail     Stage = "mail"
	StageRcpt     Stage = "rcpt"
	StageData     Stage = "data"
	StageEOD      Stage = "eod"
	StageQuit     Stage = "quit"
)
