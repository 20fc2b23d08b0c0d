package fakemta

import (
	"errors"
	"syscall"
)

// recordFailure is the reply to a final dot whose message the fake MTA
// could not record durably (journal write or fsync, or --keep-bodies):
// never 250 without a record. A full disk or quota gets 452 4.3.1
// (RFC 3463: mail system full), any other failure 451 4.3.0; both are
// temporary, so the relay keeps the message and retries.
func recordFailure(err error) Reply {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return Reply{Code: 452, Enhanced: "4.3.1", Text: "Insufficient system storage: cannot record the message, try again later"}
	}
	return Reply{Code: 451, Enhanced: "4.3.0", Text: "Local error: cannot record the message, try again later"}
}

// failTransaction rewrites a transaction event whose durable record
// failed so that it says what the client was told: the failure reply
// instead of a 2xx, and the message not accepted. The event is copied, not
// changed in place (the session may still hold it).
func failTransaction(ev *Event, err error) {
	tx := ev.Transaction
	if tx == nil || tx.Data == nil || tx.Data.Code/100 != 2 {
		return
	}
	cp := *tx
	r := recordFailure(err)
	cp.Data = &r
	if tx.Message != nil {
		m := *tx.Message
		m.Accepted, m.BodyPath = false, "" // the session removes the body
		cp.Message = &m
	}
	ev.Transaction = &cp
}

// recordDurable appends a durable event; if it cannot be recorded the
// event is journaled as the failure the client is told, and counted.
func (s *Server) recordDurable(ev Event) (Event, error) {
	ev, err := s.journal.AppendDurable(ev, true, failTransaction)
	s.metrics.observe(&ev)
	if err != nil {
		s.metrics.recordFailed("journal")
		s.cfg.Logf("journal: cannot record: %v", err)
	}
	return ev, err
}

// Health says why the fake MTA cannot record durably right now (a journal
// write or fsync, or a --keep-bodies write, failed and has not succeeded
// since), nil when it can. /healthz reports it.
func (s *Server) Health() error { return s.journal.Health() }
