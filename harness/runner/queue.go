package runner

import (
	"context"
	"strings"
	"time"

	"github.com/greyharness/greyharness/harness/profile"
)

// queueTimeout bounds one queue listing.
const queueTimeout = 10 * time.Second

// startPolling samples the relay's queue listing in the background until
// stopPolling, when the profile can list it. ctx gives the sampler its
// values; its lifetime is the run's, not ctx's.
func (r *Run) startPolling(ctx context.Context) {
	p := r.opt.Profile
	if p.Commands.Queue == "" || p.QueueFormat == profile.QueueNone {
		return
	}
	pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.pollStop, r.pollDone = cancel, make(chan struct{})
	go r.pollQueue(pctx)
}

// stopPolling stops the sampler and waits for it; it reports whether it
// was running.
func (r *Run) stopPolling() bool {
	if r.pollStop == nil {
		return false
	}
	r.pollStop()
	<-r.pollDone
	r.pollStop = nil
	return true
}

// pollQueue samples the relay's queue listing. Sampling is how the ledger
// learns whether a late message is visible; waits never depend on it.
func (r *Run) pollQueue(ctx context.Context) {
	defer close(r.pollDone)
	every := r.timing.RetryMax.D() / 2
	every = min(max(every, 250*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A listing under way completes (bounded by queueTimeout): a
			// listing cut short would read as a queue that cannot be seen.
			r.snapshot(context.WithoutCancel(ctx))
		}
	}
}

// snapshot takes one queue listing into the history.
func (r *Run) snapshot(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, queueTimeout)
	defer cancel()
	s := r.opt.Relay.Queue(ctx)
	s.End = time.Now()
	r.mu.Lock()
	r.h.Queue = append(r.h.Queue, s)
	r.mu.Unlock()
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
		r.mu.Lock()
		r.h.Queue = append(r.h.Queue, snap)
		r.mu.Unlock()
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
