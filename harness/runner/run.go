// Package runner runs one scenario against a relay under test: it starts
// the fake MTA with the scenario's policy, submits traffic, injects faults,
// samples the relay's queue, waits on journal events, and hands the
// recorded history to the ledger. Traffic, faults, history and validation
// stay apart: this package records, the ledger judges.
package runner

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/report"
	"github.com/greyharness/greyharness/harness/traffic"
	"github.com/greyharness/greyharness/scenarios"
	"go.yaml.in/yaml/v3"
)

// Relay controls the relay under test (harness/relay implements it).
type Relay interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	Restart(ctx context.Context) error
	Flush(ctx context.Context) error
	Queue(ctx context.Context) history.QueueSnapshot
	Logs() string
}

// Options are shared by every scenario of a run.
type Options struct {
	Profile *profile.Profile
	Relay   Relay
	// ResultsDir receives a folder per failed scenario (history.json,
	// result.json, report.txt, relay.log) for `greyharness judge`.
	ResultsDir string
	// Progress receives live progress lines.
	Progress io.Writer
	// TLS is the fake MTA's STARTTLS config (self-signed when nil).
	TLS *tls.Config
	// Verbose prints every finding's timeline, not only failures'.
	Verbose bool
}

// Run is one scenario in progress.
type Run struct {
	opt        *Options
	sc         *scenarios.Scenario
	policy     *fakemta.Policy
	policyNode *yaml.Node
	stateDir   string
	timing     history.Timing

	mu     sync.Mutex
	h      history.History
	fake   *fakemta.Server
	remote *remoteFakeMTA // staging: a fake MTA beside the relay, driven by its API
	sub    func()         // cancels the journal subscription
	subD   chan struct{}

	track    *tracker
	pollStop chan struct{}
	pollDone chan struct{}
	sent     map[string]bool // Message-IDs already used, for resubmissions
	lastSub  []*traffic.Message
}

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
	r := &Run{opt: opt, sc: sc, policy: pol, policyNode: &sc.Policy, stateDir: dir, timing: opt.Profile.Timing, track: newTracker(), sent: map[string]bool{}}
	r.h = history.History{Scenario: sc.Name, Relay: opt.Profile.Name, Timing: r.timing, Started: time.Now(), Expect: expectOf(sc)}
	if pol.Greylist != nil {
		r.h.GreylistDelay = history.Duration(pol.Greylist.Delay)
	}
	if err := r.startFake(false); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if opt.Profile.Commands.Queue != "" && opt.Profile.QueueFormat != profile.QueueNone {
		r.pollStop, r.pollDone = make(chan struct{}), make(chan struct{})
		go r.pollQueue()
	}
	return r, nil
}

func expectOf(sc *scenarios.Scenario) history.Expect {
	e := history.Expect{NoDuplicates: true, NoSilentHold: true}
	if sc.Expect.NoDuplicates != nil {
		e.NoDuplicates = *sc.Expect.NoDuplicates
	}
	e.ToleratedDuplicates = sc.Expect.Duplicates == "tolerate"
	e.RetryTooSoonIsError = sc.Expect.RetryTooSoon == "fail"
	for _, m := range sc.Expect.Messages {
		x := history.Expectation{Group: m.Group, Verdict: m.Verdict, Within: m.Within}
		if m.DSN != nil {
			x.DSNAction = m.DSN.Action
		}
		e.Messages = append(e.Messages, x)
	}
	return e
}

// record appends a journal event to the history and the tracker.
func (r *Run) record(ev fakemta.Event) {
	r.mu.Lock()
	r.h.Journal = append(r.h.Journal, ev)
	r.mu.Unlock()
	r.track.observe(ev)
}

// policyYAML renders a policy node for the remote fake MTA's API.
func policyYAML(n *yaml.Node) []byte {
	if n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// "policy: ~" is the empty policy; the API refuses a null document.
		return []byte("{}")
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return []byte("{}")
	}
	return b
}

// startFake starts the in-process fake MTA on the profile's next hop, or
// points the profile's remote fake MTA at this scenario.
func (r *Run) startFake(wipe bool) error {
	if ref := r.opt.Profile.FakeMTA; ref != nil {
		rm := newRemoteFakeMTA(ref)
		if err := rm.begin(policyYAML(r.policyNode), r.record); err != nil {
			return err
		}
		r.mu.Lock()
		r.remote = rm
		r.mu.Unlock()
		return nil
	}
	srv, err := fakemta.New(fakemta.Config{
		Listen: mxListeners(r.opt.Profile, r.sc, r.policy), Policy: r.currentPolicy(), StateDir: r.stateDir, WipeState: wipe,
		TLS: r.opt.TLS, ReadTimeout: 2 * time.Minute, Logf: func(string, ...any) {},
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
			r.record(ev)
		}
	}()
	r.mu.Lock()
	r.fake, r.sub, r.subD = srv, cancel, done
	r.mu.Unlock()
	return nil
}

// mxListeners is where the in-process fake MTA listens: every next hop of
// the profile (MX 1, 2, …) when the scenario works with several MX hosts
// (its policy has mx, or it needs multi-mx), else the first only. A relay
// that tries its next MX after a 4xx then meets a closed port and must
// retry later, as with one next hop: each scenario keeps the meaning it
// was written with (a fault on attempt 1 is not undone by attempt 2 at
// the backup MX a moment later).
func mxListeners(p *profile.Profile, sc *scenarios.Scenario, pol *fakemta.Policy) []string {
	if len(p.NextHop) <= 1 || (pol != nil && pol.MX != nil) || slices.Contains(sc.Needs(), profile.CapMultiMX) {
		return p.NextHop
	}
	return p.NextHop[:1]
}

func (r *Run) currentPolicy() *fakemta.Policy {
	return r.policy
}

// stopFake closes the fake MTA and waits until its journal is all recorded.
func (r *Run) stopFake() error {
	r.mu.Lock()
	srv, cancel, done, rm := r.fake, r.sub, r.subD, r.remote
	r.fake, r.remote = nil, nil
	r.mu.Unlock()
	if rm != nil {
		rm.end()
		return nil
	}
	if srv == nil {
		return nil
	}
	err := srv.Close()
	// Close closed the subscription after the last event: drain it.
	<-done
	cancel()
	return err
}

// pollQueue samples the relay's queue listing. Sampling is how the ledger
// learns whether a late message is visible; waits never depend on it.
func (r *Run) pollQueue() {
	defer close(r.pollDone)
	every := r.timing.RetryMax.D() / 2
	every = min(max(every, 250*time.Millisecond), 5*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.pollStop:
			return
		case <-t.C:
			r.snapshot(context.Background())
		}
	}
}

func (r *Run) snapshot(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s := r.opt.Relay.Queue(ctx)
	s.End = time.Now()
	r.mu.Lock()
	r.h.Queue = append(r.h.Queue, s)
	r.mu.Unlock()
}

func (r *Run) progress(format string, args ...any) {
	if r.opt.Progress != nil {
		fmt.Fprintf(r.opt.Progress, "[%s +%s] %s\n", r.sc.Name, time.Since(r.h.Started).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
	}
}

func (r *Run) fault(kind history.FaultKind, detail string, f func() error) error {
	start := time.Now()
	err := f()
	fl := history.Fault{Kind: kind, Start: start, End: time.Now(), Detail: detail}
	if err != nil {
		fl.Err = err.Error()
	}
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, fl)
	r.mu.Unlock()
	return err
}

// Step runs one step. It returns an error only when the harness could not
// do what the step says (a restart command failed, ...): verdicts about
// messages are the ledger's business, so a wait that times out is noted,
// not failed.
//
// A step error is recorded in the history (the first one wins) as
// "step N (file:line): error"; the error returned says the same.
func (r *Run) Step(ctx context.Context, i int, st *scenarios.Step) error {
	r.progress("step %d/%d: %s", i+1, len(r.sc.Steps), Describe(st))
	if err := r.step(ctx, st); err != nil {
		err = fmt.Errorf("step %d (%s:%d): %w", i+1, r.sc.File, st.Line, err)
		r.StepFailed(err.Error())
		return err
	}
	return nil
}

// StepFailed records that a step could not be carried out, for failures
// Step cannot return (a spec timeout). The first one wins.
func (r *Run) StepFailed(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h.StepError == "" {
		r.h.StepError = msg
	}
}

// StepError returns the recorded step error, "" when every step so far
// was carried out.
func (r *Run) StepError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.h.StepError
}

func (r *Run) step(ctx context.Context, st *scenarios.Step) error {
	switch {
	case st.Send != nil:
		return r.send(st.Send)
	case st.Wait != nil:
		r.wait(ctx, st.Wait)
		return nil
	case st.Restart != nil:
		return r.restart(ctx, st.Restart)
	case st.FakeMTA != "":
		return r.fakemtaStep(st.FakeMTA)
	case st.Policy != nil:
		p, err := fakemta.ParsePolicyNode(r.sc.File, st.Policy)
		if err != nil {
			return err
		}
		return r.fault(history.FaultPolicySwap, fmt.Sprintf("line %d", st.Line), func() error {
			r.policy, r.policyNode = p, st.Policy
			r.mu.Lock()
			srv, rm := r.fake, r.remote
			if p.Greylist != nil {
				r.h.GreylistDelay = history.Duration(p.Greylist.Delay)
			}
			r.mu.Unlock()
			if rm != nil {
				return rm.setPolicy(policyYAML(st.Policy))
			}
			if srv != nil {
				srv.SetPolicy(p)
			}
			return nil
		})
	case st.Flush:
		return r.fault(history.FaultFlush, "", func() error { return r.opt.Relay.Flush(ctx) })
	case st.Checkpoint != nil:
		// Mark the checkpoint before its listing, which is stamped with its
		// start: the ledger judges a checkpoint on the first listing at or
		// after it, and that must be this one, not a later poll.
		at := time.Now()
		r.snapshot(ctx)
		r.mu.Lock()
		r.h.Checkpoints = append(r.h.Checkpoints, history.Checkpoint{Name: st.Checkpoint.Name, At: at})
		r.mu.Unlock()
		return nil
	}
	return errors.New("step has no action")
}

// Describe says what a step does, for spec names and progress lines.
func Describe(st *scenarios.Step) string {
	switch {
	case st.Send != nil:
		s := st.Send
		n := max(s.Count, 1)
		extra := ""
		if s.EHLOTwice {
			extra += ", EHLO twice"
		}
		if s.RsetBeforeMail {
			extra += ", RSET before MAIL"
		}
		if s.ResubmitSameMessageID {
			extra += ", same Message-ID again"
		}
		return fmt.Sprintf("send %d message(s) to %s%s", n, strings.Join(s.To, ", "), extra)
	case st.Wait != nil:
		w := st.Wait
		what := w.For
		switch w.For {
		case "attempts":
			what = fmt.Sprintf("%d attempts", w.Attempts)
		case "dsn":
			what = "DSN Action: " + w.Action
		}
		if w.Group != "" {
			what += " (" + w.Group + ")"
		}
		return "wait for " + what
	case st.Restart != nil:
		t := max(st.Restart.Times, 1)
		s := "restart the relay"
		if t > 1 {
			s = fmt.Sprintf("restart the relay %d times in a row", t)
		}
		if st.Restart.When != "" && st.Restart.When != "now" {
			s += " " + st.Restart.When
		}
		return s
	case st.FakeMTA != "":
		return "fake MTA: " + st.FakeMTA
	case st.Policy != nil:
		return "swap the fake MTA policy"
	case st.Flush:
		return "flush the relay's queue"
	case st.Checkpoint != nil:
		return "checkpoint " + st.Checkpoint.Name
	}
	return "?"
}

func (r *Run) send(s *scenarios.Send) error {
	count := max(s.Count, 1)
	from := s.From
	if from == "" {
		from = "sender@client.greyharness.test"
	}
	group := s.Name
	if group == "" {
		group = "default"
	}
	tag := s.TagSender == nil || *s.TagSender
	var msgs []*traffic.Message
	if s.ResubmitSameMessageID && len(r.lastSub) > 0 {
		// Hand the relay the same messages again: same Message-ID, a new
		// harness id, as a client that did not see the first 250 would.
		for _, prev := range r.lastSub {
			m := *prev
			m.HarnessID = traffic.NewID()
			if tag {
				m.From = traffic.TagSender(from, m.HarnessID)
			}
			msgs = append(msgs, &m)
		}
	} else {
		for range count {
			id := traffic.NewID()
			m := &traffic.Message{HarnessID: id, MessageID: id + "@harness.greyharness.test", Group: group, From: from,
				To: s.To, Size: s.Size, Headers: s.Headers, EHLOTwice: s.EHLOTwice, RsetBeforeMail: s.RsetBeforeMail}
			if tag {
				m.From = traffic.TagSender(from, id)
			}
			msgs = append(msgs, m)
		}
	}
	sub := &traffic.Submitter{Submit: r.opt.Profile.Submit}
	// Register envelopes before sending so attempts racing the 250 are followed.
	for _, m := range msgs {
		r.track.expect(history.Submission{HarnessID: m.HarnessID, MessageID: m.MessageID, Group: m.Group, MailFrom: m.From, RcptTo: m.To})
	}
	results := sub.SendAll(msgs, s.Concurrency)
	accepted, unknown, refusedRcpts := 0, 0, 0
	for _, res := range results {
		res.Resubmission = r.sent[res.MessageID]
		r.sent[res.MessageID] = true
		r.mu.Lock()
		r.h.Submissions = append(r.h.Submissions, res)
		r.mu.Unlock()
		r.track.submitted(res)
		switch {
		case res.Accepted:
			accepted++
			refusedRcpts += len(res.RcptTo) - len(res.AcceptedRcpts())
		case res.Unknown:
			unknown++
		}
	}
	r.lastSub = msgs
	line := fmt.Sprintf("submitted %d, relay accepted %d", len(results), accepted)
	if refusedRcpts > 0 {
		line += fmt.Sprintf(" (refusing %d recipient(s))", refusedRcpts)
	}
	if unknown > 0 {
		line += fmt.Sprintf(", %d with no reply to the final dot (outcome unknown)", unknown)
	}
	r.progress("%s", line)
	if accepted == 0 {
		first := results[0].Reply
		return fmt.Errorf("the relay accepted none of %d submissions (first reply: %s)", len(results), replyText(first))
	}
	return nil
}

func replyText(r fakemta.Reply) string {
	s := strings.TrimSpace(fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text))
	if r.Dropped {
		s = "line dropped without a reply: " + r.Text
	}
	return s
}

// deadline derives a wait's timeout from the profile's timing.
func (r *Run) deadline(w *scenarios.Wait) time.Duration {
	t := r.timing
	grace := t.RestartGrace.D()
	if w.Timeout > 0 {
		return w.Timeout.D()
	}
	gl := r.h.GreylistDelay.D()
	factor := w.Factor
	if factor == 0 {
		factor = 3
	}
	if w.TimeoutFrom != "" {
		var base time.Duration
		switch w.TimeoutFrom {
		case "retry_max":
			base = t.RetryMax.D()
		case "queue_lifetime":
			base = t.QueueLifetime.D()
		case "delay_warning":
			base = t.DelayWarning.D()
		}
		return time.Duration(float64(base)*factor) + grace
	}
	left, _ := r.track.pending(w.Group, func(*msgState) bool { return false })
	load := time.Duration(left) * 20 * time.Millisecond
	retries := time.Duration(float64(t.RetryMax.D()) * factor)
	switch w.For {
	case "deferred":
		return retries + grace + load
	case "attempts":
		return time.Duration(w.Attempts)*t.RetryMax.D()*2 + gl + grace + load
	case "dsn":
		if w.Action == "delayed" {
			return t.DelayWarning.D() + retries + grace + load
		}
		return t.QueueLifetime.D() + retries + grace + load
	default: // delivered, drained
		return gl + retries + grace + load
	}
}

func waitCond(w *scenarios.Wait) cond {
	switch w.For {
	case "deferred":
		return anyRcpt(func(rs *rcptState) bool { return rs.deferred })
	case "delivered":
		return everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 })
	case "attempts":
		return everyRcpt(func(rs *rcptState) bool { return rs.attempts >= w.Attempts })
	case "dsn":
		return func(m *msgState) bool { return m.dsn[w.Action] }
	default: // drained
		return everyRcpt(func(rs *rcptState) bool { return rs.delivered > 0 || rs.bounced })
	}
}

// wait blocks until the condition holds or its deadline passes.
func (r *Run) wait(ctx context.Context, w *scenarios.Wait) bool {
	d := r.deadline(w)
	c := waitCond(w)
	until := time.Now().Add(d)
	r.progress("waiting for %s until %s (%s)", Describe(&scenarios.Step{Wait: w})[len("wait for "):], until.Format("15:04:05"), d.Round(100*time.Millisecond))
	ok := r.until(ctx, until, func() bool { return r.track.all(w.Group, c) })
	if ok && w.For == "drained" {
		ok = r.dequeued(ctx, w.Group, until)
	}
	if !ok {
		left, total := r.track.pending(w.Group, c)
		r.progress("wait timed out: %d of %d message(s) not there yet (the ledger will say why)", left, total)
	}
	return ok
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
		qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
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

// until waits on tracker changes until f holds, the deadline, or ctx ends.
func (r *Run) until(ctx context.Context, deadline time.Time, f func() bool) bool {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		changed := r.track.wait()
		if f() {
			return true
		}
		select {
		case <-changed:
		case <-timer.C:
			return f()
		case <-ctx.Done():
			return false
		}
	}
}

func (r *Run) restart(ctx context.Context, rs *scenarios.Restart) error {
	t := r.timing
	switch rs.When {
	case "after-deferral":
		until := time.Now().Add(t.RetryMax.D()*3 + t.RestartGrace.D())
		if !r.until(ctx, until, func() bool {
			r.track.mu.Lock()
			defer r.track.mu.Unlock()
			return r.track.anyDefer
		}) {
			r.progress("no deferral seen before the restart")
		}
	case "during-data":
		until := time.Now().Add(t.RetryMax.D()*3 + t.RestartGrace.D())
		if !r.until(ctx, until, func() bool {
			r.track.mu.Lock()
			defer r.track.mu.Unlock()
			return r.track.tarpits > 0
		}) {
			r.progress("the fake MTA held no DATA phase open before the restart")
		}
	}
	times := max(rs.Times, 1)
	for i := range times {
		err := r.fault(history.FaultRelayRestart, fmt.Sprintf("%d of %d", i+1, times), func() error {
			ctx, cancel := context.WithTimeout(ctx, 2*t.RestartGrace.D()+10*time.Second)
			defer cancel()
			return r.opt.Relay.Restart(ctx)
		})
		if err != nil {
			return fmt.Errorf("restart %d of %d: %w", i+1, times, err) // (the relay's log is in the results folder)
		}
	}
	return nil
}

func (r *Run) fakemtaStep(what string) error {
	switch what {
	case "stop":
		return r.fault(history.FaultFakeMTAStop, "", r.stopFake)
	case "start":
		return r.fault(history.FaultFakeMTAStart, "", func() error { return r.startFake(false) })
	case "restart":
		return r.fault(history.FaultFakeMTARestart, "", func() error {
			if err := r.stopFake(); err != nil {
				return err
			}
			return r.startFake(false)
		})
	case "wipe-state":
		return r.fault(history.FaultFakeMTAWipe, "", func() error {
			r.mu.Lock()
			srv, rm := r.fake, r.remote
			r.mu.Unlock()
			if rm != nil {
				return rm.wipe()
			}
			if srv == nil {
				return errors.New("the fake MTA is stopped")
			}
			srv.WipeGreylist()
			return nil
		})
	}
	return fmt.Errorf("unknown fakemta action %q", what)
}

// Finish lets the scenario drain, takes a last queue listing, stops the
// fake MTA and judges the history.
//
// With ctx already done (the run was interrupted), or nothing accepted, it
// does not drain: it judges what was recorded at once.
func (r *Run) Finish(ctx context.Context) (*history.History, ledger.Result) {
	r.mu.Lock()
	running := r.fake != nil || r.remote != nil
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
	if r.pollStop != nil {
		close(r.pollStop)
		<-r.pollDone
		r.snapshot(ctx)
	}
	r.stopFake()
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
		err := r.fault(history.FaultRelayRestart, "drain", func() error {
			rctx, cancel := context.WithTimeout(ctx, 2*r.timing.RestartGrace.D()+10*time.Second)
			defer cancel()
			return r.opt.Relay.Restart(rctx)
		})
		if err == nil {
			r.wait(ctx, drained)
		}
	}
}

// Close removes the fake MTA's state (the history is kept by the caller).
func (r *Run) Close() {
	if r.pollStop != nil {
		select {
		case <-r.pollStop:
		default:
			close(r.pollStop)
			<-r.pollDone
		}
	}
	r.stopFake()
	os.RemoveAll(r.stateDir)
}

// Save writes the history, the result and the report to dir/<scenario>/
// so `greyharness judge` can re-check it offline. It returns the folder.
func Save(dir string, h *history.History, res ledger.Result, relayLogs string) (string, error) {
	if h.Submissions == nil {
		// [] not null: LoadHistory refuses a history without its submissions.
		c := *h
		c.Submissions = []history.Submission{}
		h = &c
	}
	out := filepath.Join(dir, safeName(h.Scenario))
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", err
	}
	write := func(name string, f func(io.Writer) error) error {
		fh, err := os.Create(filepath.Join(out, name))
		if err != nil {
			return err
		}
		if err := f(fh); err != nil {
			fh.Close()
			return err
		}
		return fh.Close()
	}
	if err := write("history.json", func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	}); err != nil {
		return "", err
	}
	if err := write("result.json", func(w io.Writer) error { return report.JSON(w, res) }); err != nil {
		return "", err
	}
	if err := write("report.txt", func(w io.Writer) error { report.Text(w, res, h, true); return nil }); err != nil {
		return "", err
	}
	if relayLogs != "" {
		os.WriteFile(filepath.Join(out, "relay.log"), []byte(relayLogs), 0o644)
	}
	return out, nil
}

// LoadHistory reads a history.json written by Save; see history.Load.
func LoadHistory(path string) (*history.History, error) { return history.Load(path) }

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '\\' || r == ' ' || r == ':' {
			return '_'
		}
		return r
	}, s)
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
