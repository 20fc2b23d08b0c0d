package runner

import (
	"context"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
)

// queueTimeout bounds one queue listing.
const queueTimeout = 10 * time.Second

// addSnapshot keeps a queue listing the hub took, while the scenario runs.
func (r *Run) addSnapshot(snap history.QueueSnapshot) {
	r.mu.Lock()
	polling := r.polling
	if polling {
		r.h.Queue = append(r.h.Queue, snap)
	}
	r.mu.Unlock()
	if polling {
		r.track.listed(snap)
	}
}

// keepSnapshot records a queue listing the scenario took itself.
func (r *Run) keepSnapshot(snap history.QueueSnapshot) {
	r.mu.Lock()
	r.h.Queue = append(r.h.Queue, snap)
	r.mu.Unlock()
	r.track.listed(snap)
}

// stopPolling ends the scenario's share of the hub's queue sampling; it
// reports whether it had one.
func (r *Run) stopPolling() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	was := r.polling
	r.polling = false
	return was
}

// snapshot takes one queue listing into the history.
func (r *Run) snapshot(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
	defer cancel()
	s := r.opt.Relay.Queue(ctx)
	s.End = time.Now()
	r.keepSnapshot(s)
}

// dequeued waits until the relay's queue listing no longer shows any
// message of group: the relay, not only the fake MTA, is done with them
// (the 250 after the final dot has been recorded by the relay). The relay
// sends no events, so this polls its listing, with the wait's deadline.
func (r *Run) dequeued(ctx context.Context, group string, until time.Time) bool {
	p := r.opt.Profile
	if !p.Has(profile.CapQueue) {
		return true
	}
	senders, ids := r.track.identities(group)
	every := min(max(r.timing.RetryMax.D()/8, 100*time.Millisecond), time.Second)
	for {
		qctx, cancel := context.WithTimeout(ctx, queueTimeout)
		snap := r.opt.Relay.Queue(qctx)
		snap.End = time.Now()
		cancel()
		r.keepSnapshot(snap)
		listed := snap.Err != ""
		for _, e := range snap.Entries {
			if ids[e.HarnessID] || ids[e.MessageID] || senders[strings.ToLower(e.Sender)] {
				listed = true
				break
			}
		}
		if !listed {
			return true
		}
		if !time.Now().Before(until) {
			return false
		}
		t := time.NewTimer(min(every, time.Until(until)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}
