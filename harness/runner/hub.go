package runner

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sync/semaphore"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/scenarios"
)

// Hub is what the scenarios of one run share: one fake MTA (in-process on
// the profile's next hop, or the profile's remote one through its API) in
// which each scenario is a tenant, one relay, and the rule of who may run
// beside whom. It routes every journal event to the scenario it belongs
// to, and records a fault that touches everyone (a relay restart, a fake
// MTA outage, a flush) in every scenario running at the time.
type Hub struct {
	opt      *Options
	stateDir string
	// world is taken with weight 1 by a scenario that may run beside
	// others, and whole by one that must run alone. It is fair: a waiting
	// exclusive scenario holds back the ones queued after it.
	world *semaphore.Weighted
	// turns orders the relay restarts of the Disruptive scenarios running.
	turns *turns
	// relayUp is taken with weight 1 by whatever needs the relay up for a
	// moment (a submission, a checkpoint's listing), and whole while the
	// relay restarts: a neighbour's restart never refuses a submission.
	relayUp *semaphore.Weighted

	// delivering is read-held while a fault is being added to the
	// histories it reaches (fault); unregister takes it to wait for that.
	delivering sync.RWMutex

	mu     sync.Mutex
	fake   *fakemta.Server
	sub    func()
	subD   chan struct{}
	remote *remoteFakeMTA
	runs   map[string]*Run // by tenant
	conns  map[uint64]*connRoute
	made   int

	pollStop, pollDone chan struct{}

	// mxRuns are the scenarios about several MX hosts (AboutMX) holding
	// the world (one, or a group: AloneGroup): while there is one, the
	// in-process fake MTA listens on every next hop, else on the first only.
	mxRuns map[*Run]bool
	mxMu   sync.Mutex // one openMX or closeMX at a time

	// groupLeft counts the members of the group of Alone scenarios
	// (AloneGroup) holding the world together that have not let it go.
	groupLeft int

	// lanes holds the free lanes (Profile.Lanes, numbered from 1); nil
	// without lanes. laneRuns is each held lane's scenario, laneAt the
	// lane of each address the fake MTA listens on for one.
	lanes    chan int
	laneRuns map[int]*Run
	laneAt   map[string]int

	// down is the scenario whose fault keeps the relay or the fake MTA
	// down now (nil when up); up is closed when it ends.
	down *Run
	up   chan struct{}

	// lost is why the relay is down for good (nil while it is not): no
	// scenario begins or carries out a step from then on; lostBy is the
	// scenario whose restart failed, and lostCh is closed then.
	lost   *RelayDownError
	lostBy *Run
	lostCh chan struct{}
}

const worldWeight = 1 << 20

// connRoute holds one connection's events that are no tenant's (connect,
// commands, replies, TLS, close) until a transaction shows whose they are.
type connRoute struct {
	pending []fakemta.Event
	seen    map[string]bool // tenants this connection carried transactions of
	// known: its connect event was seen; lane is the lane it came on (0:
	// a next hop) and laneRun the scenario holding that lane then.
	known   bool
	local   string
	lane    int
	laneRun *Run
}

// NewHub starts the run's fake MTA: in-process on the profile's next hop,
// or, with a `fakemta.api` in the profile, the event stream of the remote one.
func NewHub(ctx context.Context, opt *Options) (*Hub, error) {
	if opt.TLS == nil {
		var err error
		if opt.TLS, err = fakemta.SelfSignedTLS(); err != nil {
			return nil, err
		}
	}
	h := &Hub{opt: opt, world: semaphore.NewWeighted(worldWeight), turns: newTurns(), relayUp: semaphore.NewWeighted(worldWeight), lostCh: make(chan struct{}), runs: map[string]*Run{}, conns: map[uint64]*connRoute{}, mxRuns: map[*Run]bool{},
		laneRuns: map[int]*Run{}, laneAt: map[string]int{}}
	if n := len(opt.Profile.Lanes); n > 0 && opt.Profile.FakeMTA == nil {
		h.lanes = make(chan int, n)
		for i := 1; i <= n; i++ {
			h.lanes <- i
		}
	}
	if opt.Profile.FakeMTA == nil {
		dir, err := os.MkdirTemp("", "greyharness-fakemta-")
		if err != nil {
			return nil, err
		}
		h.stateDir = dir
	}
	if err := h.startFake(ctx); err != nil {
		h.Close()
		return nil, err
	}
	if opt.Profile.Commands.Queue != "" && opt.Profile.QueueFormat != profile.QueueNone {
		h.pollStop, h.pollDone = make(chan struct{}), make(chan struct{})
		go h.pollQueue()
	}
	return h, nil
}

// pollQueue samples the relay's queue listing for every scenario running
// (one listing serves them all). Sampling is how the ledger learns whether
// a late message is visible; waits never depend on it.
func (h *Hub) pollQueue() {
	defer close(h.pollDone)
	every := h.opt.Profile.Timing.RetryMax.D() / 2
	every = min(max(every, 250*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-h.pollStop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		idle := len(h.runs) == 0
		h.mu.Unlock()
		if idle {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), queueTimeout)
		snap := h.opt.Relay.Queue(ctx)
		cancel()
		snap.End = time.Now()
		h.mu.Lock()
		runs := h.all()
		h.mu.Unlock()
		for _, r := range runs {
			r.addSnapshot(snap)
		}
	}
}

// Close stops the fake MTA and removes its state.
func (h *Hub) Close() {
	if h.pollStop != nil {
		close(h.pollStop)
		<-h.pollDone
		h.pollStop = nil
	}
	h.stopFake()
	if h.stateDir != "" {
		os.RemoveAll(h.stateDir)
	}
}

// newTenant names a scenario's tenant: a DNS label, random so that runs
// sharing a remote fake MTA cannot collide. A scenario holding lane N has
// a label starting "lN-": the relay routes it to lane N's address.
func (h *Hub) newTenant(lane int) string {
	h.mu.Lock()
	h.made++
	n := h.made
	h.mu.Unlock()
	b := make([]byte, 3)
	rand.Read(b)
	if lane > 0 {
		return fmt.Sprintf("l%d-t%d-%s", lane, n, hex.EncodeToString(b))
	}
	return fmt.Sprintf("t%d-%s", n, hex.EncodeToString(b))
}

// laned reports whether sc runs on a lane here: the profile has lanes and
// sc is Laneable.
func (h *Hub) laned(sc *scenarios.Scenario) bool {
	return h != nil && h.lanes != nil && Laneable(sc)
}

// takeLane waits for a free lane and returns its number.
func (h *Hub) takeLane(ctx context.Context) (int, error) {
	select {
	case n := <-h.lanes:
		return n, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// giveLane frees lane n, listening on it again when its holder left it
// closed (a step failed before its fakemta start).
func (h *Hub) giveLane(n int) error {
	h.mu.Lock()
	delete(h.laneRuns, n)
	srv := h.fake
	h.mu.Unlock()
	var err error
	if srv != nil {
		err = srv.OpenLane(n)
	}
	h.lanes <- n
	return err
}

// closeLane and openLane stop and start lane n's listener: a fake-MTA
// outage for its holder alone.
func (h *Hub) closeLane(n int) error {
	return h.withFake(func(s *fakemta.Server) error { return s.CloseLane(n) })
}
func (h *Hub) openLane(n int) error {
	return h.withFake(func(s *fakemta.Server) error { return s.OpenLane(n) })
}

// withFake runs f on the in-process fake MTA, or says it is stopped.
func (h *Hub) withFake(f func(*fakemta.Server) error) error {
	h.mu.Lock()
	srv := h.fake
	h.mu.Unlock()
	if srv == nil {
		return errors.New("the fake MTA is stopped")
	}
	return f(srv)
}

// turnsOf returns the hub's turns (nil for a hub made without NewHub, in
// tests: nobody waits).
func (h *Hub) turnsOf() *turns {
	if h == nil {
		return nil
	}
	return h.turns
}

// acquire waits until a scenario of this isolation may run.
func (h *Hub) acquire(ctx context.Context, iso Isolation) error {
	if iso == Alone {
		return h.world.Acquire(ctx, worldWeight)
	}
	return h.world.Acquire(ctx, 1) // Disruptive ones order their restarts by turns
}

// acquireGroup waits until n Alone scenarios of one group may run
// together: the world, whole, held until each has released it
// (releaseGroup).
func (h *Hub) acquireGroup(ctx context.Context, n int) error {
	if err := h.world.Acquire(ctx, worldWeight); err != nil {
		return err
	}
	h.mu.Lock()
	h.groupLeft = n
	h.mu.Unlock()
	return nil
}

// releaseGroup lets the world go for one member of the group; the last
// one's release lets the others run.
func (h *Hub) releaseGroup() {
	h.mu.Lock()
	h.groupLeft--
	last := h.groupLeft == 0
	h.mu.Unlock()
	if last {
		h.world.Release(worldWeight)
	}
}

func (h *Hub) release(iso Isolation) {
	switch iso {
	case Alone:
		h.world.Release(worldWeight)
	default:
		h.world.Release(1)
	}
}

// withRelay runs f while the relay is up: no restart begins meanwhile.
// Once the relay is down for good it does not run f and returns why.
func (h *Hub) withRelay(ctx context.Context, f func() error) error {
	if err := h.relayUp.Acquire(ctx, 1); err != nil {
		return err
	}
	defer h.relayUp.Release(1)
	if lost, _ := h.relayLost(); lost != nil {
		return lost
	}
	return f()
}

// relayLost returns why the relay is down for good and the scenario
// whose restart failed, nil while it is not.
func (h *Hub) relayLost() (*RelayDownError, *Run) {
	if h == nil {
		return nil, nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.lost, h.lostBy
}

// lostDone is closed once the relay is down for good (nil, never, for a
// hub made without NewHub, in tests).
func (h *Hub) lostDone() <-chan struct{} {
	if h == nil {
		return nil
	}
	return h.lostCh
}

// bringBack is called, the relay held down, when by's restart of the
// relay failed (cause): the relay may be down, and every scenario after it
// would meet a refused connection and be judged for it. The harness tries
// once to bring it back — the profile's stop (what is left of it), then its
// start, bounded like a restart: not the restart that just failed — a
// fault that touches everyone, recorded in every running scenario's
// history.
// When that fails too the relay is down for good: no scenario begins or
// carries out a step from then on, and each says why (RelayDownError).
// The scenario whose restart failed keeps its own failure.
func (h *Hub) bringBack(by *Run, where string, cause error) {
	by.progress("the relay did not come back (%v): trying once to bring it back for the others", cause)
	detail := fmt.Sprintf("recovery: the harness tries once to bring the relay back, stop and start (the restart at %s failed)", where)
	err := h.fault(by, history.FaultRelayRestart, detail, func() error {
		ctx, cancel := context.WithTimeout(by.base, restartTimeout(by.timing))
		defer cancel()
		stopErr := h.opt.Relay.Stop(ctx)
		if err := h.opt.Relay.Start(ctx); err != nil {
			if stopErr != nil {
				return fmt.Errorf("%w (and stopping what was left of it: %v)", err, stopErr)
			}
			return err
		}
		return nil
	})
	if err == nil {
		by.progress("the relay is back: the run goes on")
		return
	}
	lost := &RelayDownError{Scenario: by.sc.Name, Where: where, Err: cause.Error(), Back: err.Error()}
	by.progress("%v: no scenario runs on it from now on", lost)
	h.mu.Lock()
	if h.lost == nil {
		h.lost, h.lostBy = lost, by
		if h.lostCh != nil {
			close(h.lostCh)
		}
	}
	h.mu.Unlock()
}

// relayDown runs f (a restart) once no submission or listing is under way.
func (h *Hub) relayDown(ctx context.Context, f func() error) error {
	if err := h.relayUp.Acquire(ctx, worldWeight); err != nil {
		return err
	}
	defer h.relayUp.Release(worldWeight)
	return f()
}

// startFake starts the in-process fake MTA on the state of the run, or
// opens the remote one's event stream; the tenants registered before are
// registered again (a fake MTA restart forgets them; its journal keeps
// their greylist memory).
func (h *Hub) startFake(ctx context.Context) error {
	if ref := h.opt.Profile.FakeMTA; ref != nil {
		rm := newRemoteFakeMTA(ref, nil)
		if err := rm.open(ctx, h.route); err != nil {
			return err
		}
		h.mu.Lock()
		h.remote = rm
		h.mu.Unlock()
		return nil
	}
	// The scenarios running are tenants from the start: their greylist
	// memory comes back in the one pass over the journal.
	h.mu.Lock()
	runs := h.all()
	h.mu.Unlock()
	var ts []fakemta.TenantSpec
	for _, r := range runs {
		p, _ := r.policyNow()
		ts = append(ts, fakemta.TenantSpec{Name: r.tenant, Policy: p, Options: r.tenantOptions()})
	}
	var lanes []string
	if h.lanes != nil {
		lanes = h.opt.Profile.Lanes
	}
	srv, err := fakemta.New(fakemta.Config{
		Listen: h.opt.Profile.NextHop[:min(1, len(h.opt.Profile.NextHop))], Lanes: lanes, StateDir: h.stateDir, Tenants: ts,
		TLS: h.opt.TLS, ReadTimeout: 2 * time.Minute, Logf: func(string, ...any) {},
	})
	if err != nil {
		return err
	}
	ch, cancel := srv.Journal().Subscribe()
	if err := srv.Start(); err != nil {
		cancel()
		srv.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			h.route(ev)
		}
	}()
	h.mu.Lock()
	h.fake, h.sub, h.subD = srv, cancel, done
	for n := 1; n <= len(lanes); n++ {
		h.laneAt[srv.LaneAddr(n)] = n
	}
	mx := len(h.mxRuns) > 0
	h.mu.Unlock()
	if mx && len(h.opt.Profile.NextHop) > 1 {
		// Added after Start, so that closeMX can take them away again.
		return srv.ListenMore(h.opt.Profile.NextHop[1:])
	}
	return nil
}

// openMX makes the backup MX hosts (next hops after the first) answer for
// r, a scenario about MX hosts that holds the world (alone or in its
// group). At all other times the in-process fake MTA listens on the first
// next hop only (AboutMX says why); a (re)start while one holds the world
// opens them again.
func (h *Hub) openMX(r *Run) error {
	h.mxMu.Lock()
	defer h.mxMu.Unlock()
	h.mu.Lock()
	first := len(h.mxRuns) == 0
	h.mxRuns[r] = true
	srv := h.fake
	h.mu.Unlock()
	if !first || srv == nil || len(h.opt.Profile.NextHop) < 2 {
		return nil // open already; stopped: startFake opens them; one next hop: nothing to open
	}
	return srv.ListenMore(h.opt.Profile.NextHop[1:])
}

// closeMX closes the backup MX hosts again when r was the last scenario
// that held them open: a relay's next attempt there meets a closed port.
func (h *Hub) closeMX(r *Run) {
	h.mxMu.Lock()
	defer h.mxMu.Unlock()
	h.mu.Lock()
	if !h.mxRuns[r] {
		h.mu.Unlock()
		return
	}
	delete(h.mxRuns, r)
	last := len(h.mxRuns) == 0
	srv := h.fake
	h.mu.Unlock()
	if last && srv != nil && len(h.opt.Profile.NextHop) > 1 {
		srv.Unlisten(h.opt.Profile.NextHop[1:])
	}
}

// stopFake stops the fake MTA and waits until its journal is all routed.
func (h *Hub) stopFake() error {
	h.mu.Lock()
	srv, cancel, done, rm := h.fake, h.sub, h.subD, h.remote
	h.fake, h.remote = nil, nil
	h.mu.Unlock()
	if rm != nil {
		return rm.Stop(context.Background())
	}
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-done // Close closed the subscription after the last event
	cancel()
	return err
}

// addr is where the in-process fake MTA listens ("" when stopped), for tests.
func (h *Hub) addr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.fake == nil {
		return ""
	}
	return h.fake.Addr()
}

func (h *Hub) running() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.fake != nil || h.remote != nil
}

// register makes r a tenant with its policy; for a scenario about MX
// hosts, the backup MX hosts answer from now on.
func (h *Hub) register(ctx context.Context, r *Run) error {
	h.mu.Lock()
	// The history starts where it starts to collect everyone's faults
	// (addFault's broadcast takes h.mu too): a relay restart that ended
	// after Started is in it.
	r.h.Started = time.Now()
	h.runs[r.tenant] = r
	srv, rm := h.fake, h.remote
	h.mu.Unlock()
	p, node := r.policyNow()
	var err error
	if r.mx {
		err = h.openMX(r)
	}
	switch {
	case err != nil:
	case rm != nil:
		err = rm.putTenant(ctx, r.tenant, policyYAML(node), r.owns())
	case srv != nil:
		err = srv.SetTenant(r.tenant, p, r.tenantOptions())
	}
	h.mu.Lock()
	if err != nil {
		delete(h.runs, r.tenant)
	} else if r.lane > 0 {
		h.laneRuns[r.lane] = r
	}
	h.mu.Unlock()
	return err
}

// unregister forgets r's tenant and returns when its history ends (it
// collects no fault after that); its late traffic is nobody's. A scenario
// that ends with the fake MTA stopped by its own step (a step failed before
// its start) does not leave it stopped for the others; one that ends
// during a neighbour's outage leaves it as it is, the neighbour's to end.
func (h *Hub) unregister(ctx context.Context, r *Run) time.Time {
	h.mu.Lock()
	srv, rm := h.fake, h.remote
	mine := h.down == nil || h.down == r
	if h.down == r {
		close(h.up)
		h.down, h.up = nil, nil
	}
	h.mu.Unlock()
	if srv == nil && rm == nil && mine {
		if err := h.startFake(ctx); err != nil {
			r.progress("starting the fake MTA again for the others: %v", err)
		}
		h.mu.Lock()
		srv, rm = h.fake, h.remote
		h.mu.Unlock()
	}
	switch {
	case rm != nil:
		rm.deleteTenant(ctx, r.tenant)
	case srv != nil:
		srv.RemoveTenant(r.tenant)
	}
	// No fault is being delivered meanwhile (fault): one that ended before
	// the history's end is in it, one after is not.
	h.delivering.Lock()
	h.mu.Lock()
	delete(h.runs, r.tenant)
	ended := time.Now()
	h.mu.Unlock()
	h.delivering.Unlock()
	return ended
}

// setPolicy swaps r's policy (its tenant's only).
func (h *Hub) setPolicy(ctx context.Context, r *Run, p *fakemta.Policy, node *yaml.Node) error {
	h.mu.Lock()
	srv, rm := h.fake, h.remote
	h.mu.Unlock()
	switch {
	case rm != nil:
		return rm.putTenant(ctx, r.tenant, policyYAML(node), r.owns())
	case srv != nil:
		return srv.SetTenant(r.tenant, p, r.tenantOptions())
	}
	return nil // stopped: the policy is set when it starts again
}

// wipe forgets r's greylist state (its tenant's only).
func (h *Hub) wipe(ctx context.Context, r *Run) error {
	h.mu.Lock()
	srv, rm := h.fake, h.remote
	h.mu.Unlock()
	switch {
	case rm != nil:
		return rm.wipeTenant(ctx, r.tenant)
	case srv != nil:
		return srv.WipeTenant(r.tenant)
	}
	return errors.New("the fake MTA is stopped")
}

// fault carries out a fault that touches everyone and records it in the
// history of every scenario running: by's own, and its neighbours' with
// the scenario that caused it named.
func (h *Hub) fault(by *Run, kind history.FaultKind, detail string, f func() error) error {
	switch kind {
	case history.FaultRelayRestart, history.FaultRelayStop, history.FaultFakeMTAStop, history.FaultFakeMTARestart:
		h.mu.Lock()
		if h.down == nil {
			h.down, h.up = by, make(chan struct{})
		}
		h.mu.Unlock()
	}
	start := time.Now()
	err := f()
	switch kind {
	case history.FaultRelayRestart, history.FaultRelayStart, history.FaultFakeMTAStart, history.FaultFakeMTARestart:
		h.mu.Lock()
		if h.down != nil {
			close(h.up)
			h.down, h.up = nil, nil
		}
		h.mu.Unlock()
	}
	fl := history.Fault{Kind: kind, Start: start, Detail: detail}
	if err != nil {
		fl.Err = err.Error()
	}
	// The fault ends where the scenarios it reaches are taken, under the
	// lock register and unregister stamp a history's Started and Ended
	// with: a history holds every fault that ended between the two. An
	// unregister waits (delivering) until the fault is in its history.
	h.delivering.RLock()
	defer h.delivering.RUnlock()
	h.mu.Lock()
	fl.End = time.Now()
	runs := make([]*Run, 0, len(h.runs)+1)
	for _, r := range h.runs {
		runs = append(runs, r)
	}
	h.mu.Unlock()
	if !containsRun(runs, by) {
		runs = append(runs, by)
	}
	for _, r := range runs {
		x := fl
		if r != by {
			x.Detail = strings.TrimSpace("by neighbour " + by.sc.Name + " " + detail)
		}
		r.addFault(x)
	}
	return err
}

// downByOther returns a channel closed when the outage a neighbour of r
// is causing ends, or nil when there is none.
func (h *Hub) downByOther(r *Run) <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.down != nil && h.down != r {
		return h.up
	}
	return nil
}

func containsRun(rs []*Run, r *Run) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// route hands a journal event to the scenario it belongs to. Events of a
// tenant go to its scenario. A connection's events that name no tenant
// (connect, commands, replies, TLS, close) wait until a transaction on it
// shows whose they are, and go to that scenario; a connection that carried
// no transaction (refused at HELO, a failed TLS handshake) is every
// scenario's, as the fake MTA could not tell, and so are transactions and
// control events of no tenant: the ledger of each names them foreign or
// counts them as an attempt of every message in flight. With lanes, a
// connection on a lane is its holder's alone, and one at a next hop no
// laned scenario's (onConn).
func (h *Hub) route(ev fakemta.Event) {
	h.mu.Lock()
	var to []*Run
	switch {
	case ev.Tenant != "":
		if r := h.runs[ev.Tenant]; r != nil {
			to = append(to, r)
		}
		if ev.Kind == fakemta.EventTransaction && ev.Conn != 0 {
			cr := h.conn(ev.Conn)
			if r := h.runs[ev.Tenant]; r != nil {
				for _, p := range cr.pending {
					r.record(p)
				}
				if cr.known && cr.lane != r.lane {
					defer r.misrouted(h.misrouteWhy(r, cr, ev))
				}
			}
			cr.pending = cr.pending[:0]
			cr.seen[ev.Tenant] = true
		}
	case ev.Kind == fakemta.EventTransaction && ev.Conn != 0:
		to = h.onConn(h.conns[ev.Conn])
	case ev.Conn == 0:
		to = h.all()
	case ev.Kind == fakemta.EventClose:
		cr := h.conn(ev.Conn)
		delete(h.conns, ev.Conn)
		cr.pending = append(cr.pending, ev)
		var rs []*Run
		for t := range cr.seen {
			if r := h.runs[t]; r != nil {
				rs = append(rs, r)
			}
		}
		if len(cr.seen) == 0 {
			rs = h.onConn(cr)
		}
		h.mu.Unlock()
		for _, r := range rs {
			for _, p := range cr.pending {
				r.record(p)
			}
		}
		return
	default:
		cr := h.conn(ev.Conn)
		cr.pending = append(cr.pending, ev)
		if ev.Kind == fakemta.EventConnect {
			cr.known, cr.local, cr.lane = true, ev.Local, h.laneAt[ev.Local]
			cr.laneRun = h.laneRuns[cr.lane]
		}
	}
	h.mu.Unlock()
	for _, r := range to {
		r.record(ev)
	}
}

// misrouteWhy says how the relay routed r's transaction ev against the
// lanes: to a lane not r's, or not to r's lane. Called with mu held.
func (h *Hub) misrouteWhy(r *Run, cr *connRoute, ev fakemta.Event) string {
	came := "a next hop"
	if cr.lane > 0 {
		came = fmt.Sprintf("lane %d", cr.lane)
	}
	want := "its next hop (its tenant holds no lane)"
	if r.lane > 0 {
		want = fmt.Sprintf("lane %d (its tenant label starts l%d-)", r.lane, r.lane)
	}
	local := ""
	if cr.local != "" {
		local = " (" + cr.local + ")"
	}
	return fmt.Sprintf("lanes: the relay delivered this scenario's mail (tenant %s, connection %d) to %s%s, not to %s: its routing does not match the profile's lanes (docs/relays.md, \"Lanes\"), so a connection-level policy may have met the wrong scenario's traffic", r.tenant, ev.Conn, came, local, want)
}

// onConn returns the scenarios whose traffic a connection may have
// carried, for its events that name no tenant: on a lane, its holder's
// only (nobody's when none held it); at a next hop, every scenario's but
// the laned ones' (their mail goes to their lanes: misrouted says so when
// it does not); unknown (its connect was not seen), everyone's.
// Called with mu held.
func (h *Hub) onConn(cr *connRoute) []*Run {
	switch {
	case cr == nil || !cr.known:
		return h.all()
	case cr.lane > 0 && cr.laneRun != nil:
		return []*Run{cr.laneRun}
	case cr.lane > 0:
		return nil
	}
	out := make([]*Run, 0, len(h.runs))
	for _, r := range h.runs {
		if r.lane == 0 {
			out = append(out, r)
		}
	}
	return out
}

// conn returns a connection's route, made on first sight. Called with mu held.
func (h *Hub) conn(id uint64) *connRoute {
	cr := h.conns[id]
	if cr == nil {
		cr = &connRoute{seen: map[string]bool{}}
		h.conns[id] = cr
	}
	return cr
}

// all returns every registered scenario. Called with mu held.
func (h *Hub) all() []*Run {
	out := make([]*Run, 0, len(h.runs))
	for _, r := range h.runs {
		out = append(out, r)
	}
	return out
}

// tenantAddr puts the tenant's label in front of an address's domain:
// carol@rcpt.test → carol@TENANT.rcpt.test. The fake MTA strips it again
// before its policy looks, so the scenario's rules match as written.
func tenantAddr(tenant, addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || tenant == "" {
		return addr
	}
	return addr[:at+1] + tenant + "." + addr[at+1:]
}

// RelayDownError says why the relay under test is down for good: a
// scenario's restart failed (Where: its step, or its drain), and so did
// the harness's one attempt to bring it back.
type RelayDownError struct {
	Scenario, Where string
	Err             string // the restart's error
	Back            string // the error of the attempt to bring it back
}

func (e *RelayDownError) Error() string {
	return fmt.Sprintf("relay down since %s %s: restart failed: %s; the harness's one attempt to bring it back failed: %s", e.Scenario, e.Where, e.Err, e.Back)
}
