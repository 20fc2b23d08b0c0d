package ledger

import "fmt"

// expiryNotice returns the delay notice that was a relay's last word on an
// unresolved message, nil when there is none: an accepted, well-formed DSN
// with Action: delayed that came at or after the queue lifetime (less its
// slack), no attempt after it, and the message absent from the final usable
// queue listing taken after it. Such a relay gave up at its lifetime and told
// the sender it would keep trying — RFC 3464 §2.3.3: "delayed" means the MTA
// "will continue to attempt" — where a final report must say "failed"
// (OpenSMTPD 6.8 at `queue ttl`: Status 4.4.7 "Envelope expired"; nullmailer
// 2.2 at its queue lifetime: Status 4.3.0). It did report, so the message is
// not lost; the report is unusable, so it is bad-dsn.
func (j *judge) expiryNotice(tr *track) *dsnSeen {
	ql := j.h.Timing.QueueLifetime.D()
	if ql <= 0 {
		return nil
	}
	due := tr.sub.SubmittedAt.Add(ql - LifetimeSlack(ql))
	var last *dsnSeen
	for i := range tr.dsns {
		d := &tr.dsns[i]
		if d.accepted && len(d.problems) == 0 && d.action == "delayed" && !d.at.Before(due) && (last == nil || d.at.After(last.at)) {
			last = d
		}
	}
	if last == nil {
		return nil
	}
	for _, a := range tr.attempts {
		if a.at.After(last.at) {
			return nil
		}
	}
	final := j.finalSnap()
	if final == nil || !final.At.After(last.at) || final.At.Before(j.lastFaultEnd) || visible(*final, tr) {
		return nil
	}
	return last
}

// expiryWhy is the bad-dsn reason of an expiry notice d.
func (j *judge) expiryWhy(tr *track, d *dsnSeen) string {
	return fmt.Sprintf("the relay gave up on it at its queue lifetime and told the sender it would keep trying: its last word was a DSN Action: delayed (Status %s) at %s, %s after submission; no attempt followed and the final queue listing at %s does not show it. A relay that gives up must say Action: failed (RFC 3464 §2.3.3: delayed means it will continue to attempt)",
		d.status, j.rel(d.at), d.at.Sub(tr.sub.SubmittedAt).Round(1e6), j.rel(j.finalSnap().At))
}
