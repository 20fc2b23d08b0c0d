package runner

import (
	"context"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// Begin waits until the scenario may run (alone, or beside others), makes
// it a tenant of the hub's fake MTA with its policy, and joins the hub's
// queue sampling. Without opt.Hub the scenario gets a hub of its own.
func Begin(ctx context.Context, opt *Options, sc *scenarios.Scenario) (*Run, error) {
	return begin(ctx, opt, sc, false, "", 0, 0)
}

// begin is Begin; held says the scenario's share of opt.Hub is taken
// already (Schedule takes it, in order); group, that it is one member of
// a group of Alone scenarios (AloneGroup) holding the world together;
// lane, the lane Schedule took for it (0: none, or begin takes it); turn,
// a Disruptive one's admission number among them (0: the next).
func begin(ctx context.Context, opt *Options, sc *scenarios.Scenario, held bool, group string, lane, turn int) (*Run, error) {
	iso, why := Isolate(sc)
	laned := opt.Hub.laned(sc)
	if laned {
		iso, why = LaneIsolation(sc), laneWhy(sc, why)
	}
	// undo lets go of what is held when the scenario cannot begin.
	undo := func(hub *Hub) {
		switch {
		case !held:
		case group != "":
			hub.releaseGroup()
		default:
			hub.release(iso)
		}
		if lane > 0 {
			_ = hub.giveLane(lane) // never closed: nothing to open
		}
	}
	pol := &fakemta.Policy{}
	if sc.Policy.Kind != 0 {
		p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy)
		if err != nil {
			if held {
				undo(opt.Hub)
			}
			return nil, err
		}
		pol = p
	}
	hub, own := opt.Hub, false
	if hub == nil {
		var err error
		if hub, err = NewHub(ctx, opt); err != nil {
			return nil, err
		}
		own = true
		if laned = hub.laned(sc); laned {
			iso, why = LaneIsolation(sc), laneWhy(sc, why)
		}
	}
	if !held {
		if err := hub.acquire(ctx, iso); err != nil {
			if own {
				hub.Close()
			}
			return nil, fmt.Errorf("waiting for its turn: %w", err)
		}
		held = true
		if laned {
			n, err := hub.takeLane(ctx)
			if err != nil {
				undo(hub)
				if own {
					hub.Close()
				}
				return nil, fmt.Errorf("waiting for a lane: %w", err)
			}
			lane = n
		}
	}
	r := &Run{opt: opt, sc: sc, base: context.WithoutCancel(ctx), policy: pol, policyNode: &sc.Policy, timing: opt.Profile.Timing,
		track: newTracker(), sent: map[string]bool{}, hub: hub, ownHub: own, tenant: hub.newTenant(lane), iso: iso, why: why, mx: AboutMX(sc), group: group,
		lane: lane, laneHeld: lane > 0}
	// The relay is down for good: a neighbour's restart failed and the
	// harness could not bring it back. The scenario does not run, and says why.
	if lost, _ := hub.relayLost(); lost != nil {
		undo(hub)
		if own {
			hub.Close()
		}
		return nil, fmt.Errorf("not run: %w", lost)
	}
	// An Alone scenario owns the connection-level stages; the members of a
	// group have no policy there (AloneGroup), so none does; a laned one
	// has its lane's.
	r.held, r.owner = true, iso == Alone && group == ""
	r.h = history.History{Scenario: sc.Name, Relay: opt.Profile.Name, Timing: r.timing, Started: time.Now(), Expect: expectOf(sc)}
	if pol.Greylist != nil {
		r.h.GreylistDelay = history.Duration(pol.Greylist.Delay)
	}
	if err := hub.register(ctx, r); err != nil {
		r.Close()
		return nil, err
	}
	r.mu.Lock()
	r.registered = true
	r.polling = opt.Profile.Commands.Queue != "" && opt.Profile.QueueFormat != profile.QueueNone
	r.mu.Unlock()
	if iso == Disruptive {
		hub.turnsOf().join(r, turn, restartSteps(sc))
	}
	switch {
	case lane > 0:
		beside := "beside the others"
		if iso == Disruptive {
			beside = "beside the others, its relay restarts in their histories, in turn with the other disruptive scenarios' restarts"
		}
		r.progress("runs on lane %d %s (%s: the relay routes its mail to %s, where every connection is its own); tenant %s", lane, beside, why, opt.Profile.Lanes[lane-1], r.tenant)
	case iso == Alone && group != "":
		r.progress("runs alone with its group %s only (%s); tenant %s", group, why, r.tenant)
	case iso == Alone:
		r.progress("runs alone (%s); tenant %s", why, r.tenant)
	case iso == Disruptive:
		r.progress("runs beside the others, its faults in their histories, its restarts in turn with the other disruptive scenarios' (%s); tenant %s", why, r.tenant)
	default:
		r.progress("tenant %s", r.tenant)
	}
	return r, nil
}

// Tenant is the scenario's tenant in the fake MTA (the label in its
// addresses' domains).
func (r *Run) Tenant() string { return r.tenant }

// policyNow returns the policy in force for the scenario.
func (r *Run) policyNow() (*fakemta.Policy, *yaml.Node) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.policy, r.policyNode
}

// tenantOptions are the scenario's tenant options at the fake MTA.
func (r *Run) tenantOptions() fakemta.TenantOptions {
	return fakemta.TenantOptions{Connections: r.owns(), Lane: r.lane}
}

// owns reports whether the scenario owns the fake MTA's connection-level stages.
func (r *Run) owns() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.owner
}

// holds reports whether the scenario still holds its share of the hub.
func (r *Run) holds() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.held
}

// releaseWorld lets the scenarios waiting for their turn go on: after the
// drain, the late-duplicate watch runs beside them.
func (r *Run) releaseWorld() {
	r.hub.turnsOf().leave(r)
	r.mu.Lock()
	held, owner, reg := r.held, r.owner, r.registered
	r.held, r.owner = false, false
	p, node := r.policy, r.policyNode
	r.mu.Unlock()
	if owner && reg {
		// The next scenario that runs alone takes the connection-level stages.
		if err := r.hub.setPolicy(r.base, r, p, node); err != nil {
			r.progress("giving the fake MTA's connection-level stages up: %v", err)
		}
	}
	if held {
		if r.mx {
			// The others must meet a closed port at the backup MX hosts again.
			r.hub.closeMX(r)
		}
		if r.group != "" {
			r.hub.releaseGroup()
		} else {
			r.hub.release(r.iso)
		}
	}
}

// unregister ends the scenario's tenant and gives its lane back: from
// now on its late traffic is nobody's, and the lane the next one's.
func (r *Run) unregister() {
	r.mu.Lock()
	reg, lane := r.registered, r.laneHeld
	r.registered, r.laneHeld = false, false
	r.mu.Unlock()
	if reg {
		ended := r.hub.unregister(r.base, r)
		r.mu.Lock()
		r.h.Ended = ended
		r.mu.Unlock()
	}
	if lane {
		if err := r.hub.giveLane(r.lane); err != nil {
			r.progress("opening lane %d again for the others: %v", r.lane, err)
		}
	}
}

func (r *Run) addFault(fl history.Fault) {
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, fl)
	r.mu.Unlock()
	r.track.poke() // a late-duplicate watch may have to run longer
}

// Finish lets the scenario drain, takes a last queue listing, ends its
// tenant and judges the history.
//
// With ctx already done (the run was interrupted), or nothing accepted, it
// does not drain: it judges what was recorded at once.
func (r *Run) Finish(ctx context.Context) (*history.History, ledger.Result) {
	running := r.hub.running()
	// Nothing accepted (every submission refused): nothing to wait for.
	_, accepted := r.track.pending("", func(*msgState) bool { return true })
	// With the relay down for good, what it holds will not move: no drain.
	if lost, _ := r.hub.relayLost(); running && ctx.Err() == nil && accepted > 0 && lost == nil {
		drained := r.drain(ctx)
		if r.iso == Disruptive {
			// The rule its restarts' turns keep, checked on what was recorded.
			r.mu.Lock()
			why := turnViolation(&r.h, time.Now())
			r.mu.Unlock()
			if why != "" {
				r.progress("%s", why)
				r.StepFailed(why)
			}
		}
		// Drained: the scenarios waiting for their turn go on, and this
		// watch overlaps them (its tenant stays registered, so what the
		// relay sends late is still this scenario's).
		r.releaseWorld()
		noBody := r.track.all("", everyRcpt(func(rs *rcptState) bool { return rs.bounced && rs.bodies == 0 }))
		if !noBody {
			// A restart a Disruptive neighbour has still to carry out
			// could lose the relay's record of a copy: they come early
			// (turns), and the watch below must know of them.
			if err := r.hub.turnsOf().awaitRestarts(ctx, r); err != nil {
				r.progress("waiting for the neighbours' restarts: %v", err)
			}
		}
		switch {
		case noBody:
			// Every recipient bounced and no body ever reached one: there
			// is no copy a relay could send again (a duplicate needs a
			// delivered or dropped-after-dot body), so no watch.
			r.progress("drained: every recipient bounced, none reached by a body; nothing to watch for late duplicates")
		case drained && r.opt.Profile.Has(profile.CapQueue) && r.track.settled(r.relayTouchedSince):
			// RFC 1047's gap is closed for every copy: the relay had each
			// final reply (it sent a command after it), no restart since
			// could have lost its record, and its queue no longer lists
			// the messages. A relay sends a copy again only when it may
			// not know it was delivered, so there is nothing to watch for.
			r.progress("drained: the relay had the final reply of every copy (it sent a command after it), no relay restart since, its queue lists none of them; nothing to watch for late duplicates")
		default:
			r.watchLate(ctx, drained && r.opt.Profile.Has(profile.CapQueue))
		}
	}
	if lost, by := r.hub.relayLost(); lost != nil && by != r && accepted > 0 && !r.track.all("", drainedCond(r.timing.QueueLifetime.D())) {
		// A neighbour's failed restart, not this relay's handling of
		// these messages, left them where they are.
		r.progress("not drained, and the relay is down for good: judged on what was recorded (%v)", lost)
		r.markRelayDown(lost)
	}
	r.releaseWorld()
	if r.stopPolling() {
		r.snapshot(ctx)
	}
	r.unregister()
	r.mu.Lock()
	if r.h.Ended.IsZero() {
		r.h.Ended = time.Now() // never registered
	}
	h := r.h
	r.mu.Unlock()
	res := ledger.Judge(&h)
	return &h, res
}

// drain waits until every message is delivered or bounced. A relay that
// has not settled gets every chance before anything is called lost: a
// flush, then a restart (when the profile can do them), each followed by
// another wait. Correct relays settle in the first wait and pay nothing.
// Both touch every scenario, so both are in every running history. It
// reports whether the scenario drained.
func (r *Run) drain(ctx context.Context) bool {
	drained := &scenarios.Wait{For: "drained"}
	if r.wait(ctx, drained) {
		return true
	}
	p := r.opt.Profile
	if p.Has(profile.CapFlush) {
		r.progress("not drained: flushing the relay's queue")
		if err := (env{r}).Fault(history.FaultFlush, "drain", func() error { return r.opt.Relay.Flush(ctx) }); err == nil && r.wait(ctx, drained) {
			return true
		}
	}
	if p.Has(profile.CapRestart) {
		r.progress("not drained: restarting the relay")
		err := (env{r}).Fault(history.FaultRelayRestart, "drain", func() error { return r.restartRelay(ctx) })
		if err == nil {
			return r.wait(ctx, drained)
		}
	}
	return false
}

// watchLate watches one retry interval (retry_max) for late duplicates
// from the last moment a relay could send a copy again (lateCopyFrom): a
// relay sends a copy it believes undelivered at the latest one retry
// interval after it last tried it or came back from a restart. settled
// says the drain saw the queue list none of the messages; else (no queue
// listing, or not drained) the watch runs from the drain, as for a copy
// whose final reply the relay may not have had. A restart during the
// watch that could have lost the record of a copy makes it longer.
func (r *Run) watchLate(ctx context.Context, settled bool) {
	drainedAt, retryMax := time.Now(), r.timing.RetryMax.D()
	end := func() time.Time {
		from := r.track.lateCopyFrom(drainedAt, r.relayTouchedEnd)
		if !settled && from.Before(drainedAt) {
			from = drainedAt
		}
		if from.IsZero() {
			return from
		}
		return from.Add(retryMax)
	}
	said := false
	for {
		e := end()
		if !time.Now().Before(e) {
			return
		}
		if !said {
			r.progress("drained; watching %s more for late duplicates (one retry interval, %s, after the last moment the relay could send a copy again)", time.Until(e).Round(100*time.Millisecond), retryMax)
			said = true
		} else {
			r.progress("a relay restart since: watching until %s for late duplicates", e.Format("15:04:05"))
		}
		if !r.until(ctx, e, func() bool { return end().After(e) }) || ctx.Err() != nil {
			return
		}
	}
}

// restartSteps counts sc's restart steps.
func restartSteps(sc *scenarios.Scenario) int {
	n := 0
	for i := range sc.Steps {
		if sc.Steps[i].Restart != nil {
			n++
		}
	}
	return n
}

// relayTouchedEnd returns the end of the last relay restart, stop or
// start in the scenario's history (its own or a neighbour's) that ended
// at or after t, now for one that has not ended (ok false: none).
func (r *Run) relayTouchedEnd(t time.Time) (end time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.h.Faults {
		switch f.Kind {
		case history.FaultRelayRestart, history.FaultRelayStop, history.FaultRelayStart:
			if f.End.IsZero() {
				return time.Now(), true
			}
			if !f.End.Before(t) && f.End.After(end) {
				end, ok = f.End, true
			}
		}
	}
	return end, ok
}

// relayTouchedSince reports whether a relay restart, stop or start in the
// scenario's history (its own or a neighbour's) ended at or after t, or
// has not ended.
func (r *Run) relayTouchedSince(t time.Time) bool {
	_, touched := r.relayTouchedEnd(t)
	return touched
}

// restartRelay restarts the relay under test, bounded by twice its
// restart grace (and ten seconds for the commands themselves).
func (r *Run) restartRelay(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, restartTimeout(r.timing))
	defer cancel()
	return r.opt.Relay.Restart(ctx)
}

// Close ends the scenario's share of the hub (the history is kept by the
// caller) and closes a hub of its own.
func (r *Run) Close() {
	r.stopPolling()
	r.releaseWorld()
	r.unregister()
	if r.ownHub {
		r.hub.Close()
	}
}

// RunScenario runs a whole scenario outside Ginkgo (tools, tests): Begin,
// every step, Finish. A step error stops the steps; the history so far is
// still judged.
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
