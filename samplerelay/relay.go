// Package samplerelay is the built-in sample relay: a small store-and-forward
// SMTP relay with a disk queue, retries with exponential backoff, delay and
// failure DSNs, and a set of deliberate bugs (off by default) that each make
// one harness verdict fire. It is run as its own process
// (`greyharness sample-relay serve`) so that a restart is a real process
// restart, and in-process by its tests.
//
// Inbound SMTP uses github.com/mhale/smtpd and outbound uses the
// github.com/emersion/go-smtp client, so that a quirk of go-smtp (which the
// fake MTA is built on) cannot hide behind the same quirk in the relay.
package samplerelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/mhale/smtpd"
)

// DefaultHostname is the relay's host name when Config.Hostname is empty.
const DefaultHostname = "sample-relay.greyharness.test"

// Defaults for the zero values of Config's durations.
const (
	DefaultMinBackoff          = time.Second
	DefaultMaxBackoff          = 2 * time.Second
	DefaultQueueLifetime       = 30 * time.Second
	DefaultDelayWarning        = 10 * time.Second
	DefaultDoubleRestartWindow = 10 * time.Second
	hammerInterval             = 200 * time.Millisecond
	schedulerTick              = 50 * time.Millisecond
	flushPollEvery             = 2 // scheduler ticks between flush-request scans (100 ms)
)

// Config configures a sample relay.
type Config struct {
	Listen string // SMTP listen address, host:port (port 0 picks one; see Ready)
	// NextHop lists the MX hosts (host:port) every message and every DSN
	// is relayed to, in order: a 4xx or a connection failure at one sends
	// the recipients on to the next in the same attempt (RFC 5321 §5.1).
	NextHop []string
	// Lanes are more next hops, one per lane: a recipient whose domain's
	// first label starts "lN-" (N from 1 to len(Lanes)) is relayed to
	// Lanes[N-1] only, as a transport table would route it (the harness
	// gives a scenario that holds lane N such labels; docs/relays.md).
	Lanes    []string
	QueueDir string // the disk queue; created if missing
	Hostname string // EHLO name, Reporting-MTA; default DefaultHostname
	Bugs     []Bug  // deliberate defects; none by default

	MinBackoff    time.Duration // first retry delay (default 1s)
	MaxBackoff    time.Duration // retry delay cap (default 2s)
	QueueLifetime time.Duration // undelivered after this → failure DSN (default 30s)
	DelayWarning  time.Duration // undelivered after this → one delayed DSN (default 10s; negative disables)

	Logf func(string, ...any) // optional log sink

	// DoubleRestartWindow (kb950757 bug only): a start within this time of
	// the previous start is a double restart. Default 10s.
	DoubleRestartWindow time.Duration
	// Ready, when set, is called once the queue is loaded and the SMTP
	// listener is bound, with the listener's address.
	Ready func(addr net.Addr)
}

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		return errors.New("samplerelay: Listen is required")
	}
	if len(c.NextHop) == 0 {
		return errors.New("samplerelay: NextHop is required")
	}
	if c.QueueDir == "" {
		return errors.New("samplerelay: QueueDir is required")
	}
	if c.Hostname == "" {
		c.Hostname = DefaultHostname
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.QueueLifetime <= 0 {
		c.QueueLifetime = DefaultQueueLifetime
	}
	if c.DelayWarning == 0 {
		c.DelayWarning = DefaultDelayWarning
	}
	if c.DoubleRestartWindow <= 0 {
		c.DoubleRestartWindow = DefaultDoubleRestartWindow
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	for _, b := range c.Bugs {
		if _, err := ParseBug(string(b)); err != nil {
			return fmt.Errorf("samplerelay: %w", err)
		}
	}
	return nil
}

type relay struct {
	cfg  Config
	bugs bugSet
	st   *store
	logf func(string, ...any)
	ctx  context.Context

	mu       sync.Mutex
	msgs     map[string]*envelope
	inflight map[string]bool
	closed   bool
	// stamp is the start-up stamp the scheduler and the queue listing
	// accept; writerStamp is the one the deferral path writes after a 4.7.1.
	// They differ only after a double restart with the kb950757 bug.
	stamp, writerStamp string

	wake chan struct{}
	wg   sync.WaitGroup // deliveries in flight
}

// Run loads the queue from cfg.QueueDir, serves SMTP on cfg.Listen and
// relays to cfg.NextHop until ctx is done; then it stops accepting, aborts
// deliveries in flight (they are retried on the next start) and returns nil.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	r := &relay{
		cfg:      cfg,
		bugs:     newBugSet(cfg.Bugs),
		st:       &store{dir: cfg.QueueDir},
		logf:     cfg.Logf,
		ctx:      ctx,
		msgs:     map[string]*envelope{},
		inflight: map[string]bool{},
		wake:     make(chan struct{}, 1),
	}
	if err := r.startup(time.Now()); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("samplerelay: listen: %w", err)
	}
	tl := &trackListener{Listener: ln, conns: map[net.Conn]struct{}{}}
	srv := &smtpd.Server{
		Appname:           "sample-relay",
		Hostname:          cfg.Hostname,
		MsgIDHandler:      r.receive,
		DisableReverseDNS: true,
		Timeout:           2 * time.Minute,
		MaxSize:           32 << 20,
		// Set, not left 0: mhale/smtpd v0.8.3 writes its default (100, RFC
		// 5321's minimum) into this shared Server from each session's RCPT,
		// a data race between sessions.
		MaxRecipients: 100,
	}
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		_ = srv.Serve(tl)
	}()
	r.logf("listening on %s, next hops %v, queue %s, bugs %v", ln.Addr(), cfg.NextHop, cfg.QueueDir, cfg.Bugs)
	if cfg.Ready != nil {
		cfg.Ready(ln.Addr())
	}

	r.loop(ctx)

	// Shut down: no more 250s, no more deliveries.
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	_ = srv.Close()
	tl.closeAll()
	<-serveDone
	r.wg.Wait()
	r.logf("stopped")
	return nil
}

// startup is the start-up handshake: wipe (bug), stamp, load and re-stamp.
func (r *relay) startup(now time.Time) error {
	if err := r.st.init(); err != nil {
		return fmt.Errorf("samplerelay: queue dir: %w", err)
	}
	if r.bugs[BugLoseQueueOnRestart] {
		if err := r.st.wipe(); err != nil {
			return fmt.Errorf("samplerelay: %w", err)
		}
		r.logf("bug %s: queue wiped on start", BugLoseQueueOnRestart)
	}
	prev, err := r.st.readBoot()
	if err != nil {
		r.logf("ignoring unreadable boot record: %v", err)
		prev = nil
	}
	boot := 1
	if prev != nil {
		boot = prev.Boot + 1
	}
	r.stamp = fmt.Sprintf("%d.1", boot)
	r.writerStamp = r.stamp
	if r.bugs[BugKB950757] && prev != nil && now.Sub(prev.StartedAt) >= 0 && now.Sub(prev.StartedAt) < r.cfg.DoubleRestartWindow {
		// The handshake runs a second time: the listing/scheduler side
		// takes the new stamp, the deferral writer keeps the first one.
		r.stamp = fmt.Sprintf("%d.2", boot)
		r.logf("bug %s: double restart (%s after the previous start): start-up handshake ran twice, stamps %s/%s",
			BugKB950757, now.Sub(prev.StartedAt).Round(time.Millisecond), r.stamp, r.writerStamp)
	}
	envs, errs := r.st.load(true)
	for _, e := range errs {
		r.logf("queue load: %v", e)
	}
	for _, env := range envs {
		if r.bugs[BugRedeliverAfterRestart] {
			reset := false
			for _, rc := range env.Recipients {
				if rc.State == stateDelivered {
					rc.State = statePending
					rc.NextAttempt = now
					reset = true
				}
			}
			if reset {
				// Queued again as if it had just arrived: however late
				// the restart, it is delivered again, not expired.
				env.Arrival = now
			}
			env.Done = false
		}
		if env.Done {
			continue
		}
		if len(env.activeRcpts()) == 0 {
			_ = r.st.removeMsg(env.ID)
			continue
		}
		env.Stamp = r.stamp // re-stamp: releases anything an old stamp hid
		if err := r.st.save(env); err != nil {
			return fmt.Errorf("samplerelay: re-stamp %s: %w", env.ID, err)
		}
		r.msgs[env.ID] = env
	}
	if len(r.msgs) > 0 {
		r.logf("loaded %d queued message(s)", len(r.msgs))
	}
	return r.st.writeBoot(&bootState{Boot: boot, Stamp: r.stamp, StartedAt: now})
}

// receive is the smtpd handler for the final dot: the message is on disk
// (fsync'd) before it returns, and smtpd answers 250 only after that.
func (r *relay) receive(_ net.Addr, from string, to []string, data []byte) (string, error) {
	now := time.Now()
	msgID, harnessID, _ := headerFields(data)
	env := &envelope{
		ID:        newQueueID(),
		Sender:    from,
		Arrival:   now,
		MessageID: msgID,
		HarnessID: harnessID,
	}
	for _, a := range to {
		env.Recipients = append(env.Recipients, &rcptState{Addr: a, State: statePending, NextAttempt: now})
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return "", errors.New("421 4.3.2 sample relay shutting down")
	}
	env.Stamp = r.stamp
	if err := r.st.add(env, data); err != nil {
		r.logf("queue write failed: %v", err)
		return "", errors.New("451 4.3.0 queue write failed")
	}
	r.msgs[env.ID] = env
	r.logf("queued %s from=<%s> to=%v message-id=<%s>", env.ID, from, to, msgID)
	r.kick()
	return env.ID, nil
}

func (r *relay) kick() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *relay) loop(ctx context.Context) {
	t := time.NewTicker(schedulerTick)
	defer t.Stop()
	n := 0
	for {
		r.schedule(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-t.C:
			n++
			if n%flushPollEvery == 0 {
				r.checkFlush()
			}
		}
	}
}

func (r *relay) backoff(attempts int) time.Duration {
	if r.bugs[BugHammer] {
		return hammerInterval
	}
	d := r.cfg.MinBackoff
	for i := 1; i < attempts && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	if d > r.cfg.MaxBackoff {
		d = r.cfg.MaxBackoff
	}
	return d
}

// schedule runs expiry, delay warnings and due deliveries.
func (r *relay) schedule(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed || r.ctx.Err() != nil {
		return
	}
	for id, env := range r.msgs {
		if r.inflight[id] || env.Done || env.Stamp != r.stamp {
			continue // in flight, finished, or hidden by a stamp mismatch
		}
		if !now.Before(env.Arrival.Add(r.cfg.QueueLifetime)) {
			if r.expire(env, now) {
				continue
			}
		}
		if r.cfg.DelayWarning > 0 && !now.Before(env.Arrival.Add(r.cfg.DelayWarning)) {
			r.delayWarn(env, now)
		}
		var due []string
		hasDeferred := false
		for _, rc := range env.Recipients {
			if rc.active() && rc.Stuck == "" && !rc.NextAttempt.After(now) {
				due = append(due, rc.Addr)
				if rc.State == stateDeferred {
					hasDeferred = true
				}
			}
		}
		if len(due) == 0 {
			continue
		}
		if r.bugs[BugResendAcceptedRcpts] && hasDeferred {
			for _, rc := range env.Recipients {
				if rc.State == stateDelivered {
					due = append(due, rc.Addr)
				}
			}
		}
		r.inflight[id] = true
		r.wg.Add(1)
		go r.deliver(env.clone(), due)
	}
}

// expire bounces every retryable recipient past the queue lifetime. It
// reports whether the message is gone.
func (r *relay) expire(env *envelope, now time.Time) bool {
	var expired []*rcptState
	for _, rc := range env.Recipients {
		if rc.active() && rc.Stuck == "" {
			expired = append(expired, rc)
		}
	}
	if len(expired) == 0 {
		return false
	}
	for _, rc := range expired {
		rc.State = stateBounced
	}
	if r.bugs[BugNoDSNOnExpiry] {
		r.logf("bug %s: %s expired, deleted without a DSN", BugNoDSNOnExpiry, env.ID)
	} else {
		r.logf("%s expired after %s: failure DSN for %d recipient(s)", env.ID, r.cfg.QueueLifetime, len(expired))
		r.queueDSN(env, expired, "failed", now)
	}
	return r.finish(env)
}

func (r *relay) delayWarn(env *envelope, now time.Time) {
	var late []*rcptState
	for _, rc := range env.Recipients {
		if rc.active() && rc.Stuck == "" && !rc.DelayNotified && rc.Attempts > 0 {
			late = append(late, rc)
		}
	}
	if len(late) == 0 {
		return
	}
	for _, rc := range late {
		rc.DelayNotified = true
	}
	r.logf("%s undelivered after %s: delay DSN for %d recipient(s)", env.ID, r.cfg.DelayWarning, len(late))
	r.queueDSN(env, late, "delayed", now)
	if err := r.st.save(env); err != nil {
		r.logf("save %s: %v", env.ID, err)
	}
}

// finish saves env, or removes it when no recipient is left. It reports
// whether the message is gone from the schedule.
func (r *relay) finish(env *envelope) bool {
	if len(env.activeRcpts()) > 0 {
		if err := r.st.save(env); err != nil {
			r.logf("save %s: %v", env.ID, err)
		}
		return false
	}
	if r.bugs[BugRedeliverAfterRestart] {
		// The bug: the delivery record is not trusted on restart, so the
		// files are kept and the recipients are reset on the next start.
		env.Done = true
		if err := r.st.save(env); err != nil {
			r.logf("save %s: %v", env.ID, err)
		}
		return true
	}
	if err := r.st.removeMsg(env.ID); err != nil {
		r.logf("remove %s: %v", env.ID, err)
	}
	delete(r.msgs, env.ID)
	return true
}

// apply records one delivery attempt's outcomes.
func (r *relay) apply(id string, res map[string]outcome, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.inflight, id)
	env := r.msgs[id]
	if env == nil {
		return
	}
	var bounced []*rcptState
	saw4xx, saw471 := false, false
	for _, rc := range env.Recipients {
		o, ok := res[rc.Addr]
		if !ok {
			continue
		}
		rc.Attempts++
		rc.LastAttempt = now
		switch o.class {
		case 2:
			rc.State = stateDelivered
			rc.LastReply, rc.LastError = o.reply, ""
			r.logf("%s <%s> delivered: %s", id, rc.Addr, o.reply)
		case 5:
			rc.State = stateBounced
			rc.LastReply, rc.LastError = o.reply, ""
			bounced = append(bounced, rc)
			r.logf("%s <%s> bounced: %s", id, rc.Addr, o.reply)
		default: // 4 or a network error
			if o.class == 4 {
				rc.LastReply, rc.LastError = o.reply, ""
				saw4xx = true
				if o.status == "4.7.1" {
					saw471 = true
				}
			} else {
				rc.LastReply, rc.LastError = "", o.err
			}
			if rc.State == stateDelivered {
				// resend-accepted-rcpts re-sent an accepted recipient; a
				// temporary failure of the duplicate changes nothing.
				continue
			}
			rc.State = stateDeferred
			bo := r.backoff(rc.Attempts)
			rc.NextAttempt = now.Add(bo)
			switch {
			case o.class == 4 && r.bugs[BugBounceOn4xx]:
				rc.State = stateBounced
				bounced = append(bounced, rc)
				r.logf("bug %s: <%s> bounced on %s", BugBounceOn4xx, rc.Addr, o.reply)
			case r.bugs[BugNoRetry]:
				rc.Stuck, rc.NextAttempt = stuckNoRetry, time.Time{}
			case r.bugs[BugStallVisible]:
				rc.Stuck, rc.StallInterval = stuckStallVisible, bo
			}
			r.logf("%s <%s> deferred (attempt %d, next in %s): %s", id, rc.Addr, rc.Attempts, bo, o.text())
		}
	}
	if saw4xx && r.bugs[BugDropOn4xx] {
		r.logf("bug %s: %s deleted after a 4xx", BugDropOn4xx, id)
		if err := r.st.removeMsg(id); err != nil {
			r.logf("remove %s: %v", id, err)
		}
		delete(r.msgs, id)
		return
	}
	if saw471 && r.bugs[BugKB950757] && r.stamp != r.writerStamp {
		env.Stamp = r.writerStamp
		r.logf("bug %s: %s deferred with 4.7.1 and written with stale stamp %s: hidden from queue and retry", BugKB950757, id, r.writerStamp)
	}
	if len(bounced) > 0 {
		r.queueDSN(env, bounced, "failed", now)
	}
	r.finish(env)
	r.kick()
}

// checkFlush answers flush requests (files flush-*.req in the queue dir).
func (r *relay) checkFlush() {
	reqs, _ := filepath.Glob(r.st.flushGlob())
	if len(reqs) == 0 {
		return
	}
	now := time.Now()
	r.mu.Lock()
	n := 0
	for _, env := range r.msgs {
		if env.Done || env.Stamp != r.stamp {
			continue
		}
		for _, rc := range env.Recipients {
			if rc.active() && rc.Stuck == "" && rc.NextAttempt.After(now) {
				rc.NextAttempt = now
				n++
			}
		}
	}
	r.mu.Unlock()
	for _, req := range reqs {
		if err := renameSync(req, r.st.flushAck(req)); err != nil {
			r.logf("flush ack: %v", err)
		}
	}
	r.logf("flush: %d recipient(s) made due", n)
	r.kick()
}

type trackListener struct {
	net.Listener
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *trackListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = map[net.Conn]struct{}{}
	l.mu.Unlock()
	l.Listener.Close()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
}

type trackedConn struct {
	net.Conn
	l    *trackListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
