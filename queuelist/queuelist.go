// Package queuelist is the JSON queue listing format: a JSON array of Entry
// (an empty queue is "[]"). The sample relay prints it and the harness's
// queue parser reads it; it lives here, apart from both, so the system under
// test imports nothing of the harness.
package queuelist

import "time"

// Entry is one queued message in the listing.
type Entry struct {
	QueueID     string    `json:"queue_id"`
	Sender      string    `json:"sender"` // "" for the null sender
	Recipients  []string  `json:"recipients"`
	Arrival     time.Time `json:"arrival"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Reason      string    `json:"reason,omitempty"`
	// Deferred says a delivery attempt of it failed temporarily (a 4xx,
	// a refused connection, a timeout): Reason is that failure. A message
	// not tried yet is not deferred.
	Deferred  bool   `json:"deferred,omitempty"`
	MessageID string `json:"message_id,omitempty"` // without angle brackets
	HarnessID string `json:"harness_id,omitempty"` // X-Greyharness-Id
}
