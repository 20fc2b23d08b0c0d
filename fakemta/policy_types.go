package fakemta

import "time"

// Policy is the fake MTA's behaviour: ordered rules (first match wins,
// checked before the greylist) and an optional greylist.
type Policy struct {
	Greylist *Greylist `yaml:"greylist,omitempty" json:"greylist,omitempty"`
	Rules    []Rule    `yaml:"rules,omitempty" json:"rules,omitempty"`
	MX       *MX       `yaml:"mx,omitempty" json:"mx,omitempty"`
}

// MX makes the fake MTA several MX hosts: one per listener.
type MX struct {
	// Hosts are listen addresses added to --listen / Config.Listen.
	Hosts []string `json:"hosts,omitempty"`
	// State is MXShared (one greylist for every host, the default) or
	// MXSplit (each host greylists on its own).
	State string `json:"state"`
}

// MX states.
const (
	MXShared = "shared"
	MXSplit  = "split"
)

// Greylist emulates a greylister: generic, postgrey, milter-greylist,
// rspamd or Exim (Flavor sets the defaults of every other field).
type Greylist struct {
	Flavor string `json:"flavor"` // default generic
	// Key lists the parts of a record's key (Key* constants).
	Key []string `json:"key"`
	// SenderNormalize is "postgrey" (BATV, +extension, digits) or "" (lowercase only).
	SenderNormalize string `json:"sender_normalize,omitempty"`
	// BodyKey > 0 adds rspamd's body key: a hash of the first BodyKey bytes
	// of the body; a body whose record has matured passes from any client.
	BodyKey int `json:"body_key,omitempty"`
	// AutoWhitelistBy is what auto_whitelist_after counts by: subnet, client or client_helo.
	AutoWhitelistBy string `json:"auto_whitelist_by"`
	// whitelistEvery counts a client at most once per interval (postgrey: 1h).
	whitelistEvery time.Duration
	// whitelistOrigin whitelists the client that started the clock (Exim).
	whitelistOrigin bool

	Delay              time.Duration `json:"delay"`                // default 300s
	RetryWindow        time.Duration `json:"retry_window"`         // default 48h
	MaxAge             time.Duration `json:"max_age"`              // default 35d
	SubnetV4           int           `json:"subnet_v4"`            // default 24
	SubnetV6           int           `json:"subnet_v6"`            // default 64
	AutoWhitelistAfter int           `json:"auto_whitelist_after"` // default 5, 0 = off
	Reply              string        `json:"reply"`                // default "451 4.7.1 Greylisted, please try again in %s seconds"
	Stage              Stage         `json:"stage"`                // rcpt (default) or eod
}

// Match selects when a rule applies; every set field must match.
type Match struct {
	Stage      Stage     `json:"stage,omitempty"`
	Attempt    *IntRange `json:"attempt,omitempty"`    // this recipient's attempt number
	Connection *IntRange `json:"connection,omitempty"` // server connection number
	// MX is the listener's ordinal (from 1, in listen order): which MX
	// host the client reached, whatever its address and port.
	MX     *IntRange     `json:"mx,omitempty"`
	Client string        `json:"client,omitempty"` // address or CIDR
	Helo   string        `json:"helo,omitempty"`   // glob
	Sender string        `json:"sender,omitempty"` // glob
	Rcpt   string        `json:"rcpt,omitempty"`   // glob
	After  time.Duration `json:"after,omitempty"`  // time since the fake MTA started
	Before time.Duration `json:"before,omitempty"`
}

// IntRange is an inclusive range "3", "1-3" or "4-" (open end: Max 0).
type IntRange struct {
	Min, Max int
}

// ActionKind names what a rule does.
type ActionKind string

// Actions.
const (
	ActionAccept ActionKind = "accept"
	ActionReply  ActionKind = "reply"
	ActionDrop   ActionKind = "drop"
	ActionClose  ActionKind = "close"
	ActionDelay  ActionKind = "delay"
	ActionTLS    ActionKind = "tls"
)

// Rule is one policy rule.
type Rule struct {
	Match  Match         `json:"match"`
	Action ActionKind    `json:"action"`
	Reply  *Reply        `json:"reply,omitempty"` // for reply and close
	Delay  time.Duration `json:"delay,omitempty"` // for delay
	// Line and Col locate the rule in its YAML file for messages.
	Line int `json:"-"`
	Col  int `json:"-"`
}
