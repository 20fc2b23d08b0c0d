package fakemta

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Tenants isolate scenarios that share one fake MTA. A tenant is a name
// (a DNS label) with a policy, greylist state, attempt and connection
// counters and a clock of its own. An address is the tenant's when its
// domain starts with the tenant's label: carol@NAME.rcpt.test, or the
// harness's tagged sender sender+gh-1@NAME.client.test (DSNs come back to
// it, so they are the tenant's too). A transaction belongs to the tenant
// of its sender, else of its first tenant recipient; each recipient is
// decided by its own tenant.
//
// The label is stripped before anything the policy sees: rules, greylist
// keys and the MX state match the addresses as the scenario wrote them
// (carol@rcpt.test); the journal keeps the addresses as they came on the
// wire and names the tenant in Event.Tenant.
//
// The stages before any address is known (connect, helo, starttls, and
// quit or data outside a transaction) cannot be attributed: they follow
// the tenant registered with Connections (at most one; it also numbers
// every connection in the order they come), else the server's own policy.
// A scenario whose policy acts there or matches connection numbers must
// run alone with that option, or hold a lane (Config.Lanes): a listener
// whose connections carry only its tenant's traffic, because the relay
// routes that tenant's addresses there. A connection accepted on lane N
// gets the connection-level stages, and the connection numbering, of the
// tenant holding lane N (else the server's own policy).
//
// Traffic of no registered tenant follows the server's own policy (set by
// New, SetPolicy, PUT /api/v1/policy), as without tenants.

// TenantOptions are a tenant's options.
type TenantOptions struct {
	// Connections gives the tenant the stages before any address is known
	// (connect, helo, starttls) and has it number every connection: for a
	// scenario that runs alone. At most one tenant has it.
	Connections bool `json:"connections"`
	// Lane (from 1; 0 for none) gives the tenant the connection-level
	// stages and numbering of the connections accepted on lane Lane
	// (Config.Lanes). One tenant holds a lane at a time; a tenant holds
	// a lane or Connections, not both. The control API does not offer it:
	// a fake MTA started by `greyharness fakemta` has no lanes.
	Lane int `json:"-"`
}

// TenantSpec is a tenant for Config.Tenants.
type TenantSpec struct {
	Name    string
	Policy  *Policy
	Options TenantOptions
}

// ErrTenantConflict is returned when a second tenant asks for Connections.
var ErrTenantConflict = errors.New("fakemta: another tenant owns the connection-level stages")

// ErrLaneConflict is returned when a second tenant asks for a held lane.
var ErrLaneConflict = errors.New("fakemta: another tenant holds the lane")

// ErrNoTenant is returned for a tenant that is not registered.
var ErrNoTenant = errors.New("fakemta: no such tenant")

var tenantNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// CheckTenantName says what is wrong with a tenant name ("" when fine).
func CheckTenantName(name string) error {
	if !tenantNameRE.MatchString(name) {
		return fmt.Errorf("tenant name %q: want a DNS label (a-z, 0-9, '-', 1 to 63 characters, no '-' at either end)", name)
	}
	return nil
}

// tenant is one scope of policy and state: a registered tenant, or the
// server's own (name "") for traffic of none.
type tenant struct {
	name    string
	policy  *atomic.Pointer[Policy]
	grey    *greylistState
	store   greyStore
	started time.Time
	owner   bool          // guarded by tenants.mu
	lane    int           // the lane it holds, 0 for none; guarded by tenants.mu
	conns   atomic.Uint64 // connections numbered for this tenant
}

// tenants is the server's registry.
type tenants struct {
	mu     sync.RWMutex
	byName map[string]*tenant
	owner  *tenant
	lanes  map[int]*tenant // lane number -> its holder
	// replayed names tenants the journal had events of at start: their
	// state is rebuilt when they register again (then their policy is known).
	replayed map[string]bool
}

// scope returns t, or the server's own scope for nil.
func (s *Server) scope(t *tenant) *tenant {
	if t == nil {
		return s.def
	}
	return t
}

// connScope is the scope of the stages before any address is known, on
// a connection accepted on lane (0: on the primary listeners).
func (s *Server) connScope(lane int) *tenant {
	s.ten.mu.RLock()
	defer s.ten.mu.RUnlock()
	if lane > 0 {
		if t := s.ten.lanes[lane]; t != nil {
			return t
		}
		return s.def
	}
	if s.ten.owner != nil {
		return s.ten.owner
	}
	return s.def
}

// tenantOf returns the registered tenant an address belongs to, or nil.
func (s *Server) tenantOf(addr string) *tenant {
	label, ok := tenantLabel(addr)
	if !ok {
		return nil
	}
	s.ten.mu.RLock()
	defer s.ten.mu.RUnlock()
	return s.ten.byName[label]
}

// tenantLabel returns the first label of an address's domain, lowercased.
func tenantLabel(addr string) (string, bool) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", false
	}
	label, _, ok := strings.Cut(addr[at+1:], ".")
	if !ok || label == "" {
		return "", false
	}
	return lower(label), true
}

// strip removes t's label from an address of t, so the policy sees the
// address as the scenario wrote it.
func strip(t *tenant, addr string) string {
	if t == nil || t.name == "" {
		return addr
	}
	if l, ok := tenantLabel(addr); !ok || l != t.name {
		return addr
	}
	at := strings.LastIndexByte(addr, '@')
	return addr[:at+1] + addr[at+1+len(t.name)+1:]
}

func stripAll(t *tenant, addrs []string) []string {
	if t == nil || t.name == "" || len(addrs) == 0 {
		return addrs
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = strip(t, a)
	}
	return out
}

// SetTenant registers a tenant with policy p, or swaps the policy and
// options of a registered one (its state and counters are kept).
// A new tenant starts with no greylist memory unless the journal it was
// opened from has some of it (a fake MTA restarted mid-scenario).
func (s *Server) SetTenant(name string, p *Policy, opts TenantOptions) error {
	if err := CheckTenantName(name); err != nil {
		return err
	}
	if p == nil {
		p = &Policy{}
	}
	s.ten.mu.Lock()
	t := s.ten.byName[name]
	if opts.Connections && s.ten.owner != nil && s.ten.owner != t {
		s.ten.mu.Unlock()
		return fmt.Errorf("%w (%s)", ErrTenantConflict, s.ten.owner.name)
	}
	if err := s.checkLane(t, opts); err != nil {
		s.ten.mu.Unlock()
		return err
	}
	created := t == nil
	if created {
		g := newGreylistState()
		t = &tenant{name: name, policy: new(atomic.Pointer[Policy]), grey: g, store: s.tenantStore(name, g), started: s.cfg.Now()}
	}
	t.policy.Store(p)
	if t.lane != 0 && t.lane != opts.Lane {
		delete(s.ten.lanes, t.lane)
	}
	// A new holder starts with the lane's connections cut: a relay reusing
	// a cached one would carry its first message past its connect and helo
	// rules, so its fault would never be met.
	newHolder := opts.Lane > 0 && s.ten.lanes[opts.Lane] != t
	_ = s.takeLane(t, opts) // checked above
	if created {
		if s.ten.replayed[name] {
			delete(s.ten.replayed, name)
			s.replayTenant(t)
		}
		s.ten.byName[name] = t
	}
	// The owner may give the connection-level stages up (its scenario no
	// longer runs alone) and keep its tenant.
	t.owner = opts.Connections
	switch {
	case t.owner:
		s.ten.owner = t
	case s.ten.owner == t:
		s.ten.owner = nil
	}
	s.ten.mu.Unlock()
	if newHolder {
		s.cutLane(opts.Lane)
	}
	note := "policy"
	if created {
		note = "tenant"
		if opts.Connections {
			note = "tenant connections"
		}
		if opts.Lane > 0 {
			note = fmt.Sprintf("tenant lane %d", opts.Lane)
		}
	}
	s.record(Event{Kind: EventControl, Note: note, Tenant: name}, false)
	if m := p.MX; m != nil && len(m.Hosts) > 0 {
		return s.listenMore(m.Hosts)
	}
	return nil
}

// checkLane says what is wrong with t (nil: a new tenant) asking for
// opts' lane. Called with ten.mu held.
func (s *Server) checkLane(t *tenant, opts TenantOptions) error {
	if opts.Lane == 0 {
		return nil
	}
	if opts.Lane < 0 || opts.Lane > len(s.cfg.Lanes) {
		return fmt.Errorf("fakemta: lane %d: the server has %d lanes", opts.Lane, len(s.cfg.Lanes))
	}
	if opts.Connections {
		return errors.New("fakemta: a tenant holds a lane or the connection-level stages of the primary listeners, not both")
	}
	if h := s.ten.lanes[opts.Lane]; h != nil && h != t {
		return fmt.Errorf("%w %d (%s)", ErrLaneConflict, opts.Lane, h.name)
	}
	return nil
}

// takeLane makes t the holder of opts' lane (none: t holds none), once
// checkLane has passed. Called with ten.mu held (or before the server runs).
func (s *Server) takeLane(t *tenant, opts TenantOptions) error {
	if err := s.checkLane(t, opts); err != nil {
		return err
	}
	t.lane = opts.Lane
	if t.lane > 0 {
		s.ten.lanes[t.lane] = t
	}
	return nil
}

// RemoveTenant forgets a tenant and its state; its later traffic follows
// the server's own policy. It reports whether the tenant was registered.
func (s *Server) RemoveTenant(name string) bool {
	s.ten.mu.Lock()
	t := s.ten.byName[name]
	delete(s.ten.byName, name)
	delete(s.ten.replayed, name)
	if t != nil && s.ten.owner == t {
		s.ten.owner = nil
	}
	if t != nil && t.lane != 0 && s.ten.lanes[t.lane] == t {
		delete(s.ten.lanes, t.lane)
	}
	s.ten.mu.Unlock()
	if t == nil {
		return false
	}
	s.record(Event{Kind: EventControl, Note: "tenant-remove", Tenant: name}, false)
	return true
}

// WipeTenant forgets a tenant's greylist memory and attempt counters.
func (s *Server) WipeTenant(name string) error {
	t := s.tenant(name)
	if t == nil {
		return fmt.Errorf("%w: %s", ErrNoTenant, name)
	}
	t.grey.wipe()
	t.store.wipe(context.Background())
	s.record(Event{Kind: EventControl, Note: "wipe-state", Tenant: name}, false)
	return nil
}

// tenantStore is where tenant name keeps its greylist: its own records in
// the server's Redis (shared with every fake MTA on it), else in memory.
func (s *Server) tenantStore(name string, g *greylistState) greyStore {
	if rs, ok := s.store.(*redisStore); ok {
		return rs.forTenant(name)
	}
	return memStore{g}
}

func (s *Server) tenant(name string) *tenant {
	s.ten.mu.RLock()
	defer s.ten.mu.RUnlock()
	return s.ten.byName[name]
}

// TenantPolicy returns a registered tenant's policy.
func (s *Server) TenantPolicy(name string) (*Policy, bool) {
	t := s.tenant(name)
	if t == nil {
		return nil, false
	}
	return t.policy.Load(), true
}

// TenantGreylist lists a registered tenant's greylist records.
func (s *Server) TenantGreylist(name string) ([]GreylistEntry, error) {
	t := s.tenant(name)
	if t == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoTenant, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), greyStoreTimeout)
	defer cancel()
	return t.store.entries(ctx)
}

// TenantInfo is a registered tenant as GET /api/v1/tenants lists it.
type TenantInfo struct {
	Name        string    `json:"name"`
	Connections bool      `json:"connections"`
	Lane        int       `json:"lane,omitempty"`
	Since       time.Time `json:"since"`
}

// Tenants lists the registered tenants by name.
func (s *Server) Tenants() []TenantInfo {
	s.ten.mu.RLock()
	out := make([]TenantInfo, 0, len(s.ten.byName))
	for _, t := range s.ten.byName {
		out = append(out, TenantInfo{Name: t.name, Connections: t.owner, Lane: t.lane, Since: t.started})
	}
	s.ten.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// replayTenant rebuilds a re-registered tenant's state from the journal,
// now that its policy is known. Called with ten.mu held.
func (s *Server) replayTenant(t *tenant) {
	err := s.journal.EachSince(0, 0, func(ev *Event) error {
		if ev.Tenant == t.name || ev.Kind == EventControl && ev.Tenant == "" && ev.Note == "wipe-state" {
			s.replayInto(t, *ev)
		}
		return nil
	})
	if err != nil {
		s.cfg.Logf("tenant %s: replaying the journal: %v", t.name, err)
	}
}

// listenMore listens on the addresses of addrs not listened on yet (a
// tenant's MX hosts), once the server has started.
func (s *Server) listenMore(addrs []string) error {
	s.mu.Lock()
	if !s.serving || s.closed {
		s.mu.Unlock()
		return nil
	}
	var missing []string
	for _, a := range addrs {
		if !s.listening[a] {
			missing = append(missing, a)
		}
	}
	s.mu.Unlock()
	for _, a := range missing {
		if err := s.listen(a); err != nil {
			return err
		}
	}
	return nil
}
