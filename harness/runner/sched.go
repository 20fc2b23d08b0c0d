package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
	"github.com/greyharness/greyharness/scenarios"
)

// Job is one scenario run by Schedule. Its results come as they happen:
// whether it began, each step's outcome, and the judged history.
type Job struct {
	Scenario *scenarios.Scenario
	// Timeout bounds the scenario from its beginning (0: none).
	Timeout time.Duration

	begun    chan struct{}
	cancel   chan struct{} // closed by Cancel
	once     sync.Once
	run      *Run
	beginErr error
	steps    []chan error // each gets one value: nil, the step's error, or errNotRun
	group    string       // the group of Alone scenarios it runs with (AloneGroup), when scheduled so
	lane     int          // the lane it holds (Laneable, with lanes), taken before it begins
	turn     int          // a Disruptive one's admission number (turns), 0 until scheduled
	done     chan struct{}
	hist     *history.History
	res      ledger.Result
	stepErr  error
}

// ErrNotRun is a step's result when an earlier step failed or the
// scenario could not begin.
var ErrNotRun = errors.New("not run")

// NewJob makes a job for sc.
func NewJob(sc *scenarios.Scenario, timeout time.Duration) *Job {
	j := &Job{Scenario: sc, Timeout: timeout, begun: make(chan struct{}), done: make(chan struct{}), cancel: make(chan struct{})}
	for range sc.Steps {
		j.steps = append(j.steps, make(chan error, 1))
	}
	return j
}

// Begun waits until the scenario began (or could not): its run, or the error.
func (j *Job) Begun(ctx context.Context) (*Run, error) {
	select {
	case <-j.begun:
		return j.run, j.beginErr
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Step waits for step i's result: nil when it was carried out, ErrNotRun
// when it was not (an earlier step failed), else the step's error.
func (j *Job) Step(ctx context.Context, i int) error {
	select {
	case err := <-j.steps[i]:
		j.steps[i] <- err // others may ask again
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Wait waits for the judged history; err is the first step error.
func (j *Job) Wait(ctx context.Context) (*history.History, ledger.Result, error) {
	select {
	case <-j.done:
		return j.hist, j.res, j.stepErr
	case <-ctx.Done():
		return nil, ledger.Result{}, ctx.Err()
	}
}

// Cancel ends the job: the steps left do not run, and the scenario is
// judged at once on what was recorded, without draining.
func (j *Job) Cancel() { j.once.Do(func() { close(j.cancel) }) }

// Done is closed when the job's history is judged.
func (j *Job) Done() <-chan struct{} { return j.done }

// Schedule runs jobs on one hub at the same time, as far as parallel
// allows (0: no limit; 1: one after another, as a serial run) and
// isolation lets (Isolate): Alone scenarios first, one at a time with no
// other beside them, then the Shared ones and the Disruptive ones at once,
// the Disruptive ones' restarts taking turns (turns) in the order given;
// in the order given within each. Each begins (its history starts
// collecting everyone's faults) at admission, in that order; laned ones
// when they have their lane. A scenario's turn ends
// when it has drained, so its late-duplicate watch overlaps the next ones. Schedule returns at once;
// each job reports on its own. Cancelling ctx ends every job: each is
// judged on what was recorded.
func Schedule(ctx context.Context, opt *Options, jobs []*Job, parallel int) {
	if parallel <= 0 {
		parallel = len(jobs)
	}
	var shared, disruptive, alone, laned []*Job
	for _, j := range jobs {
		switch iso, _ := Isolate(j.Scenario); {
		case opt.Hub.laned(j.Scenario):
			laned = append(laned, j)
		case iso == Alone:
			alone = append(alone, j)
		case iso == Disruptive:
			disruptive = append(disruptive, j)
		default:
			shared = append(shared, j)
		}
	}
	// The members of a group of Alone scenarios (AloneGroup) run together,
	// at the place of the first of them, when parallel lets them all run.
	alone, groupOf := groupAlone(alone, parallel)
	// Laned ones (Laneable, with lanes: alone otherwise) first among those
	// that share the run: they may wait for a lane. Shared ones before
	// disruptive ones: their first submissions go in before the first
	// restart holds submissions back.
	order := append(append(append(alone, laned...), shared...), disruptive...)
	slots := make(chan struct{}, max(parallel, 1))
	go func() {
		for i := 0; i < len(order); i++ {
			j := order[i]
			if n := groupOf[j]; n > 1 {
				members := order[i : i+n]
				if err := takeSlots(ctx, slots, n); err == nil {
					if err = opt.Hub.acquireGroup(ctx, n); err != nil {
						for range n {
							<-slots
						}
					}
				}
				if ctx.Err() != nil {
					for _, j := range order[i:] {
						j.fail(fmt.Errorf("the run ended before its turn: %w", ctx.Err()))
					}
					return
				}
				for _, j := range members {
					j.group = AloneGroup(j.Scenario)
					run := j.start(ctx, opt)
					if run == nil {
						<-slots
						continue
					}
					go func() {
						defer func() { <-slots }()
						run()
					}()
				}
				i += n - 1
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				for _, j := range order[i:] {
					j.fail(fmt.Errorf("the run ended before its turn: %w", ctx.Err()))
				}
				return
			}
			// Take the scenario's share of the hub here, in order, so a
			// scenario that runs alone is not overtaken by later ones.
			iso, _ := Isolate(j.Scenario)
			laned := opt.Hub.laned(j.Scenario)
			if laned {
				iso = LaneIsolation(j.Scenario)
			}
			if iso == Disruptive {
				// Its restarts take their turns among the disruptive
				// ones' in the order given (turns).
				j.turn = opt.Hub.turnsOf().next()
			}
			if laned {
				// A laned one waits for a free lane in its own goroutine:
				// the shared ones after them go on.
				if err := opt.Hub.acquire(ctx, Shared); err != nil {
					<-slots
					for _, j := range order[i:] {
						j.fail(fmt.Errorf("the run ended before its turn: %w", err))
					}
					return
				}
				go func() {
					defer func() { <-slots }()
					if laned {
						n, err := opt.Hub.takeLane(ctx)
						if err != nil {
							opt.Hub.release(Shared)
							j.fail(fmt.Errorf("the run ended before it had a lane: %w", err))
							return
						}
						j.lane = n
					}
					j.do(ctx, opt)
				}()
				continue
			}
			if err := opt.Hub.acquire(ctx, iso); err != nil {
				<-slots
				for _, j := range order[i:] {
					j.fail(fmt.Errorf("the run ended before its turn: %w", err))
				}
				return
			}
			// It begins here, in admission order (start), and runs its
			// steps beside the others.
			run := j.start(ctx, opt)
			if run == nil {
				<-slots
				continue
			}
			go func() {
				defer func() { <-slots }()
				run()
			}()
		}
	}()
}

// groupAlone puts the members of each group of Alone scenarios
// (AloneGroup) together, at the place of the first, and says how many
// members the first of each group leads (groupOf; 0 or 1: alone). A group
// runs together only when parallel lets all of it run at once.
func groupAlone(alone []*Job, parallel int) ([]*Job, map[*Job]int) {
	groupOf := map[*Job]int{}
	byGroup := map[string][]*Job{}
	for _, j := range alone {
		if g := AloneGroup(j.Scenario); g != "" {
			byGroup[g] = append(byGroup[g], j)
		}
	}
	var out []*Job
	placed := map[string]bool{}
	for _, j := range alone {
		g := AloneGroup(j.Scenario)
		members := byGroup[g]
		if g == "" || len(members) < 2 || len(members) > parallel {
			out = append(out, j)
			continue
		}
		if placed[g] {
			continue
		}
		placed[g] = true
		groupOf[j] = len(members)
		out = append(out, members...)
	}
	return out, groupOf
}

// takeSlots takes n of the run's parallel slots.
func takeSlots(ctx context.Context, slots chan struct{}, n int) error {
	for k := range n {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			for range k {
				<-slots
			}
			return ctx.Err()
		}
	}
	return nil
}

// fail ends a job that never began.
func (j *Job) fail(err error) {
	j.beginErr = err
	close(j.begun)
	for _, c := range j.steps {
		c <- ErrNotRun
	}
	j.stepErr = err
	close(j.done)
}

// do runs the job, its share of the hub already held.
func (j *Job) do(ctx context.Context, opt *Options) {
	if run := j.start(ctx, opt); run != nil {
		run()
	}
}

// start begins the job's scenario, its share of the hub already held, and
// returns what carries out its steps (nil when it could not begin).
// Schedule calls it in admission order, so scenarios begin in that order:
// a restart a later one carries out is in the history of every one
// admitted before it.
func (j *Job) start(ctx context.Context, opt *Options) func() {
	var stop []context.CancelFunc
	if j.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, j.Timeout)
		stop = append(stop, cancel)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop = append(stop, cancel)
	end := func() {
		for _, c := range stop {
			c()
		}
	}
	go func() {
		select {
		case <-j.cancel:
			cancel()
		case <-ctx.Done():
		}
	}()
	r, err := begin(ctx, opt, j.Scenario, true, j.group, j.lane, j.turn)
	if err != nil {
		end()
		j.fail(err)
		return nil
	}
	j.run = r
	close(j.begun)
	return func() {
		defer end()
		defer r.Close()
		j.carryOut(ctx, opt, r)
	}
}

// carryOut carries out the begun scenario's steps and judges its history.
func (j *Job) carryOut(ctx context.Context, opt *Options, r *Run) {
	var stepErr error
	for i := range j.Scenario.Steps {
		if stepErr == nil && ctx.Err() != nil {
			stepErr = fmt.Errorf("step %d and after not run: %w", i+1, context.Cause(ctx))
			r.StepFailed(stepErr.Error())
		}
		if stepErr != nil {
			j.steps[i] <- ErrNotRun
			continue
		}
		if err := r.Step(ctx, i, &j.Scenario.Steps[i]); err != nil {
			stepErr = err
			j.steps[i] <- err
			continue
		}
		if r.lane == 0 && FreeAfter(j.Scenario, i, opt.Hub.running()) && r.holds() {
			// The fake MTA is back and nothing left touches anyone: the
			// next scenarios start now, beside its last steps.
			r.progress("the fake MTA is back: the scenarios waiting for their turn go on")
			r.releaseWorld()
		}
		j.steps[i] <- nil
	}
	j.hist, j.res = r.Finish(ctx)
	j.stepErr = stepErr
	close(j.done)
}

// RunScenarios runs scenarios on one hub made for them, at the same time
// as far as parallel and isolation allow (see Schedule), and returns each
// one's judged history in the order given.
func RunScenarios(ctx context.Context, opt *Options, scs []*scenarios.Scenario, parallel int) ([]*history.History, []ledger.Result, []error) {
	o := *opt
	if o.Hub == nil {
		hub, err := NewHub(ctx, &o)
		if err != nil {
			errs := make([]error, len(scs))
			for i := range errs {
				errs[i] = err
			}
			return make([]*history.History, len(scs)), make([]ledger.Result, len(scs)), errs
		}
		defer hub.Close()
		o.Hub = hub
	}
	jobs := make([]*Job, len(scs))
	for i, sc := range scs {
		jobs[i] = NewJob(sc, 0)
	}
	Schedule(ctx, &o, jobs, parallel)
	hs, res, errs := make([]*history.History, len(scs)), make([]ledger.Result, len(scs)), make([]error, len(scs))
	for i, j := range jobs {
		<-j.Done()
		hs[i], res[i], errs[i] = j.hist, j.res, j.stepErr
	}
	return hs, res, errs
}
