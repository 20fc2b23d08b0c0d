package fakemta

import (
	"net/netip"
	"strings"
	"sync"
	"time"
)

// tripletKey is a greylist triplet: client subnet, sender, recipient
// (lowercased), as postgrey and milter-greylist key them.
type tripletKey struct {
	Subnet    string
	Sender    string
	Recipient string
}

// tripletState is what the fake MTA remembers of one triplet.
type tripletState struct {
	// counts of how often the triplet reached each stage, for `attempt` matches
	Rcpt, Data, EOD int
}

// GreylistEntry is a triplet's state as the API shows it.
type GreylistEntry struct {
	// Key is the record's key: its parts joined by "|", prefixed with the
	// MX's address when MX hosts keep split state.
	Key       string    `json:"key"`
	Subnet    string    `json:"subnet"`
	Sender    string    `json:"sender"`
	Recipient string    `json:"recipient"`
	Extra     string    `json:"extra,omitempty"` // Message-ID or body hash, for keys that have them
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	PassedAt  time.Time `json:"passed_at,omitzero"`
	Passes    int       `json:"passes"`
	Attempts  int       `json:"attempts"`
}

// greylistState is the fake MTA's memory of triplets and auto-whitelisted
// client subnets. It is rebuilt from the journal on start, so it survives
// a restart or kill -9 without a second file to keep in step.
type greylistState struct {
	mu sync.Mutex
	// triplets count attempts per stage, for rules' attempt matches.
	triplets map[tripletKey]*tripletState
	// records are the greylist records by key.
	records map[string]*greyRecord
	// clientPasses counts passed records per auto-whitelist key (postgrey's
	// --auto-whitelist-clients); clientLast is when it last counted.
	clientPasses map[string]int
	clientLast   map[string]time.Time
}

func newGreylistState() *greylistState {
	g := &greylistState{}
	g.reset()
	return g
}

func (g *greylistState) reset() {
	g.triplets = map[tripletKey]*tripletState{}
	g.records = map[string]*greyRecord{}
	g.clientPasses = map[string]int{}
	g.clientLast = map[string]time.Time{}
}

// wipe forgets every triplet and whitelist entry.
func (g *greylistState) wipe() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.reset()
}

// subnetOf masks a client address to the greylist's subnet.
func subnetOf(client string, v4, v6 int) string {
	host := client
	if h, _, ok := strings.Cut(client, "]:"); ok {
		host = strings.TrimPrefix(h, "[")
	} else if i := strings.LastIndex(client, ":"); i >= 0 && strings.Count(client, ":") == 1 {
		host = client[:i]
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return strings.ToLower(host)
	}
	a = a.Unmap()
	bits := v6
	if a.Is4() {
		bits = v4
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return a.String()
	}
	return p.String()
}

// triplet returns k's state, made on first sight. Called with mu held.
func (g *greylistState) triplet(k tripletKey) *tripletState {
	t := g.triplets[k]
	if t == nil {
		t = &tripletState{}
		g.triplets[k] = t
	}
	return t
}

// count bumps the stage counter of a triplet and returns the new count.
func (g *greylistState) count(k tripletKey, stage Stage, now time.Time) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.triplet(k)
	switch stage {
	case StageData:
		t.Data++
		return t.Data
	case StageEOD:
		t.EOD++
		return t.EOD
	default:
		t.Rcpt++
		return t.Rcpt
	}
}

// Greylist outcomes recorded in RcptAttempt.Greylist.
const (
	greyDeferred    = "deferred"
	greyPassed      = "passed"
	greyWhitelisted = "whitelisted"
	// greyError: the greylist store could not answer; the reply was 451 4.3.0.
	greyError = "error"
)

// greyKey is what one greylist check looks up: the record key (its parts
// are set by the policy's key and flavour), the body key of rspamd-style
// greylisting, and the auto-whitelist key of the client.
type greyKey struct {
	ID        string // record key
	Body      string // body-hash record key, "" when the policy has none
	Whitelist string // auto-whitelist key, "" when none applies
	// Shown by the API.
	Subnet, Sender, Recipient, Extra string
}

// greyRecord is one greylist record (a triplet, an envelope or a body).
type greyRecord struct {
	FirstSeen                        time.Time // start of the current greylist clock
	LastSeen                         time.Time
	PassedAt                         time.Time // zero until a retry came late enough
	Passes                           int
	Origin                           string // whitelist key of the client that started the clock
	Subnet, Sender, Recipient, Extra string
}

// expired reports whether r no longer holds at now: a first retry later
// than the retry window, or a passed record unseen longer than max age.
func (r *greyRecord) expired(gl *Greylist, now time.Time) bool {
	return r.FirstSeen.IsZero() ||
		(!r.PassedAt.IsZero() && gl.MaxAge > 0 && now.Sub(r.LastSeen) > gl.MaxAge) ||
		(r.PassedAt.IsZero() && gl.RetryWindow > 0 && now.Sub(r.FirstSeen) > gl.RetryWindow)
}

// check applies the greylist to one key at now and returns the outcome
// and, when deferred, the time left. It follows postgrey: a new record
// (or one whose first retry is later than the retry window, or unseen
// longer than max age) starts the clock and is deferred; a retry before
// the delay is deferred without resetting the clock; a retry after it
// passes, and every later message within max age passes too. With a body
// key (rspamd) a body whose record has matured passes from any address,
// and a known body from a new address is deferred without a new record.
func (g *greylistState) check(gl *Greylist, k greyKey, now time.Time) (outcome string, left time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gl.AutoWhitelistAfter > 0 && k.Whitelist != "" && g.clientPasses[k.Whitelist] >= gl.AutoWhitelistAfter {
		if r := g.records[k.ID]; r != nil {
			r.LastSeen = now
		}
		return greyWhitelisted, 0
	}
	var body *greyRecord
	if k.Body != "" {
		if body = g.records[k.Body]; body != nil && body.expired(gl, now) {
			delete(g.records, k.Body)
			body = nil
		}
		if body != nil && now.Sub(body.FirstSeen) >= gl.Delay {
			g.pass(gl, body, k, now)
			if r := g.records[k.ID]; r != nil && !r.expired(gl, now) {
				r.LastSeen = now
			}
			return greyPassed, 0
		}
	}
	r := g.records[k.ID]
	if r == nil || r.expired(gl, now) {
		if body != nil {
			// rspamd: the body is known, its clock runs; no new envelope record.
			return greyDeferred, body.FirstSeen.Add(gl.Delay).Sub(now)
		}
		g.records[k.ID] = &greyRecord{FirstSeen: now, LastSeen: now, Origin: k.Whitelist,
			Subnet: k.Subnet, Sender: k.Sender, Recipient: k.Recipient, Extra: k.Extra}
		if k.Body != "" {
			g.records[k.Body] = &greyRecord{FirstSeen: now, LastSeen: now, Origin: k.Whitelist, Extra: "body " + k.Body}
		}
		return greyDeferred, gl.Delay
	}
	if !r.PassedAt.IsZero() {
		r.LastSeen = now
		r.Passes++
		return greyPassed, 0
	}
	if wait := r.FirstSeen.Add(gl.Delay).Sub(now); wait > 0 {
		r.LastSeen = now
		return greyDeferred, wait
	}
	g.pass(gl, r, k, now)
	if body != nil {
		body.LastSeen = now
	}
	return greyPassed, 0
}

// pass marks r passed at now and counts the pass for auto-whitelisting:
// for the client at hand, or (Exim) for the one that started the clock.
// Called with mu held.
func (g *greylistState) pass(gl *Greylist, r *greyRecord, k greyKey, now time.Time) {
	first := r.PassedAt.IsZero()
	if first {
		r.PassedAt = now
	}
	r.LastSeen = now
	r.Passes++
	if !first {
		return
	}
	wl := k.Whitelist
	if gl.whitelistOrigin {
		wl = r.Origin
	}
	if wl == "" {
		return
	}
	// postgrey counts a client at most once an hour.
	if last, ok := g.clientLast[wl]; ok && gl.whitelistEvery > 0 && now.Sub(last) < gl.whitelistEvery {
		return
	}
	g.clientPasses[wl]++
	g.clientLast[wl] = now
}

// replay re-applies a journaled outcome so state survives a restart.
func (g *greylistState) replay(gl *Greylist, k greyKey, outcome string, at time.Time) {
	if gl == nil || k.ID == "" {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch outcome {
	case greyDeferred:
		if k.Body != "" {
			if b := g.records[k.Body]; b == nil || b.expired(gl, at) {
				if r := g.records[k.ID]; r != nil && !r.expired(gl, at) {
					r.LastSeen = at
					return
				}
				g.records[k.Body] = &greyRecord{FirstSeen: at, LastSeen: at, Origin: k.Whitelist, Extra: "body " + k.Body}
			} else if r := g.records[k.ID]; r == nil || r.expired(gl, at) {
				return // deferred by the body's clock: no envelope record
			}
		}
		r := g.records[k.ID]
		if r == nil || !r.PassedAt.IsZero() || r.expired(gl, at) {
			g.records[k.ID] = &greyRecord{FirstSeen: at, LastSeen: at, Origin: k.Whitelist,
				Subnet: k.Subnet, Sender: k.Sender, Recipient: k.Recipient, Extra: k.Extra}
			return
		}
		r.LastSeen = at
	case greyPassed:
		r := g.records[k.ID]
		if k.Body != "" {
			if b := g.records[k.Body]; b != nil && !b.expired(gl, at) && at.Sub(b.FirstSeen) >= gl.Delay {
				r = b
			}
		}
		if r == nil {
			r = &greyRecord{FirstSeen: at, Origin: k.Whitelist, Subnet: k.Subnet, Sender: k.Sender, Recipient: k.Recipient, Extra: k.Extra}
			g.records[k.ID] = r
		}
		g.pass(gl, r, k, at)
	case greyWhitelisted:
		if r := g.records[k.ID]; r != nil {
			r.LastSeen = at
		}
	}
}

// entries lists the triplets for the API, sorted by first sight.
func (g *greylistState) entries() []GreylistEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]GreylistEntry, 0, len(g.records))
	for id, r := range g.records {
		e := GreylistEntry{Key: id, Subnet: r.Subnet, Sender: r.Sender, Recipient: r.Recipient, Extra: r.Extra,
			FirstSeen: r.FirstSeen, LastSeen: r.LastSeen, PassedAt: r.PassedAt, Passes: r.Passes}
		if t := g.triplets[tripletKey{r.Subnet, r.Sender, r.Recipient}]; t != nil {
			e.Attempts = t.Rcpt
		}
		out = append(out, e)
	}
	sortEntries(out)
	return out
}

func sortEntries(es []GreylistEntry) {
	// insertion-free: use the standard sort via a small closure
	sortSlice(es, func(a, b GreylistEntry) bool {
		if !a.FirstSeen.Equal(b.FirstSeen) {
			return a.FirstSeen.Before(b.FirstSeen)
		}
		return a.Key < b.Key
	})
}

// setCount raises a stage counter to at least n (journal replay).
func (g *greylistState) setCount(k tripletKey, stage Stage, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.triplet(k)
	if stage == StageRcpt && n > t.Rcpt {
		t.Rcpt = n
	}
}
