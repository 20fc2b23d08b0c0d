package samplerelay

import (
	"sort"
	"time"

	"github.com/greyharness/greyharness/queuelist"
)

// SampleEntry is one message in the queue listing (the "sample-json" queue
// format); it is package queuelist's type, which harness/queue parses, so the
// listing and its parser agree.
type SampleEntry = queuelist.Entry

// ListQueue reads the queue directory and returns what the relay shows as
// queued: one entry per message that still has undelivered, unbounced
// recipients, oldest first. It reads only the disk, so it works whether the
// relay runs or not. Entries whose start-up stamp does not match the
// relay's current stamp are left out (that is how the kb950757 bug hides
// a message).
func ListQueue(dir string, now time.Time) ([]SampleEntry, error) {
	st := &store{dir: dir}
	boot, err := st.readBoot()
	if err != nil {
		return nil, err
	}
	envs, errs := st.load(false)
	if len(errs) > 0 {
		return nil, errs[0]
	}
	out := []SampleEntry{}
	for _, env := range envs {
		if boot != nil && env.Stamp != boot.Stamp {
			continue
		}
		if e, ok := listEntry(env, now); ok {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Arrival.Before(out[j].Arrival) })
	return out, nil
}

func listEntry(env *envelope, now time.Time) (SampleEntry, bool) {
	act := env.activeRcpts()
	if len(act) == 0 {
		return SampleEntry{}, false
	}
	e := SampleEntry{
		QueueID:    env.ID,
		Sender:     env.Sender,
		Arrival:    env.Arrival.UTC(),
		MessageID:  env.MessageID,
		HarnessID:  env.HarnessID,
		Recipients: []string{},
	}
	var next time.Time
	haveNext := false
	for _, r := range act {
		e.Recipients = append(e.Recipients, r.Addr)
		tried := r.State == stateDeferred && (r.LastReply != "" || r.LastError != "")
		if e.Reason == "" || r.State == stateDeferred && e.Reason == "pending" || tried && !e.Deferred {
			e.Reason = rcptReason(r)
		}
		e.Deferred = e.Deferred || tried
		var t time.Time
		switch r.Stuck {
		case stuckNoRetry:
			continue // never again: no next attempt
		case stuckStallVisible:
			// always a little in the future, never reached
			iv := r.StallInterval
			if iv <= 0 {
				iv = time.Second
			}
			t = r.NextAttempt
			if !t.After(now) {
				t = now.Add(iv)
			}
		default:
			t = r.NextAttempt
			if t.IsZero() {
				t = env.Arrival
			}
		}
		if !haveNext || t.Before(next) {
			next, haveNext = t, true
		}
	}
	if haveNext {
		e.NextAttempt = next.UTC()
	}
	return e, true
}

func rcptReason(r *rcptState) string {
	switch {
	case r.Stuck == stuckNoRetry:
		return "retry disabled"
	case r.LastReply != "":
		return r.LastReply
	case r.LastError != "":
		return r.LastError
	case r.State == stateDeferred:
		return "deferred"
	default:
		return "pending"
	}
}
