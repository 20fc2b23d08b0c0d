package runner

import (
	"context"
	"os"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// Begin starts the fake MTA with the scenario's policy and the queue sampler.
func Begin(ctx context.Context, opt *Options, sc *scenarios.Scenario) (*Run, error) {
	pol := &fakemta.Policy{}
	if sc.Policy.Kind != 0 {
		p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy)
		if err != nil {
			return nil, err
		}
		pol = p
	}
	dir, err := os.MkdirTemp("", "greyharness-fakemta-")
	if err != nil {
		return nil, err
	}
	if opt.TLS == nil {
		if opt.TLS, err = fakemta.SelfSignedTLS(); err != nil {
			return nil, err
		}
	}
	r := &Run{opt: opt, sc: sc, base: context.WithoutCancel(ctx), stateDir: dir, timing: opt.Profile.Timing, track: newTracker(), sent: map[string]bool{}}
	r.fake = newFakeMTA(opt.Profile, pol, &sc.Policy, dir, opt.TLS)
	r.h = history.History{Scenario: sc.Name, Relay: opt.Profile.Name, Timing: r.timing, Started: time.Now(), Expect: expectOf(sc)}
	if pol.Greylist != nil {
		r.h.GreylistDelay = history.Duration(pol.Greylist.Delay)
	}
	if err := r.startFake(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	r.startPolling(ctx)
	return r, nil
}

// startFake starts the fake MTA, its journal flowing into the history.
func (r *Run) startFake(ctx context.Context) error {
	if err := r.fake.Start(ctx, r.record); err != nil {
		return err
	}
	r.mu.Lock()
	r.fakeUp = true
	r.mu.Unlock()
	return nil
}

// stopFake stops the fake MTA; its journal is all recorded when it returns.
func (r *Run) stopFake(ctx context.Context) error {
	r.mu.Lock()
	r.fakeUp = false
	r.mu.Unlock()
	return r.fake.Stop(ctx)
}

// Finish lets the scenario drain, takes a last queue listing, stops the
// fake MTA and judges the history.
//
// With ctx already done (the run was interrupted), or nothing accepted, it
// does not drain: it judges what was recorded at once.
func (r *Run) Finish(ctx context.Context) (*history.History, ledger.Result) {
	r.mu.Lock()
	running := r.fakeUp
	r.mu.Unlock()
	// Nothing accepted (every submission refused): nothing to wait for.
	_, accepted := r.track.pending("", func(*msgState) bool { return true })
	if running && ctx.Err() == nil && accepted > 0 {
		r.drain(ctx)
		// Watch one more retry interval: a relay that sends a delivered
		// message again (a duplicate) or retries too soon does it now.
		settle := r.timing.RetryMax.D()
		r.progress("drained; watching %s more for late duplicates", settle)
		r.until(ctx, time.Now().Add(settle), func() bool { return false })
	}
	if r.stopPolling() {
		r.snapshot(ctx)
	}
	r.stopFake(ctx)
	r.mu.Lock()
	r.h.Ended = time.Now()
	h := r.h
	r.mu.Unlock()
	res := ledger.Judge(&h)
	return &h, res
}

// drain waits until every message is delivered or bounced. A relay that
// has not settled gets every chance before anything is called lost: a
// flush, then a restart (when the profile can do them), each followed by
// another wait. Correct relays settle in the first wait and pay nothing.
func (r *Run) drain(ctx context.Context) {
	drained := &scenarios.Wait{For: "drained"}
	if r.wait(ctx, drained) {
		return
	}
	p := r.opt.Profile
	if p.Has(profile.CapFlush) {
		r.progress("not drained: flushing the relay's queue")
		if err := r.fault(history.FaultFlush, "drain", func() error { return r.opt.Relay.Flush(ctx) }); err == nil && r.wait(ctx, drained) {
			return
		}
	}
	if p.Has(profile.CapRestart) {
		r.progress("not drained: restarting the relay")
		err := r.fault(history.FaultRelayRestart, "drain", func() error { return r.restartRelay(ctx) })
		if err == nil {
			r.wait(ctx, drained)
		}
	}
}

// restartRelay restarts the relay under test, bounded by twice its
// restart grace (and ten seconds for the commands themselves).
func (r *Run) restartRelay(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, restartTimeout(r.timing))
	defer cancel()
	return r.opt.Relay.Restart(ctx)
}

// Close removes the fake MTA's state (the history is kept by the caller).
func (r *Run) Close() {
	r.stopPolling()
	r.stopFake(r.base)
	os.RemoveAll(r.stateDir)
}

// RunScenario runs a whole scenario outside Ginkgo (the bug-zoo matrix,
// tools): Begin, every step, Finish. A step error stops the steps; the
// history so far is still judged.
func RunScenario(ctx context.Context, opt *Options, sc *scenarios.Scenario) (*history.History, ledger.Result, error) {
	r, err := Begin(ctx, opt, sc)
	if err != nil {
		return nil, ledger.Result{}, err
	}
	defer r.Close()
	var stepErr error
	for i := range sc.Steps {
		if err := r.Step(ctx, i, &sc.Steps[i]); err != nil {
			stepErr = err
			break
		}
	}
	h, res := r.Finish(ctx)
	return h, res, stepErr
}
