// Package fakemta is a fake remote MTA: the next hop of a relay under test.
// It answers by a Policy (greylisting with real per-triplet state, scheduled
// replies, drops, delays, TLS faults), records everything in a Journal,
// parses the DSNs a relay sends back, and serves a control API.
package fakemta

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// Config configures a Server.
type Config struct {
	// Listen addresses (host:port); ":0" ports pick a free one. The
	// policy's mx.hosts are listened on too: each listener is one MX host.
	Listen []string
	// Lanes are more listen addresses, each one tenant's alone: a
	// connection accepted on lane N (1-based) gets the connection-level
	// stages and connection numbering of the tenant holding lane N
	// (TenantOptions.Lane), else the server's own. A relay that routes each
	// laned tenant's mail (its label starts "lN-") to lane N's address lets
	// a scenario with a connection-level policy run beside others. Lanes
	// are not MX hosts: their connections are MX 1 and they take no ordinal.
	Lanes []string
	// MXState overrides the policy's mx.state: MXSplit (each listener
	// greylists on its own) or MXShared; "" keeps the policy's (shared).
	MXState string
	Policy  *Policy
	// StateDir keeps the journal (and with it the greylist state) across
	// restarts. "" keeps everything in memory, every event for the
	// server's life (about 10 KB per message): right for tests, not for
	// long runs (`greyharness fakemta` without --state uses a scratch
	// folder instead).
	StateDir string
	// scratch marks StateDir as a folder of the CLI's own: the journal is
	// never fsync'd (nothing outlives the process) and Close removes it.
	scratch bool
	// JournalSync 0 (the default) fsyncs the journal before every reply to
	// a final dot. A positive interval writes the message's events to the
	// file before that reply (a crash of the process loses nothing) and
	// fsyncs at most this often (a crash of the machine may lose the last
	// interval): for load tests, where the per-message fsync is the cost.
	JournalSync time.Duration
	// GreylistStore is "" (memory, rebuilt from the journal) or
	// redis://HOST:PORT/DB: the greylist lives in Redis, shared by every
	// fake MTA using it and kept across restarts.
	GreylistStore string
	// WipeState starts with no greylist memory (the journal is kept: it is history).
	WipeState bool
	// Tenants are registered before the journal is read, so their greylist
	// memory is rebuilt in the same pass (a fake MTA restarted under the
	// scenarios sharing it); SetTenant registers one later.
	Tenants []TenantSpec
	// KeepBodies writes every received body to this folder.
	KeepBodies string
	// TLS enables STARTTLS.
	TLS *tls.Config
	// Domain is the name in the greeting (default fakemta.greyharness.test).
	Domain string
	// Limits (defaults: 32 MiB, 2000 bytes, 1000, 5 min, 1 min).
	MaxMessageBytes int64
	MaxLineLength   int
	MaxRecipients   int
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	// Now is the clock (tests inject one); default time.Now.
	Now func() time.Time
	// Logf logs server-side problems; default log.Printf to stderr.
	Logf func(format string, args ...any)
}

// Server is a running fake MTA.
type Server struct {
	cfg     Config
	policy  atomic.Pointer[Policy]
	grey    *greylistState // attempt counters, and the records with the memory store
	store   greyStore
	journal *Journal
	smtp    *smtp.Server
	started time.Time
	connSeq atomic.Uint64
	msgSeq  atomic.Uint64
	metrics *Metrics
	// def is the server's own scope (traffic of no tenant); ten the tenants.
	def *tenant
	ten tenants

	mu        sync.Mutex
	serving   bool            // Start has run: tenants' MX hosts are listened on at once
	listening map[string]bool // configured addresses listened on
	listeners []net.Listener
	added     map[string]net.Listener // listened on after Start (ListenMore, a tenant's MX hosts)
	conns     map[*conn]struct{}
	lanes     []net.Listener // by lane number - 1; nil while a lane is closed
	laneAddrs []string       // by lane number - 1: where each listened first (its :0 port chosen)
	closed    bool
	serveWG   sync.WaitGroup
}

// New opens the state (replaying the journal to rebuild greylist memory)
// and prepares a server; Start or Serve runs it.
func New(cfg Config) (*Server, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.JournalSync < 0 {
		return nil, fmt.Errorf("fakemta: journal sync interval %s is negative", cfg.JournalSync)
	}
	if cfg.Logf == nil {
		l := log.New(os.Stderr, "fakemta: ", log.LstdFlags)
		cfg.Logf = l.Printf
	}
	if cfg.Domain == "" {
		cfg.Domain = "fakemta.greyharness.test"
	}
	if cfg.MaxMessageBytes == 0 {
		cfg.MaxMessageBytes = 32 << 20
	}
	if cfg.MaxLineLength == 0 {
		cfg.MaxLineLength = 2000
	}
	if cfg.MaxRecipients == 0 {
		cfg.MaxRecipients = 1000
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 5 * time.Minute
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = time.Minute
	}
	if cfg.Policy == nil {
		cfg.Policy = &Policy{}
	}
	if cfg.MXState != "" && cfg.MXState != MXSplit && cfg.MXState != MXShared {
		return nil, fmt.Errorf("fakemta: mx state %q: want split or shared", cfg.MXState)
	}
	if cfg.KeepBodies != "" {
		if err := os.MkdirAll(cfg.KeepBodies, 0o755); err != nil {
			return nil, err
		}
	}
	s := &Server{cfg: cfg, grey: newGreylistState(), conns: map[*conn]struct{}{}, metrics: NewMetrics(), listening: map[string]bool{}, added: map[string]net.Listener{}}
	s.ten = tenants{byName: map[string]*tenant{}, replayed: map[string]bool{}, lanes: map[int]*tenant{}}
	s.store = memStore{s.grey}
	if cfg.GreylistStore != "" {
		rs, err := openRedisStore(cfg.GreylistStore)
		if err != nil {
			return nil, fmt.Errorf("fakemta: %w", err)
		}
		s.store = rs
	}
	s.policy.Store(cfg.Policy)
	s.def = &tenant{policy: &s.policy, grey: s.grey, store: s.store}
	for _, ts := range cfg.Tenants {
		if err := CheckTenantName(ts.Name); err != nil {
			s.store.close()
			return nil, fmt.Errorf("fakemta: %w", err)
		}
		p := ts.Policy
		if p == nil {
			p = &Policy{}
		}
		g := newGreylistState()
		t := &tenant{name: ts.Name, policy: new(atomic.Pointer[Policy]), grey: g, store: s.tenantStore(ts.Name, g), started: cfg.Now(), owner: ts.Options.Connections}
		t.policy.Store(p)
		if err := s.takeLane(t, ts.Options); err != nil {
			s.store.close()
			return nil, err
		}
		if t.owner {
			if s.ten.owner != nil {
				s.store.close()
				return nil, fmt.Errorf("%w (%s and %s)", ErrTenantConflict, s.ten.owner.name, t.name)
			}
			s.ten.owner = t
		}
		s.ten.byName[ts.Name] = t
	}
	var maxConn uint64
	syncEvery := cfg.JournalSync
	if cfg.scratch {
		syncEvery = scratchSync
	}
	j, err := openJournal(cfg.StateDir, syncEvery, cfg.Now, func(ev Event) {
		// (a journal the fake MTA cannot open leaves the store to Close)
		if ev.Conn > maxConn {
			maxConn = ev.Conn
		}
		s.replay(ev)
	})
	if err != nil {
		s.store.close()
		return nil, err
	}
	s.journal = j
	s.connSeq.Store(maxConn)
	s.msgSeq.Store(j.Seq())
	if cfg.WipeState {
		s.grey.wipe()
		if err := s.store.wipe(context.Background()); err != nil {
			s.store.close()
			j.Close()
			return nil, fmt.Errorf("fakemta: wipe greylist store: %w", err)
		}
		s.record(Event{Kind: EventControl, Note: "wipe-state"}, false)
	}
	s.started = cfg.Now()
	s.def.started = s.started
	s.record(Event{Kind: EventControl, Note: "start"}, false)

	be := smtp.BackendFunc(s.newSession)
	srv := smtp.NewServer(be)
	srv.Domain = cfg.Domain
	srv.MaxMessageBytes = cfg.MaxMessageBytes
	srv.MaxLineLength = cfg.MaxLineLength
	srv.MaxRecipients = cfg.MaxRecipients
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = cfg.WriteTimeout
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = logfLogger(cfg.Logf)
	s.smtp = srv
	return s, nil
}

type logfLogger func(string, ...any)

func (l logfLogger) Printf(format string, v ...any) { l(format, v...) }
func (l logfLogger) Println(v ...any)               { l("%s", fmt.Sprintln(v...)) }

// Start listens on every configured address and serves in the background.
func (s *Server) Start() error {
	addrs := append([]string(nil), s.cfg.Listen...)
	pols := []*Policy{s.Policy()}
	s.ten.mu.RLock()
	for _, t := range s.ten.byName {
		pols = append(pols, t.policy.Load())
	}
	s.ten.mu.RUnlock()
	for _, p := range pols {
		if m := p.MX; m != nil {
			for _, h := range m.Hosts {
				if !contains(addrs, h) {
					addrs = append(addrs, h)
				}
			}
		}
	}
	if len(addrs) == 0 {
		return errors.New("fakemta: no listen address")
	}
	var ls []net.Listener
	for _, addr := range append(addrs, s.cfg.Lanes...) {
		l, err := listenTCP(addr)
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return err
		}
		ls = append(ls, l)
	}
	s.mu.Lock()
	s.serving = true
	for _, a := range addrs {
		s.listening[a] = true
	}
	s.mu.Unlock()
	for _, l := range ls[:len(addrs)] {
		s.Serve(l)
	}
	for i, l := range ls[len(addrs):] {
		s.serveLane(i+1, l)
	}
	return nil
}

// serveLane serves l as lane n.
func (s *Server) serveLane(n int, l net.Listener) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return
	}
	if s.lanes == nil {
		s.lanes = make([]net.Listener, len(s.cfg.Lanes))
		s.laneAddrs = make([]string, len(s.cfg.Lanes))
	}
	s.lanes[n-1] = l
	s.laneAddrs[n-1] = l.Addr().String()
	s.serveWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.serveWG.Done()
		s.smtp.Serve(&tapListener{Listener: l, srv: s, mx: 1, lane: n})
	}()
}

// CloseLane stops listening on lane n and cuts the connections accepted
// there: a relay delivering to it meets a refused connection, as if the
// fake MTA were down, while every other listener answers (a fake-MTA
// outage for the lane's holder alone). Closing a closed lane does nothing.
func (s *Server) CloseLane(n int) error {
	s.mu.Lock()
	if n < 1 || n > len(s.lanes) {
		s.mu.Unlock()
		return fmt.Errorf("fakemta: lane %d: the server serves %d lanes", n, len(s.lanes))
	}
	l := s.lanes[n-1]
	s.lanes[n-1] = nil
	s.mu.Unlock()
	if l == nil {
		return nil
	}
	l.Close()
	s.cutLane(n)
	s.record(Event{Kind: EventControl, Note: fmt.Sprintf("lane %d stop", n), Tenant: s.laneHolder(n)}, false)
	return nil
}

// cutLane closes the connections accepted on lane n.
func (s *Server) cutLane(n int) {
	s.mu.Lock()
	var cut []*conn
	for c := range s.conns {
		if c.lane == n {
			cut = append(cut, c)
		}
	}
	s.mu.Unlock()
	for _, c := range cut {
		c.Close()
	}
}

// OpenLane listens on a closed lane n again, on the address it had.
// Opening an open lane does nothing.
func (s *Server) OpenLane(n int) error {
	s.mu.Lock()
	if n < 1 || n > len(s.lanes) {
		s.mu.Unlock()
		return fmt.Errorf("fakemta: lane %d: the server serves %d lanes", n, len(s.lanes))
	}
	open, addr := s.lanes[n-1] != nil, s.laneAddrs[n-1]
	s.mu.Unlock()
	if open {
		return nil
	}
	l, err := listenTCP(addr)
	if err != nil {
		return err
	}
	s.serveLane(n, l)
	s.record(Event{Kind: EventControl, Note: fmt.Sprintf("lane %d start", n), Tenant: s.laneHolder(n)}, false)
	return nil
}

// laneHolder names the tenant holding lane n ("" for none).
func (s *Server) laneHolder(n int) string {
	s.ten.mu.RLock()
	defer s.ten.mu.RUnlock()
	if t := s.ten.lanes[n]; t != nil {
		return t.name
	}
	return ""
}

// LaneAddr returns where lane n (1-based) listens ("" when it does not).
func (s *Server) LaneAddr(n int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n < 1 || n > len(s.lanes) || s.lanes[n-1] == nil {
		return ""
	}
	return s.lanes[n-1].Addr().String()
}

// listenTCP listens on addr. No TCP keepalive on accepted connections:
// idle clients are cut by the read timeout, and the four setsockopt calls
// per connection cost about as much as one SMTP reply.
func listenTCP(addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	l, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakemta: listen %s: %w", addr, err)
	}
	return l, nil
}

// listen adds a listener on addr to a started server (a tenant's MX host).
func (s *Server) listen(addr string) error {
	s.mu.Lock()
	if s.listening[addr] {
		s.mu.Unlock()
		return nil
	}
	s.listening[addr] = true
	s.mu.Unlock()
	l, err := listenTCP(addr)
	if err != nil {
		s.mu.Lock()
		delete(s.listening, addr)
		s.mu.Unlock()
		return err
	}
	s.mu.Lock()
	s.added[addr] = l
	s.mu.Unlock()
	s.Serve(l)
	return nil
}

// ListenMore listens on the addresses of addrs not listened on yet, once
// the server has started: more MX hosts, each the next ordinal (match
// key mx). Before Start it does nothing.
func (s *Server) ListenMore(addrs []string) error { return s.listenMore(addrs) }

// Unlisten stops listening on addrs (added by ListenMore or a tenant's MX
// hosts; others are left alone) and cuts the connections accepted there:
// those MX hosts go away, and a client meets a closed port. The next
// address listened on takes the ordinal after the last listener left.
func (s *Server) Unlisten(addrs []string) {
	s.mu.Lock()
	gone := map[string]net.Listener{}
	for _, a := range addrs {
		l := s.added[a]
		if l == nil {
			continue
		}
		delete(s.added, a)
		delete(s.listening, a)
		s.listeners = slices.DeleteFunc(s.listeners, func(x net.Listener) bool { return x == l })
		gone[l.Addr().String()] = l
	}
	var cut []*conn
	for c := range s.conns {
		if gone[c.local] != nil {
			cut = append(cut, c)
		}
	}
	s.mu.Unlock()
	for _, l := range gone {
		l.Close()
	}
	for _, c := range cut {
		c.Close()
	}
}

// Serve serves l in the background (tests pass a 127.0.0.1:0 listener).
func (s *Server) Serve(l net.Listener) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return
	}
	s.listeners = append(s.listeners, l)
	mx := len(s.listeners)
	s.serveWG.Add(1) // under mu, so Close's Wait cannot start before it
	s.mu.Unlock()
	go func() {
		defer s.serveWG.Done()
		s.smtp.Serve(&tapListener{Listener: l, srv: s, mx: mx})
	}()
}

// Addrs returns the addresses the server listens on.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []net.Addr
	for _, l := range s.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// Addr returns the first listen address as host:port.
func (s *Server) Addr() string {
	if a := s.Addrs(); len(a) > 0 {
		return a[0].String()
	}
	return ""
}

// Journal returns the server's journal.
func (s *Server) Journal() *Journal { return s.journal }

// Metrics returns the server's Prometheus metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Policy returns the policy in force.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// SetPolicy swaps the policy live; connections pick it up at their next decision.
func (s *Server) SetPolicy(p *Policy) {
	if p == nil {
		p = &Policy{}
	}
	s.policy.Store(p)
	s.record(Event{Kind: EventControl, Note: "policy"}, false)
}

// WipeGreylist forgets every greylist triplet and whitelisted client,
// the server's own and every tenant's (WipeTenant wipes one tenant).
func (s *Server) WipeGreylist() {
	s.grey.wipe()
	if err := s.store.wipe(context.Background()); err != nil {
		s.cfg.Logf("greylist store: wipe: %v", err)
	}
	s.ten.mu.RLock()
	for _, t := range s.ten.byName {
		t.grey.wipe()
	}
	s.ten.mu.RUnlock()
	s.record(Event{Kind: EventControl, Note: "wipe-state"}, false)
}

// Greylist lists the greylist records the server remembers (nil when
// the store cannot answer: GreylistEntries says why).
func (s *Server) Greylist() []GreylistEntry {
	es, _ := s.GreylistEntries()
	return es
}

// GreylistEntries lists the greylist records, or the store's error.
func (s *Server) GreylistEntries() ([]GreylistEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), greyStoreTimeout)
	defer cancel()
	return s.store.entries(ctx)
}

// Started returns when the server started (rules' after/before count from it).
func (s *Server) Started() time.Time { return s.started }

// Close stops listening, cuts every connection, and closes the journal.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	listeners := append([]net.Listener(nil), s.listeners...)
	for _, l := range s.lanes {
		if l != nil {
			listeners = append(listeners, l)
		}
	}
	s.mu.Unlock()
	// Close listeners ourselves (go-smtp knows only those its Serve
	// goroutines have registered) and wait for go-smtp's Serve loops to
	// return: from then on no connection is added (go-smtp counts each in a
	// WaitGroup: an Add beside Shutdown's Wait is a data race, and Wait could
	// return before a handler just added ends and uses the closed journal).
	// Then cut every connection, and let go-smtp wait for its handlers: each
	// ends its session (Logout) in its own goroutine. go-smtp's Close would
	// call Logout from this goroutine, racing the handler still using the
	// session.
	for _, l := range listeners {
		l.Close()
	}
	s.serveWG.Wait()
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	if s.smtp.Shutdown(ctx) != nil && ctx.Err() != nil {
		s.smtp.Close()
	}
	cancel()
	s.record(Event{Kind: EventControl, Note: "stop"}, false)
	err := s.journal.Close()
	if cerr := s.store.close(); err == nil && s.cfg.GreylistStore != "" {
		err = cerr
	}
	if s.cfg.scratch {
		if rerr := os.RemoveAll(s.cfg.StateDir); err == nil {
			err = rerr
		}
	}
	return err
}

// record appends ev to the journal and updates metrics.
func (s *Server) record(ev Event, durable bool) (Event, error) {
	ev, err := s.journal.Append(ev, durable)
	s.metrics.observe(&ev)
	if err != nil {
		s.cfg.Logf("journal: %v", err)
	}
	return ev, err
}

// replay rebuilds greylist state from one journaled event, at start.
// A tenant's events are replayed when it registers again (replayTenant):
// only then is its policy known.
func (s *Server) replay(ev Event) {
	if t := s.ten.byName[ev.Tenant]; ev.Tenant != "" && t != nil {
		if ev.Kind == EventControl && ev.Note == "tenant-remove" {
			t.grey.wipe() // what it knew went with it
		} else {
			s.replayInto(t, ev)
		}
		return
	}
	if ev.Tenant != "" {
		if ev.Kind == EventControl && ev.Note == "tenant-remove" {
			delete(s.ten.replayed, ev.Tenant)
		} else {
			s.ten.replayed[ev.Tenant] = true
		}
		return
	}
	if ev.Kind == EventControl && ev.Note == "wipe-state" {
		// A wipe of everything: tenants' state before it is gone too.
		clear(s.ten.replayed)
		for _, t := range s.ten.byName {
			t.grey.wipe()
		}
	}
	s.replayInto(s.def, ev)
}

// replayInto rebuilds t's greylist state from one journaled event.
func (s *Server) replayInto(t *tenant, ev Event) {
	switch ev.Kind {
	case EventControl:
		if ev.Note == "wipe-state" {
			t.grey.wipe()
		}
	case EventTransaction:
		tx := ev.Transaction
		if tx == nil {
			return
		}
		gl := t.policy.Load().Greylist
		v4, v6 := 24, 64
		if gl != nil {
			v4, v6 = gl.SubnetV4, gl.SubnetV6
		}
		subnet := subnetOf(ev.Client, v4, v6)
		from := lower(strip(t, tx.MailFrom))
		done := map[string]bool{} // a whole-message key counts once
		for _, r := range tx.Rcpts {
			rcpt := lower(strip(t, r.Addr))
			k := tripletKey{subnet, from, rcpt}
			t.grey.setCount(k, StageRcpt, r.Attempt)
			if r.Greylist != "" && r.Greylist != greyError && t.store.replays() && !done[r.Key] {
				done[r.Key] = true
				gk := greyKey{ID: r.Key, Body: r.BodyKey, Whitelist: r.WhitelistKey, Subnet: subnet, Sender: from, Recipient: rcpt}
				if gk.ID == "" {
					// A journal from before keys were journaled: the generic triplet.
					gk.ID, gk.Whitelist = subnet+"|"+gk.Sender+"|"+gk.Recipient, subnet
				}
				t.grey.replay(gl, gk, r.Greylist, ev.Time)
			}
			if tx.Data != nil && r.Reply.Code/100 == 2 {
				t.grey.count(k, StageData, ev.Time)
				t.grey.count(k, StageEOD, ev.Time)
			}
		}
	}
}

// keepBody opens the file a received body is written to.
func (s *Server) keepBody(id string) (io.WriteCloser, string, error) {
	if s.cfg.KeepBodies == "" {
		return nil, "", nil
	}
	p := filepath.Join(s.cfg.KeepBodies, id+".eml")
	f, err := os.Create(p)
	return f, p, err
}

func (s *Server) track(c *conn, on bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		if s.closed || c.lane > 0 && s.lanes[c.lane-1] == nil {
			return false // the server or the lane closed as it accepted c
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// tapListener wraps every accepted connection in the wire tap.
type tapListener struct {
	net.Listener
	srv *Server
	mx  int // ordinal among the server's listeners, from 1
	// lane is the lane the listener is (Config.Lanes, from 1), 0 for none.
	lane int
}

func (l *tapListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		c := l.srv.newConn(nc, l.Listener.Addr().String(), l.mx, l.lane)
		if c == nil {
			continue // dropped at connect by policy
		}
		return c, nil
	}
}
