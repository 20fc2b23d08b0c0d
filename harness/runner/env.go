package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/traffic"
	"github.com/greyharness/greyharness/scenarios"
)

// env is what a step may do to this run (scenarios.Env): the step kinds
// live in scenarios, one type each; the state they act on lives here.
type env struct{ r *Run }

var _ scenarios.Env = env{}

func (e env) File() string           { return e.r.sc.File }
func (e env) Timing() history.Timing { return e.r.timing }

func (e env) Progress(format string, args ...any) { e.r.progress(format, args...) }

// Fault runs f as a fault. One that touches every scenario on the relay
// and the fake MTA is recorded in every running scenario's history; a
// relay restart, stop or start waits until no submission or listing is
// under way, a flush until no restart is.
func (e env) Fault(kind history.FaultKind, detail string, f func() error) error {
	r := e.r
	everyone := func() error { return r.hub.fault(r, kind, detail, f) }
	switch kind {
	case history.FaultRelayRestart, history.FaultRelayStop, history.FaultRelayStart:
		return r.hub.relayDown(r.base, func() error {
			if lost, _ := r.hub.relayLost(); lost != nil {
				return lost
			}
			err := everyone()
			if err != nil && kind != history.FaultRelayStop && !errors.Is(err, context.Canceled) {
				// The relay may be down: bring it back for the others
				// (not when the run is being interrupted).
				r.hub.bringBack(r, r.where(detail), err)
			}
			return err
		})
	case history.FaultFlush:
		return r.hub.withRelay(r.base, everyone)
	case history.FaultFakeMTAStop, history.FaultFakeMTAStart, history.FaultFakeMTARestart:
		if r.lane > 0 {
			// Its lane's listener only (StopFakeMTA, StartFakeMTA): no
			// neighbour's traffic goes there, so it is in its history alone.
			lane := fmt.Sprintf("lane %d's listener (%s) only; the next hops and the other lanes stay up", r.lane, r.opt.Profile.Lanes[r.lane-1])
			return r.fault(kind, strings.TrimSpace(lane+" "+detail), f)
		}
		return everyone()
	}
	return r.fault(kind, detail, f)
}

// Submit registers the envelopes with the tracker before sending, so
// attempts racing the 250 are followed, then records every submission.
//
// The tenant's label goes into every address's domain first: the shared
// fake MTA tells the scenario's traffic (and DSNs to its senders) by it.
func (e env) Submit(ctx context.Context, msgs []*traffic.Message, concurrency int) []history.Submission {
	r := e.r
	sub := &traffic.Submitter{Submit: r.opt.Profile.Submit}
	for _, m := range msgs {
		m.From = tenantAddr(r.tenant, m.From)
		to := make([]string, len(m.To))
		for i, a := range m.To {
			to[i] = tenantAddr(r.tenant, a)
		}
		m.To = to
	}
	for _, m := range msgs {
		r.track.expect(history.Submission{HarnessID: m.HarnessID, MessageID: m.MessageID, Group: m.Group, MailFrom: m.From, RcptTo: m.To})
	}
	var results []history.Submission
	// Not while a neighbour restarts the relay: it would refuse them.
	err := r.hub.withRelay(ctx, func() error { results = sub.SendAll(ctx, msgs, concurrency); return nil })
	var lost *RelayDownError
	switch {
	case errors.As(err, &lost):
		// Down for good: nothing is submitted, nothing is the relay's to
		// answer for (Step names the cause).
		return nil
	case err != nil:
		results = sub.SendAll(ctx, msgs, concurrency) // ctx is done: each is recorded as not sent
	}
	for i := range results {
		res := &results[i]
		res.Resubmission = r.sent[res.MessageID]
		r.sent[res.MessageID] = true
		r.mu.Lock()
		r.h.Submissions = append(r.h.Submissions, *res)
		r.mu.Unlock()
		r.track.submitted(*res)
	}
	r.lastSub = msgs
	return results
}

func (e env) LastSubmitted() []*traffic.Message { return e.r.lastSub }

func (e env) Wait(ctx context.Context, w *scenarios.Wait) bool { return e.r.wait(ctx, w) }

func (e env) AwaitDeferral(ctx context.Context, until time.Time) bool {
	return e.r.awaitTracker(ctx, until, func(t *tracker) bool { return t.anyDefer })
}

func (e env) AwaitDataHeld(ctx context.Context, until time.Time) bool {
	return e.r.awaitTracker(ctx, until, func(t *tracker) bool { return t.tarpits > 0 })
}

// Checkpoint marks the checkpoint before its listing, which is stamped with
// its start: the ledger judges a checkpoint on the first listing at or
// after it, and that must be this one, not a later poll.
func (e env) Checkpoint(ctx context.Context, name string) {
	var at time.Time
	// Not during a neighbour's restart: the listing would fail.
	e.r.hub.withRelay(ctx, func() error {
		at = time.Now()
		e.r.snapshot(ctx)
		return nil
	})
	if at.IsZero() {
		at = time.Now()
	}
	e.r.mu.Lock()
	e.r.h.Checkpoints = append(e.r.h.Checkpoints, history.Checkpoint{Name: name, At: at})
	e.r.mu.Unlock()
}

func (e env) RestartRelay(ctx context.Context) error { return e.r.restartRelay(ctx) }

// RestartTurn waits until the scenario's restart may come (turns).
func (e env) RestartTurn(ctx context.Context, timed bool) error {
	return e.r.hub.turnsOf().await(ctx, e.r, true, timed)
}
func (e env) FlushRelay(ctx context.Context) error { return e.r.opt.Relay.Flush(ctx) }

// StartFakeMTA and StopFakeMTA start and stop the fake MTA every scenario
// shares (such a scenario is Disruptive); WipeGreylist wipes the
// scenario's own tenant's greylist state.
// A scenario holding a lane (Laneable) stops and starts its lane's
// listener only.
func (e env) StartFakeMTA(ctx context.Context) error {
	if e.r.lane > 0 {
		return e.r.hub.openLane(e.r.lane)
	}
	return e.r.hub.startFake(ctx)
}

func (e env) StopFakeMTA(ctx context.Context) error {
	if e.r.lane > 0 {
		return e.r.hub.closeLane(e.r.lane)
	}
	return e.r.hub.stopFake()
}
func (e env) WipeGreylist(ctx context.Context) error { return e.r.hub.wipe(ctx, e.r) }

// SetPolicy swaps the policy and the greylist delay the deadlines use.
func (e env) SetPolicy(ctx context.Context, p *fakemta.Policy, node *yaml.Node) error {
	e.r.mu.Lock()
	e.r.policy, e.r.policyNode = p, node
	if p.Greylist != nil {
		e.r.h.GreylistDelay = history.Duration(p.Greylist.Delay)
	}
	e.r.mu.Unlock()
	return e.r.hub.setPolicy(ctx, e.r, p, node)
}
