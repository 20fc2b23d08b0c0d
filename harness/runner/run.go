// Package runner runs one scenario against a relay under test: it starts
// the fake MTA with the scenario's policy, submits traffic, injects faults,
// samples the relay's queue, waits on journal events, and hands the
// recorded history to the ledger. Traffic, faults, history and validation
// stay apart: this package records, the ledger judges.
//
// The files split by concern: run.go (the Run and its steps), lifecycle.go
// (Begin, Finish, drain, Close), fakemta.go and remote.go (the fake MTA,
// in-process or by its API), env.go (what a step may do), queue.go (queue
// sampling), wait.go (waits and their deadlines), save.go (results).
package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/profile"
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
	// Hub is the fake MTA and the relay the scenarios of a run share; nil
	// gives each scenario a hub of its own.
	Hub *Hub
}

// Run is one scenario in progress.
type Run struct {
	opt    *Options
	sc     *scenarios.Scenario
	base   context.Context // Begin's ctx without its end, for Close
	timing history.Timing

	hub    *Hub
	ownHub bool   // made by Begin, closed by Close
	tenant string // the scenario's tenant in the shared fake MTA
	// iso says who may run beside the scenario, why says why; an Alone
	// one owns the fake MTA's connection-level stages.
	iso Isolation
	why string
	mx  bool // about several MX hosts (AboutMX): MX 2 and on answer while it holds the world
	// lane is the lane it holds (Laneable, with lanes in the profile), 0
	// for none: its tenant's label starts "lN-", the relay routes its mail
	// to lane N's address, and the fake MTA gives it that lane's
	// connection-level stages. It is held until the tenant ends.
	lane int
	// group is the group of Alone scenarios (AloneGroup) it holds the
	// world with, "" when it holds it alone.
	group string

	mu         sync.Mutex
	h          history.History
	policy     *fakemta.Policy // in force (guarded by mu)
	policyNode *yaml.Node
	held       bool // holds its share of the hub
	owner      bool // owns the fake MTA's connection-level stages
	registered bool // its tenant is registered
	laneHeld   bool // lane is still its own (given back when its tenant ends)
	// misroute says how the relay routed its mail against the lanes, ""
	// while it routed it right: no step runs after.
	misroute string
	polling  bool // takes the hub's queue listings

	at string // the step being carried out, "step N (file:line)", for the cause a failed restart names

	track   *tracker
	sent    map[string]bool // Message-IDs already used, for resubmissions
	lastSub []*traffic.Message
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

func (r *Run) progress(format string, args ...any) {
	if r.opt.Progress != nil {
		fmt.Fprintf(r.opt.Progress, "[%s +%s] %s\n", r.sc.Name, time.Since(r.h.Started).Round(100*time.Millisecond), fmt.Sprintf(format, args...))
	}
}

// fault runs f and records it as a fault of kind in the history.
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
//
// Once the relay is down for good (a neighbour's restart failed, and so did
// the harness's attempt to bring it back: RelayDownError), no step is
// carried out, and a step it cut short fails: each says so, naming the
// cause, and the history records it (RelayDown), so that the scenario is
// not judged for what a stopped relay refused.
func (r *Run) Step(ctx context.Context, i int, st *scenarios.Step) error {
	at := fmt.Sprintf("step %d (%s:%d)", i+1, r.sc.File, st.Line)
	r.mu.Lock()
	r.at = at
	r.mu.Unlock()
	if lost, by := r.hub.relayLost(); lost != nil && by != r {
		err := fmt.Errorf("%s: not run: %w", at, lost)
		r.markRelayDown(lost)
		r.StepFailed(err.Error())
		return err
	}
	if err := r.misrouteErr(); err != nil {
		err = fmt.Errorf("%s: not run: %w", at, err)
		r.StepFailed(err.Error())
		return err
	}
	r.progress("step %d/%d: %s", i+1, len(r.sc.Steps), st.Describe())
	if st.Send != nil {
		// A send after its last restart exposes a Disruptive scenario:
		// the neighbours' restarts go first (turns).
		if err := r.hub.turnsOf().await(ctx, r, false, false); err != nil {
			err = fmt.Errorf("step %d (%s:%d): waiting for the neighbours' restarts: %w", i+1, r.sc.File, st.Line, err)
			r.StepFailed(err.Error())
			return err
		}
	}
	err := fmt.Errorf("step has no action")
	if a := st.Action(); a != nil {
		err = a.Run(ctx, env{r})
	}
	if st.Restart != nil {
		r.hub.turnsOf().restarted(r)
	}
	if lost, by := r.hub.relayLost(); lost != nil && by != r {
		// Down for good while the step ran: whatever it did is cut short.
		err = fmt.Errorf("cut short: %w", lost)
		r.markRelayDown(lost)
	}
	if err != nil {
		err = fmt.Errorf("step %d (%s:%d): %w", i+1, r.sc.File, st.Line, err)
		r.StepFailed(err.Error())
		return err
	}
	return nil
}

// where names the place of a fault, for the cause a failed restart
// names: the step being carried out, or the drain.
func (r *Run) where(detail string) string {
	if detail == "drain" {
		return "drain"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.at
}

// markRelayDown records that the relay went down for good while the
// scenario ran, by a neighbour's doing (the first cause wins).
func (r *Run) markRelayDown(lost *RelayDownError) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.h.RelayDown == "" {
		r.h.RelayDown = lost.Error()
	}
}

// misrouted records that the relay routed the scenario's mail against the
// lanes: the scenario fails with why, and no step runs after.
func (r *Run) misrouted(why string) {
	r.mu.Lock()
	first := r.misroute == ""
	if first {
		r.misroute = why
	}
	r.mu.Unlock()
	if first {
		r.progress("%s", why)
		r.StepFailed(why)
	}
}

// misrouteErr is why no step runs any more, nil while the relay routes right.
func (r *Run) misrouteErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.misroute == "" {
		return nil
	}
	return errors.New(r.misroute)
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

// Describe says what a step does, for spec names and progress lines.
func Describe(st *scenarios.Step) string { return st.Describe() }
