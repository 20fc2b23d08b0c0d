// Package profile loads a relay profile: how the harness reaches, controls,
// inspects and times a relay under test.
package profile

import (
	"slices"

	"github.com/greyharness/greyharness/harness/history"
	"github.com/greyharness/greyharness/harness/ledger"
)

// QueueFormat names a relay's queue listing format.
type QueueFormat string

// Queue listing formats.
const (
	QueuePostfixJSON QueueFormat = "postfix-json" // postqueue -j
	QueueExim        QueueFormat = "exim"         // exim -bp [+ "msglog ID: LINE" deferrals]
	QueueOpenSMTPD   QueueFormat = "opensmtpd"    // smtpctl show queue
	QueueSample      QueueFormat = "sample-json"  // alias of json (the sample relay's listing)
	QueueJSON        QueueFormat = "json"         // greyharness's generic format, version 1 (docs/relays.md)
	QueueHaraka      QueueFormat = "haraka"       // a tar stream of Haraka's outbound queue folder
	QueueSendmail    QueueFormat = "sendmail"     // sendmail -bp -v (or mailq)
	QueueNullmailer  QueueFormat = "nullmailer"   // a tar stream of nullmailer's queue folder
	QueueMaddy       QueueFormat = "maddy"        // a tar stream of maddy's queue ID.meta and ID.header files
	QueueNone        QueueFormat = "none"
)

// Submit says where and how the harness submits traffic.
type Submit struct {
	Addr     string `yaml:"addr" json:"addr"`                             // host:port
	Helo     string `yaml:"helo,omitempty" json:"helo,omitempty"`         // default "harness.greyharness.test"
	StartTLS bool   `yaml:"starttls,omitempty" json:"starttls,omitempty"` // use STARTTLS (certificate not verified)
	Username string `yaml:"username,omitempty" json:"username,omitempty"` // AUTH PLAIN when set
	Password string `yaml:"password,omitempty" json:"password,omitempty"`
}

// Commands are shell commands (run with sh -c in the profile's folder,
// ${ENV} expanded). Start may run the relay in the foreground: when
// StartForeground is true the harness keeps it as a supervised child.
type Commands struct {
	Start           string `yaml:"start,omitempty" json:"start,omitempty"`
	StartForeground bool   `yaml:"start_foreground,omitempty" json:"start_foreground,omitempty"`
	// Ready is run after start until it exits 0 (bounded by timing.restart_grace).
	Ready   string `yaml:"ready,omitempty" json:"ready,omitempty"`
	Stop    string `yaml:"stop,omitempty" json:"stop,omitempty"`
	Restart string `yaml:"restart,omitempty" json:"restart,omitempty"` // default: stop then start
	Flush   string `yaml:"flush,omitempty" json:"flush,omitempty"`
	Queue   string `yaml:"queue,omitempty" json:"queue,omitempty"` // prints the queue listing in QueueFormat
	// Setup runs once before the first start (e.g. build a private instance, empty the queue).
	Setup string `yaml:"setup,omitempty" json:"setup,omitempty"`
	// Teardown runs once after the run.
	Teardown string `yaml:"teardown,omitempty" json:"teardown,omitempty"`
}

// FakeMTARef points at a fake MTA already deployed beside the relay (staging).
type FakeMTARef struct {
	API   string `yaml:"api" json:"api"`
	Token string `yaml:"token,omitempty" json:"token,omitempty"`
}

// Profile is a relay profile.
type Profile struct {
	Name        string      `yaml:"name" json:"name"`
	Submit      Submit      `yaml:"submit" json:"submit"`
	Commands    Commands    `yaml:"commands" json:"commands"`
	QueueFormat QueueFormat `yaml:"queue_format" json:"queue_format"`
	NextHop     []string    `yaml:"next_hop" json:"next_hop"` // where the in-process fake MTA listens
	// Lanes are more loopback addresses (host:port) the in-process fake
	// MTA listens on, one per lane: the relay routes a message whose
	// recipient's domain starts with the label "lN-" (N from 1) to lane N's
	// address, so a scenario whose policy acts at the connection level
	// holds a lane and runs beside the others (docs/relays.md, "Lanes").
	Lanes   []string       `yaml:"lanes,omitempty" json:"lanes,omitempty"`
	FakeMTA *FakeMTARef    `yaml:"fakemta,omitempty" json:"fakemta,omitempty"`
	Timing  history.Timing `yaml:"timing" json:"timing"`
	// LogFiles are the relay's own log files (e.g. Postfix's maillog_file);
	// their tails join the captured output in failure dumps (${ENV}-expanded).
	LogFiles []string `yaml:"log_files,omitempty" json:"log_files,omitempty"`
	// Env is extra environment for commands (values ${ENV}-expanded).
	Env map[string]string `yaml:"env,omitempty" json:"env,omitempty"`
	// Dir is the profile file's folder; commands run there. Set by Load.
	Dir string `yaml:"-" json:"dir"`
	// Scenarios are overrides per scenario name, for behaviour a relay truly
	// has (with its evidence): skip it, or expect it to fail with named
	// verdicts (docs/relays.md, "Expected outcomes").
	Scenarios map[string]ScenarioOverride `yaml:"scenarios,omitempty" json:"scenarios,omitempty"`
}

// ScenarioOverride adjusts one scenario for one relay, with the reason.
type ScenarioOverride struct {
	Skip string `yaml:"skip,omitempty" json:"skip,omitempty"` // skip with this reason
	// Share runs a scenario that says `exclusive: true` beside the others
	// on this relay, for this reason: exclusivity guards neighbours'
	// verdicts against its load, which this relay's timing may make
	// harmless (a retry bound of minutes against seconds of load).
	Share string `yaml:"share,omitempty" json:"share,omitempty"`
	// Expect is a documented expected failure: the scenario fails, and only
	// with these verdicts. The verdicts themselves are never loosened.
	Expect *Expect `yaml:"expect,omitempty" json:"expect,omitempty"`
	// Why is the relay's real behaviour behind Expect, with its evidence (a
	// log line, its documentation); required with Expect.
	Why string `yaml:"why,omitempty" json:"why,omitempty"`
}

// Expect is what an expected failure looks like.
type Expect struct {
	// Verdict lists the failing verdicts expected: every failing finding's
	// primary verdict must be one of them.
	Verdict []ledger.Verdict `yaml:"verdict" json:"verdict"`
}

// Explains reports whether o expects a scenario that ended with r (and
// stepError, "" when every step ran) to fail as it did: it failed, no step
// failed, at least one finding failed, and every failing finding's primary
// verdict is one Expect names. Any other failure is a failure, and a pass
// is an unexpected pass.
func (o ScenarioOverride) Explains(r ledger.Result, stepError string) bool {
	if o.Expect == nil || r.Passed || stepError != "" {
		return false
	}
	n := 0
	for _, f := range r.Findings {
		if !f.Failed {
			continue
		}
		if !slices.Contains(o.Expect.Verdict, f.Primary) {
			return false
		}
		n++
	}
	return n > 0
}

// ExpectableVerdicts are the verdicts an expected failure may name: those
// that can fail a finding (not delivered, bounced, delayed-notice, nor the
// harness's own harness-error).
func ExpectableVerdicts() []ledger.Verdict {
	var out []ledger.Verdict
	for _, v := range ledger.AllVerdicts() {
		switch v {
		case ledger.Delivered, ledger.Bounced, ledger.DelayedNotice, ledger.HarnessError:
			continue
		}
		out = append(out, v)
	}
	return out
}

// Capability is something a scenario may need from a profile.
type Capability string

// Capabilities.
const (
	CapRestart        Capability = "restart"
	CapStop           Capability = "stop"
	CapQueue          Capability = "queue"
	CapFlush          Capability = "flush"
	CapFakeMTAControl Capability = "fakemta-control" // stop/start the fake MTA (in-process only)
	CapDelayWarning   Capability = "delay-warning"   // timing.delay_warning > 0
	CapMultiMX        Capability = "multi-mx"        // next_hop lists several MX hosts (in-process fake MTA)
)
