package fakemta

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/internal/yamlcheck"
)

// PositionError is an input error located in a file: "file:line:col: msg".
// It is the one YAML error type of the module (yamlcheck.Error): policies,
// relay profiles and scenarios all report with it.
type PositionError = yamlcheck.Error

// Greylist defaults, as postgrey ships them (delay, max age) and as
// milter-greylist documents them (retry window).
const (
	DefaultGreylistDelay       = 300 * time.Second
	DefaultGreylistRetryWindow = 48 * time.Hour
	DefaultGreylistMaxAge      = 35 * 24 * time.Hour
	DefaultGreylistReply       = "451 4.7.1 Greylisted, please try again in %s seconds"
)

// ParsePolicy parses a policy YAML document; file names it in errors.
// Errors are *PositionError, several joined with errors.Join. data must be
// exactly one document, in UTF-8, that is a mapping: nothing (or only
// comments), null, a second document or trailing text are errors, so a
// damaged policy never reads as "accept everything" ({} is that policy).
func ParsePolicy(file string, data []byte) (*Policy, error) {
	if i := yamlcheck.InvalidUTF8(data); i >= 0 {
		line, col := yamlcheck.Position(data, i)
		return nil, &PositionError{File: file, Line: line, Col: col, Msg: fmt.Sprintf("invalid UTF-8 (byte 0x%02x): a policy is UTF-8 text", data[i])}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &PositionError{File: file, Line: 1, Col: 1, Msg: "no policy document ({} is the policy that accepts everything)"}
		}
		return nil, yamlcheck.SyntaxError(file, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlcheck.SyntaxError(file, err)
	default:
		at := &next
		if len(next.Content) > 0 {
			at = next.Content[0]
		}
		return nil, yamlcheck.At(file, at, "a second YAML document: a policy is exactly one")
	}
	if len(doc.Content) == 0 {
		return nil, yamlcheck.At(file, &doc, "no policy document ({} is the policy that accepts everything)")
	}
	root := doc.Content[0]
	if yamlcheck.IsNull(root) {
		return nil, yamlcheck.At(file, root, "the policy is null: give a mapping ({} accepts everything)")
	}
	return ParsePolicyNode(file, root)
}

// deref follows an alias (*name) to the node its anchor (&name) marks.
func deref(n *yaml.Node) *yaml.Node { return yamlcheck.Resolve(n) }

// policyParser collects every error of a document instead of stopping at the first.
type policyParser struct {
	c *yamlcheck.Checker
}

func (p *policyParser) errorf(n *yaml.Node, format string, args ...any) {
	p.c.Errorf(n, format, args...)
}

// ParsePolicyNode parses a policy from a YAML mapping node (for policies
// embedded in scenario files); positions refer to file.
func ParsePolicyNode(file string, n *yaml.Node) (*Policy, error) {
	p := &policyParser{c: &yamlcheck.Checker{File: file, Kind: "policy"}}
	pol := p.policy(n)
	if p.c.Len() > 0 {
		return nil, p.c.Err()
	}
	return pol, nil
}

// mapping calls f for each entry of a mapping node with a key in allowed,
// reporting the others (yamlcheck.Checker.Mapping). Merge keys ("<<:
// *base") bring in the keys of the mappings they name that the mapping does
// not set itself. A null value is an empty mapping.
func (p *policyParser) mapping(n *yaml.Node, what string, allowed []string, f func(key string, k, v *yaml.Node)) {
	if yamlcheck.IsNull(n) {
		return
	}
	kvs, _ := p.c.Mapping(n, yamlcheck.Keys{What: what, Allowed: allowed, Merge: true})
	for _, kv := range kvs {
		f(kv.Key, kv.K, kv.V)
	}
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

func (p *policyParser) policy(n *yaml.Node) *Policy {
	pol := &Policy{}
	p.mapping(n, "policy", []string{"greylist", "rules", "mx"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "mx":
			pol.MX = p.mx(v)
		case "greylist":
			pol.Greylist = p.greylist(v)
		case "rules":
			if v.Kind != yaml.SequenceNode {
				p.errorf(v, "rules must be a list")
				return
			}
			for _, r := range v.Content {
				if rule, ok := p.rule(deref(r)); ok {
					pol.Rules = append(pol.Rules, rule)
				}
			}
		}
	})
	return pol
}

// greylistKeys are the keys of a greylist mapping.
var greylistKeys = []string{"flavor", "delay", "retry_window", "max_age", "subnet_v4", "subnet_v6", "auto_whitelist_after",
	"auto_whitelist_by", "reply", "stage", "key", "sender_normalize", "body_key"}

func (p *policyParser) greylist(n *yaml.Node) *Greylist {
	// The flavour sets the defaults, so it is read first wherever it stands.
	g := flavorGreylist(FlavorGeneric)
	if m := deref(n); m.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(m.Content); i += 2 {
			if k, v := deref(m.Content[i]), deref(m.Content[i+1]); k.Value == "flavor" {
				if f := flavorGreylist(v.Value); f != nil {
					g = f
				} else {
					p.errorf(v, "unknown greylist flavor %q (%s)", v.Value, strings.Join(Flavors, ", "))
				}
			}
		}
	}
	at := n // where a retry_window/delay conflict is reported
	var stageAt *yaml.Node
	p.mapping(n, "greylist", greylistKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "flavor":
		case "delay":
			g.Delay = p.duration(v, key)
			if at == n {
				at = v
			}
		case "retry_window":
			g.RetryWindow = p.duration(v, key)
			at = v
		case "max_age":
			g.MaxAge = p.duration(v, key)
		case "subnet_v4":
			g.SubnetV4 = p.intIn(v, key, 0, 32)
		case "subnet_v6":
			g.SubnetV6 = p.intIn(v, key, 0, 128)
		case "auto_whitelist_after":
			g.AutoWhitelistAfter = p.intIn(v, key, 0, 1000000)
		case "auto_whitelist_by":
			switch v.Value {
			case WhitelistSubnet, WhitelistClient, WhitelistClientHelo:
				g.AutoWhitelistBy = v.Value
			default:
				p.errorf(v, "auto_whitelist_by must be subnet, client or client_helo, got %q", v.Value)
			}
		case "reply":
			if r, err := ParseReply(expandReply(v.Value, 0, "a@b.example")); err != nil {
				p.errorf(v, "greylist reply: %v", err)
			} else if r.Code/100 != 4 {
				p.errorf(v, "greylist reply must be a 4xx reply, got %d", r.Code)
			} else {
				g.Reply = v.Value
			}
		case "stage":
			stageAt = v
			switch Stage(v.Value) {
			case StageRcpt, StageEOD:
				g.Stage = Stage(v.Value)
			default:
				p.errorf(v, "greylist stage must be rcpt or eod, got %q", v.Value)
			}
		case "key":
			g.Key = p.keyParts(v)
		case "sender_normalize":
			switch v.Value {
			case "postgrey":
				g.SenderNormalize = v.Value
			case "none":
				g.SenderNormalize = ""
			default:
				p.errorf(v, "sender_normalize must be postgrey or none, got %q", v.Value)
			}
		case "body_key":
			g.BodyKey = p.intIn(v, key, 0, 1<<30)
		}
	})
	if g.RetryWindow > 0 && g.RetryWindow < g.Delay {
		p.errorf(at, "greylist retry_window (%s) is shorter than delay (%s): no retry could ever pass", g.RetryWindow, g.Delay)
	}
	if g.perMessage() && g.Stage != StageEOD {
		where := n
		if stageAt != nil {
			where = stageAt
		}
		p.errorf(where, "a greylist key with recipients, message_id or body_key needs stage: eod (they are known after the final dot)")
	}
	return g
}

// keyParts parses a greylist key: a list of Key* names, each once;
// recipient excludes the whole-message recipient lists.
func (p *policyParser) keyParts(v *yaml.Node) []string {
	if v.Kind != yaml.SequenceNode || len(v.Content) == 0 {
		p.errorf(v, "greylist key must be a list of: %s", strings.Join(keyParts, ", "))
		return nil
	}
	var out []string
	for _, e := range v.Content {
		e = deref(e)
		switch {
		case !contains(keyParts, e.Value):
			p.errorf(e, "unknown greylist key part %q (%s)", e.Value, strings.Join(keyParts, ", "))
		case contains(out, e.Value):
			p.errorf(e, "greylist key part %q twice", e.Value)
		default:
			out = append(out, e.Value)
		}
	}
	n := 0
	for _, x := range out {
		if x == KeyRecipient || x == KeyRecipients || x == KeyRecipientsSorted {
			n++
		}
	}
	if n > 1 {
		p.errorf(v, "greylist key: give one of recipient, recipients, recipients_sorted")
	}
	return out
}

func (p *policyParser) mx(n *yaml.Node) *MX {
	m := &MX{State: MXShared}
	p.mapping(n, "mx", []string{"hosts", "state"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "state":
			if v.Value != MXShared && v.Value != MXSplit {
				p.errorf(v, "mx state must be split or shared, got %q", v.Value)
				return
			}
			m.State = v.Value
		case "hosts":
			if v.Kind != yaml.SequenceNode {
				p.errorf(v, "mx hosts must be a list of host:port")
				return
			}
			for _, h := range v.Content {
				h = deref(h)
				host, _, err := net.SplitHostPort(h.Value)
				if err != nil {
					p.errorf(h, "mx host %q: want host:port (%v)", h.Value, err)
					continue
				}
				if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
					p.errorf(h, "mx host %q: must be a loopback address (127.0.0.0/8 or ::1)", h.Value)
					continue
				}
				m.Hosts = append(m.Hosts, h.Value)
			}
		}
	})
	return m
}

var ruleKeys = []string{"match", "reply", "drop", "close", "delay", "tls", "accept"}

func (p *policyParser) rule(n *yaml.Node) (Rule, bool) {
	r := Rule{Line: n.Line, Col: n.Column}
	var actions []string
	nerr := p.c.Len()
	p.mapping(n, "rule", ruleKeys, func(key string, k, v *yaml.Node) {
		if key != "match" {
			actions = append(actions, key)
		}
		switch key {
		case "match":
			r.Match = p.match(v)
		case "reply":
			rep, err := ParseReply(v.Value)
			if err != nil {
				p.errorf(v, "reply: %v", err)
				return
			}
			r.Action, r.Reply = ActionReply, &rep
		case "drop":
			if !p.boolTrue(v, key) {
				return
			}
			r.Action = ActionDrop
		case "accept":
			if !p.boolTrue(v, key) {
				return
			}
			r.Action = ActionAccept
		case "close":
			// "close: 421" or a whole reply "close: 421 4.3.2 Shutting down".
			text := v.Value
			if _, err := strconv.Atoi(text); err == nil {
				text += " Service not available, closing transmission channel"
			}
			rep, err := ParseReply(text)
			if err != nil {
				p.errorf(v, "close: %v", err)
				return
			}
			r.Action, r.Reply = ActionClose, &rep
		case "delay":
			r.Action, r.Delay = ActionDelay, p.duration(v, key)
		case "tls":
			if v.Value != "fail" {
				p.errorf(v, "tls action must be \"fail\", got %q", v.Value)
				return
			}
			r.Action = ActionTLS
		}
	})
	if n.Kind != yaml.MappingNode {
		return r, false
	}
	switch {
	case len(actions) == 0:
		p.errorf(n, "rule has no action (one of: reply, drop, close, delay, tls, accept)")
	case len(actions) > 1:
		p.errorf(n, "rule has %d actions (%s): give exactly one", len(actions), strings.Join(actions, ", "))
	}
	if r.Action == ActionTLS && r.Match.Stage != StageStartTLS {
		p.errorf(n, "tls: fail needs match.stage: starttls")
	}
	if r.Action == ActionReply && r.Reply != nil && r.Match.Stage == StageConnect && r.Reply.Code/100 == 2 {
		p.errorf(n, "a connect-stage reply must be 4xx or 5xx (the 220 greeting is the default)")
	}
	return r, p.c.Len() == nerr
}

func (p *policyParser) match(n *yaml.Node) Match {
	var m Match
	p.mapping(n, "match", []string{"stage", "attempt", "connection", "mx", "client", "helo", "sender", "rcpt", "after", "before"}, func(key string, k, v *yaml.Node) {
		switch key {
		case "stage":
			switch s := Stage(v.Value); s {
			case StageConnect, StageHelo, StageStartTLS, StageMail, StageRcpt, StageData, StageEOD, StageQuit:
				m.Stage = s
			default:
				p.errorf(v, "unknown stage %q (connect, helo, starttls, mail, rcpt, data, eod, quit)", v.Value)
			}
		case "attempt", "connection", "mx":
			r, err := ParseIntRange(v.Value)
			if err != nil {
				p.errorf(v, "%s: %v", key, err)
				return
			}
			switch key {
			case "attempt":
				m.Attempt = &r
			case "connection":
				m.Connection = &r
			default:
				m.MX = &r
			}
		case "client":
			if _, err := parseClientMatch(v.Value); err != nil {
				p.errorf(v, "client: %v", err)
				return
			}
			m.Client = v.Value
		case "helo", "sender", "rcpt":
			if _, err := path.Match(strings.ToLower(v.Value), ""); err != nil {
				p.errorf(v, "%s: bad glob %q: %v", key, v.Value, err)
				return
			}
			switch key {
			case "helo":
				m.Helo = v.Value
			case "sender":
				m.Sender = v.Value
			case "rcpt":
				m.Rcpt = v.Value
			}
		case "after":
			m.After = p.duration(v, key)
		case "before":
			m.Before = p.duration(v, key)
		}
	})
	if m.Attempt != nil && m.Stage != "" && m.Stage != StageRcpt && m.Stage != StageData && m.Stage != StageEOD {
		p.errorf(n, "attempt counts recipients: it needs stage rcpt, data or eod (or no stage), not %s", m.Stage)
	}
	return m
}

func (p *policyParser) duration(v *yaml.Node, key string) time.Duration {
	d, err := parseDuration(v.Value)
	if err != nil || d < 0 {
		p.errorf(v, "%s: invalid duration %q (want e.g. 2s, 5m, 48h, 35d)", key, v.Value)
		return 0
	}
	return d
}

func (p *policyParser) intIn(v *yaml.Node, key string, lo, hi int) int {
	n, err := strconv.Atoi(v.Value)
	if err != nil || n < lo || n > hi {
		p.errorf(v, "%s must be a whole number from %d to %d, got %q", key, lo, hi, v.Value)
		return lo
	}
	return n
}

func (p *policyParser) boolTrue(v *yaml.Node, key string) bool {
	b, err := strconv.ParseBool(v.Value)
	if err != nil || !b {
		p.errorf(v, "%s must be true", key)
		return false
	}
	return true
}

// parseDuration is time.ParseDuration plus whole days ("35d"), as greylisters write max ages.
func parseDuration(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	return time.ParseDuration(s)
}

// ParseReply parses "CODE [X.Y.Z] text" into a Reply.
func ParseReply(s string) (Reply, error) {
	s = strings.TrimSpace(s)
	code, rest, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || n < 200 || n > 599 {
		return Reply{}, fmt.Errorf("%q does not start with a reply code 200-599", s)
	}
	r := Reply{Code: n}
	rest = strings.TrimSpace(rest)
	if first, text, _ := strings.Cut(rest, " "); isEnhanced(first) {
		if first[0]-'0' != byte(n/100) {
			return Reply{}, fmt.Errorf("enhanced code %s does not match reply class %d", first, n/100)
		}
		r.Enhanced, rest = first, strings.TrimSpace(text)
	}
	if strings.ContainsAny(rest, "\r\n") {
		return Reply{}, fmt.Errorf("reply text must be one line")
	}
	r.Text = rest
	if r.Text == "" {
		r.Text = "No reason given"
	}
	return r, nil
}

func isEnhanced(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || (parts[0] != "2" && parts[0] != "4" && parts[0] != "5") {
		return false
	}
	for _, p := range parts[1:] {
		if n, err := strconv.Atoi(p); err != nil || n < 0 || n > 999 || len(p) > 3 {
			return false
		}
	}
	return true
}

// ParseIntRange parses "3", "1-3" or "4-".
func ParseIntRange(s string) (IntRange, error) {
	lo, hi, isRange := strings.Cut(strings.TrimSpace(s), "-")
	min, err := strconv.Atoi(strings.TrimSpace(lo))
	if err != nil || min < 1 {
		return IntRange{}, fmt.Errorf("want N, N-M or N- with N ≥ 1, got %q", s)
	}
	if !isRange {
		return IntRange{Min: min, Max: min}, nil
	}
	if strings.TrimSpace(hi) == "" {
		return IntRange{Min: min}, nil
	}
	max, err := strconv.Atoi(strings.TrimSpace(hi))
	if err != nil || max < min {
		return IntRange{}, fmt.Errorf("want N, N-M or N- with N ≤ M, got %q", s)
	}
	return IntRange{Min: min, Max: max}, nil
}

// Contains reports whether n is in r.
func (r IntRange) Contains(n int) bool {
	return n >= r.Min && (r.Max == 0 || n <= r.Max)
}

// parseClientMatch parses an address or CIDR.
func parseClientMatch(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		pfx, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("bad CIDR %q", s)
		}
		return pfx.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("bad address %q", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
