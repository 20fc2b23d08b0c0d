package fakemta

import (
	"net/netip"
	"path"
	"strings"
	"time"
)

// matchCtx is what a rule can look at when the fake MTA decides.
type matchCtx struct {
	// scope is the tenant (or the server's own scope) whose policy decides.
	scope  *tenant
	stage  Stage
	conn   uint64
	mx     int    // the listener's ordinal, from 1
	client string // ip:port
	helo   string
	sender string
	// rcpts are the recipients in play: the one being added at rcpt, the
	// accepted ones at data and eod; attempts parallels it.
	rcpts    []string
	attempts []int
	elapsed  time.Duration
}

// decide returns the first rule matching m, or nil.
func (s *Server) decide(m *matchCtx) *Rule {
	pol := s.scope(m.scope).policy.Load()
	for i := range pol.Rules {
		if ruleMatches(&pol.Rules[i].Match, m) {
			return &pol.Rules[i]
		}
	}
	return nil
}

func lower(s string) string { return strings.ToLower(s) }

func glob(pattern, s string) bool {
	ok, _ := path.Match(lower(pattern), lower(s))
	return ok
}

// ruleMatches reports whether every set field of mt matches m. A rule
// without a stage acts at rcpt, where most deferrals happen.
func ruleMatches(mt *Match, m *matchCtx) bool {
	stage := mt.Stage
	if stage == "" {
		stage = StageRcpt
	}
	if stage != m.stage {
		return false
	}
	if mt.Connection != nil && !mt.Connection.Contains(int(m.conn)) {
		return false
	}
	if mt.MX != nil && !mt.MX.Contains(m.mx) {
		return false
	}
	if mt.Client != "" && !clientMatches(mt.Client, m.client) {
		return false
	}
	if mt.Helo != "" && !glob(mt.Helo, m.helo) {
		return false
	}
	if mt.Sender != "" {
		if m.stage == StageConnect || m.stage == StageHelo || m.stage == StageStartTLS {
			return false
		}
		if !glob(mt.Sender, m.sender) {
			return false
		}
	}
	if mt.After > 0 && m.elapsed < mt.After {
		return false
	}
	if mt.Before > 0 && m.elapsed >= mt.Before {
		return false
	}
	if mt.Rcpt != "" || mt.Attempt != nil {
		// Some recipient in play must match both the glob and the attempt.
		for i, r := range m.rcpts {
			if mt.Rcpt != "" && !glob(mt.Rcpt, r) {
				continue
			}
			if mt.Attempt != nil && (i >= len(m.attempts) || !mt.Attempt.Contains(m.attempts[i])) {
				continue
			}
			return true
		}
		return false
	}
	return true
}

func clientMatches(pattern, client string) bool {
	pfx, err := parseClientMatch(pattern)
	if err != nil {
		return false
	}
	ap, err := netip.ParseAddrPort(client)
	if err != nil {
		a, err2 := netip.ParseAddr(client)
		if err2 != nil {
			return false
		}
		return pfx.Contains(a.Unmap())
	}
	return pfx.Contains(ap.Addr().Unmap())
}
