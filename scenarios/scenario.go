// Package scenarios holds the default scenario pack (embedded), the JSON
// Schema scenario files follow, and the loader that turns YAML into
// Scenario values with file:line:col errors.
package scenarios

import (
	"github.com/greyharness/greyharness/harness/history"
	"go.yaml.in/yaml/v3"
)

// Scenario is one scenario: a fake MTA policy, steps, and expectations.
type Scenario struct {
	Name        string   `yaml:"name"`
	Description string   `yaml:"description,omitempty"`
	Labels      []string `yaml:"labels,omitempty"`
	// Exclusive is the YAML key `exclusive`: the scenario runs alone, with
	// no other scenario beside it on the relay and the fake MTA. Scenarios
	// whose steps or policy touch everyone run alone without it.
	Exclusive bool `yaml:"exclusive,omitempty"`
	// Policy is the fake MTA policy, in the fakemta policy format. It is kept
	// as a YAML node so the fakemta parser reports its own errors with the
	// scenario file's positions.
	Policy yaml.Node `yaml:"policy,omitempty"`
	// DeclaredNeeds is the YAML key `needs`: profile capabilities the
	// scenario cannot run without (restart, stop, queue, flush,
	// fakemta-control, delay-warning), beyond those its steps imply. The Go
	// field is not called Needs because the method Needs returns declared
	// and derived capabilities together.
	DeclaredNeeds []string `yaml:"needs,omitempty"`
	Steps         []Step   `yaml:"steps"`
	Expect        Expect   `yaml:"expect,omitempty"`

	// File, Line and Col locate the scenario (its mapping) for messages.
	// Set by the loader.
	File string `yaml:"-"`
	Line int    `yaml:"-"`
	Col  int    `yaml:"-"`
}

// Step is one step; exactly one of its action fields is set.
type Step struct {
	Send       *Send       `yaml:"send,omitempty"`
	Wait       *Wait       `yaml:"wait,omitempty"`
	Restart    *Restart    `yaml:"restart,omitempty"`
	FakeMTA    string      `yaml:"fakemta,omitempty"` // stop | start | restart | wipe-state
	Policy     *yaml.Node  `yaml:"policy,omitempty"`  // swap the fake MTA policy
	Flush      bool        `yaml:"flush,omitempty"`
	Checkpoint *Checkpoint `yaml:"checkpoint,omitempty"`
	// Other holds the action of a kind that has no field of its own: a
	// new kind's decode sets it, so adding a kind touches no shared file
	// but its one line in stepKinds.
	Other Action `yaml:"-"`

	Line int `yaml:"-"` // set by the loader
	Col  int `yaml:"-"`
}

// Send submits Count messages to the relay under test.
type Send struct {
	Name    string            `yaml:"name,omitempty"`  // group name for expectations (default "default")
	Count   int               `yaml:"count,omitempty"` // default 1
	From    string            `yaml:"from,omitempty"`  // default sender@client.greyharness.test
	To      []string          `yaml:"to"`
	Size    int               `yaml:"size,omitempty"` // body bytes, approx (default ~1 KiB)
	Headers map[string]string `yaml:"headers,omitempty"`
	// Submission-side double handshake variants.
	EHLOTwice             bool `yaml:"ehlo_twice,omitempty"`
	RsetBeforeMail        bool `yaml:"rset_before_mail,omitempty"`
	ResubmitSameMessageID bool `yaml:"resubmit_same_message_id,omitempty"`
	// Concurrency is how many submission connections run at once (default 1; load tests raise it).
	Concurrency int `yaml:"concurrency,omitempty"`
	// TagSender makes the envelope sender unique per message (local+gh-ID@domain)
	// so the ledger can follow attempts that never reach DATA. Default true.
	TagSender *bool `yaml:"tag_sender,omitempty"`
}

// Wait blocks until a condition holds for every message sent so far (or of
// Group), or fails the scenario at its deadline. Exactly one condition is set.
type Wait struct {
	For      string           `yaml:"for"`                // deferred | delivered | dsn | attempts | drained
	Group    string           `yaml:"group,omitempty"`    // default: all messages
	Attempts int              `yaml:"attempts,omitempty"` // with for: attempts
	Action   string           `yaml:"action,omitempty"`   // with for: dsn (failed, delayed)
	Timeout  history.Duration `yaml:"timeout,omitempty"`  // default derived from timing
	// TimeoutFrom names the timing field the default timeout derives from
	// (retry_max, queue_lifetime, delay_warning), times Factor (default 3), plus restart_grace.
	TimeoutFrom string  `yaml:"timeout_from,omitempty"`
	Factor      float64 `yaml:"factor,omitempty"`
}

// Restart restarts the relay under test Times times in a row, no pause.
type Restart struct {
	Times int `yaml:"times,omitempty"` // default 1
	// When: now (default) | after-deferral (waits for the first deferral reply) | during-data (waits until the fake MTA holds a DATA phase open)
	When string `yaml:"when,omitempty"`
}

// Checkpoint judges now: each message delivered, bounced, or visibly queued
// with a retry due within retry_max. In YAML it is written `checkpoint:`,
// `checkpoint: NAME` or `checkpoint: {name: NAME}`; the loader names an
// unnamed checkpoint "step-N".
type Checkpoint struct {
	Name string `yaml:"name,omitempty"`
}

// Expect is what must hold when the scenario has drained.
type Expect struct {
	Messages     []MessageExpectation `yaml:"messages,omitempty"`
	NoDuplicates *bool                `yaml:"no_duplicates,omitempty"` // default true
	// Duplicates: "fail" (default) or "tolerate" (reported, scenario passes).
	Duplicates string `yaml:"duplicates,omitempty"`
	// RetryTooSoon: "warn" (default) or "fail".
	RetryTooSoon string `yaml:"retry_too_soon,omitempty"`
}

// MessageExpectation is an expectation on one group of messages.
type MessageExpectation struct {
	Group   string           `yaml:"group,omitempty"`
	Verdict string           `yaml:"verdict"`
	Within  history.Duration `yaml:"within,omitempty"`
	DSN     *DSNExpectation  `yaml:"dsn,omitempty"`
}

// DSNExpectation expects a DSN with Action for each message of the group.
type DSNExpectation struct {
	Action string `yaml:"action"`
}
