package fakemta

import (
	"net/netip"
	"strconv"
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
	FirstSeen time.Time // start of the current greylist clock
	LastSeen  time.Time
	PassedAt  time.Time // zero until a retry came late enough
	Passes    int
	// counts of how often the triplet reached each stage, for `attempt` matches
	Rcpt, Data, EOD int
}

// GreylistEntry is a triplet's state as the API shows it.
type GreylistEntry struct {
	Subnet    string    `json:"subnet"`
	Sender    string    `json:"sender"`
	Recipient string    `json:"recipient"`
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
	mu       sync.Mutex
	triplets map[tripletKey]*tripletState
	// clientPasses counts passed triplets per client subnet (postgrey's
	// --auto-whitelist-clients).
	clientPasses map[string]int
}

func newGreylistState() *greylistState {
	return &greylistState{triplets: map[tripletKey]*tripletState{}, clientPasses: map[string]int{}}
}

// wipe forgets every triplet and whitelist entry.
func (g *greylistState) wipe() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.triplets = map[tripletKey]*tripletState{}
	g.clientPasses = map[string]int{}
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
)

// check applies the greylist to one triplet at now and returns the outcome
// and, when deferred, the seconds left. It follows postgrey: a new triplet
// (or one whose last try is older than the retry window, or whose state is
// older than max age) starts the clock and is deferred; a retry before the
// delay is deferred without resetting the clock; a retry after it passes,
// and every later message within max age passes too.
func (g *greylistState) check(gl *Greylist, k tripletKey, now time.Time) (outcome string, left time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if gl.AutoWhitelistAfter > 0 && g.clientPasses[k.Subnet] >= gl.AutoWhitelistAfter {
		if t := g.triplets[k]; t != nil {
			t.LastSeen = now
		}
		return greyWhitelisted, 0
	}
	t := g.triplet(k)
	expired := t.FirstSeen.IsZero() ||
		(gl.MaxAge > 0 && now.Sub(t.LastSeen) > gl.MaxAge) ||
		(t.PassedAt.IsZero() && gl.RetryWindow > 0 && now.Sub(t.FirstSeen) > gl.RetryWindow)
	if expired {
		t.FirstSeen, t.PassedAt, t.LastSeen = now, time.Time{}, now
		return greyDeferred, gl.Delay
	}
	t.LastSeen = now
	if !t.PassedAt.IsZero() {
		t.Passes++
		return greyPassed, 0
	}
	if wait := t.FirstSeen.Add(gl.Delay).Sub(now); wait > 0 {
		return greyDeferred, wait
	}
	t.PassedAt = now
	t.Passes++
	g.clientPasses[k.Subnet]++
	return greyPassed, 0
}

// replay re-applies a journaled outcome so state survives a restart.
func (g *greylistState) replay(gl *Greylist, k tripletKey, outcome string, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	t := g.triplet(k)
	switch outcome {
	case greyDeferred:
		fresh := t.FirstSeen.IsZero() || !t.PassedAt.IsZero() ||
			(gl != nil && gl.RetryWindow > 0 && at.Sub(t.FirstSeen) > gl.RetryWindow) ||
			(gl != nil && gl.MaxAge > 0 && at.Sub(t.LastSeen) > gl.MaxAge)
		if fresh {
			t.FirstSeen, t.PassedAt = at, time.Time{}
		}
	case greyPassed:
		if t.PassedAt.IsZero() {
			t.PassedAt = at
			g.clientPasses[k.Subnet]++
			if t.FirstSeen.IsZero() {
				t.FirstSeen = at
			}
		}
		t.Passes++
	}
	t.LastSeen = at
}

// entries lists the triplets for the API, sorted by first sight.
func (g *greylistState) entries() []GreylistEntry {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]GreylistEntry, 0, len(g.triplets))
	for k, t := range g.triplets {
		if t.FirstSeen.IsZero() {
			continue
		}
		out = append(out, GreylistEntry{Subnet: k.Subnet, Sender: k.Sender, Recipient: k.Recipient,
			FirstSeen: t.FirstSeen, LastSeen: t.LastSeen, PassedAt: t.PassedAt, Passes: t.Passes, Attempts: t.Rcpt})
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
		return a.Sender+a.Recipient < b.Sender+b.Recipient
	})
}

// greylistReply renders the configured reply with the seconds left.
func greylistReply(gl *Greylist, left time.Duration) Reply {
	secs := int((left + time.Second - 1) / time.Second)
	text := strings.ReplaceAll(gl.Reply, "%s", strconv.Itoa(secs))
	r, err := ParseReply(text)
	if err != nil {
		r, _ = ParseReply(strings.ReplaceAll(DefaultGreylistReply, "%s", strconv.Itoa(secs)))
	}
	return r
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
