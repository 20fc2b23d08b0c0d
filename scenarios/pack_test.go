package scenarios

import (
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

func TestDefaultPackLoads(t *testing.T) {
	scs, err := Default()
	if err != nil {
		t.Fatalf("Default():\n%v", err)
	}
	files, err := PackFiles()
	if err != nil {
		t.Fatal(err)
	}
	if len(scs) != len(files) {
		t.Errorf("%d scenarios from %d pack files: want one scenario per file", len(scs), len(files))
	}
	byName := map[string]Scenario{}
	for _, sc := range scs {
		byName[sc.Name] = sc
		if want := path.Join(PackDir, sc.Name+".yaml"); sc.File != want {
			t.Errorf("scenario %s is in %s, want %s (file named after the scenario)", sc.Name, sc.File, want)
		}
		if sc.Description == "" || len(sc.Labels) == 0 {
			t.Errorf("%s: every pack scenario needs a description and labels", sc.Name)
		}
		if sc.Policy.Kind != 0 {
			if _, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy); err != nil {
				t.Errorf("%s: policy: %v", sc.Name, err)
			}
		}
	}
	for _, name := range []string{"greylist-once", "greylist-multi-recipient", "restart-between-deferral-and-retry",
		"double-restart-then-greylist", "restart-during-delivery", "fakemta-outage", "drop-after-final-dot",
		"421-after-ehlo", "starttls-failure", "expiry-bounce", "delay-warning", "submission-ehlo-twice", "load-500",
		"multi-mx-split-state", "multi-mx-shared-state", "rspamd-greylist-at-eod", "greylisted-dsn"} {
		if _, ok := byName[name]; !ok {
			t.Errorf("the pack has no %s scenario", name)
		}
	}

	// The scenarios say what their names promise.
	policyOf := func(sc Scenario) *fakemta.Policy {
		t.Helper()
		p, err := fakemta.ParsePolicyNode(sc.File, &sc.Policy)
		if err != nil {
			t.Fatalf("%s: %v", sc.Name, err)
		}
		return p
	}
	step := func(sc Scenario, f func(Step) bool) *Step {
		for i := range sc.Steps {
			if f(sc.Steps[i]) {
				return &sc.Steps[i]
			}
		}
		return nil
	}

	seed := byName["double-restart-then-greylist"]
	if !slices.Contains(seed.Labels, "seed") {
		t.Errorf("double-restart-then-greylist is not labelled seed")
	}
	if st := seed.Steps[0]; st.Restart == nil || st.Restart.Times != 2 {
		t.Errorf("the seed scenario must start with a double restart, got %+v", st)
	}
	iDefer := slices.IndexFunc(seed.Steps, func(s Step) bool { return s.Wait != nil && s.Wait.For == "deferred" })
	iCheck := slices.IndexFunc(seed.Steps, func(s Step) bool { return s.Checkpoint != nil })
	if iDefer < 0 || iCheck != iDefer+1 {
		t.Errorf("the seed scenario needs a checkpoint right after the deferral (deferral step %d, checkpoint step %d)", iDefer, iCheck)
	}
	if g := policyOf(seed).Greylist; g == nil || g.Delay > 2e9 {
		t.Errorf("the seed scenario must greylist with a short delay: %+v", g)
	}

	load := byName["load-500"]
	if s := load.Steps[0].Send; s == nil || s.Count != 500 || s.Concurrency != 10 {
		t.Errorf("load-500 send: %+v", load.Steps[0].Send)
	}
	if g := policyOf(load).Greylist; g == nil || g.AutoWhitelistAfter != 0 {
		t.Errorf("load-500 must greylist every triplet (auto_whitelist_after: 0): %+v", g)
	}

	multi := byName["greylist-multi-recipient"]
	if s := multi.Steps[0].Send; s == nil || len(s.To) != 2 {
		t.Errorf("greylist-multi-recipient must send to two recipients: %+v", s)
	}
	if r := policyOf(multi).Rules; len(r) != 1 || r[0].Match.Stage != fakemta.StageRcpt || r[0].Match.Attempt == nil ||
		r[0].Reply == nil || r[0].Reply.Code/100 != 4 || !strings.HasPrefix(multi.Steps[0].Send.To[1], strings.Split(r[0].Match.Rcpt, "@")[0]+"@") {
		t.Errorf("greylist-multi-recipient must defer only the second recipient at RCPT on attempt 1: %+v", r)
	}
	if multi.Expect.Duplicates == "tolerate" {
		t.Errorf("greylist-multi-recipient must not tolerate duplicates")
	}

	drop := byName["drop-after-final-dot"]
	if r := policyOf(drop).Rules; len(r) != 1 || r[0].Action != fakemta.ActionDrop || r[0].Match.Stage != fakemta.StageEOD {
		t.Errorf("drop-after-final-dot rules: %+v", r)
	}
	if drop.Expect.Duplicates != "tolerate" {
		t.Errorf("drop-after-final-dot must tolerate the duplicate")
	}

	during := byName["restart-during-delivery"]
	if st := step(during, func(s Step) bool { return s.Restart != nil }); st == nil || st.Restart.When != "during-data" {
		t.Errorf("restart-during-delivery must restart during data: %+v", st)
	}

	tls := byName["starttls-failure"]
	if r := policyOf(tls).Rules; len(r) != 1 || r[0].Action != fakemta.ActionTLS || r[0].Match.Connection == nil {
		t.Errorf("starttls-failure rules: %+v", r)
	}
	ehlo := byName["421-after-ehlo"]
	if r := policyOf(ehlo).Rules; len(r) != 1 || r[0].Action != fakemta.ActionClose || r[0].Reply.Code != 421 || r[0].Match.Stage != fakemta.StageHelo {
		t.Errorf("421-after-ehlo rules: %+v", r)
	}

	expiry := byName["expiry-bounce"]
	if st := step(expiry, func(s Step) bool { return s.Wait != nil && s.Wait.For == "dsn" }); st == nil ||
		st.Wait.Action != "failed" || st.Wait.TimeoutFrom != "queue_lifetime" {
		t.Errorf("expiry-bounce must wait for a failed DSN with timeout_from queue_lifetime: %+v", st)
	}
	if m := expiry.Expect.Messages; len(m) != 1 || m[0].Verdict != "bounced" || m[0].DSN == nil || m[0].DSN.Action != "failed" {
		t.Errorf("expiry-bounce expectations: %+v", m)
	}

	dw := byName["delay-warning"]
	if !slices.Contains(dw.Needs(), profile.CapDelayWarning) {
		t.Errorf("delay-warning needs %v", dw.Needs())
	}
	if m := dw.Expect.Messages; len(m) != 1 || m[0].Verdict != "delivered" || m[0].DSN == nil || m[0].DSN.Action != "delayed" {
		t.Errorf("delay-warning expectations: %+v", m)
	}

	sub := byName["submission-ehlo-twice"]
	if s := sub.Steps[0].Send; s == nil || !s.EHLOTwice || !s.RsetBeforeMail {
		t.Errorf("submission-ehlo-twice send: %+v", s)
	}

	for name, state := range map[string]string{"multi-mx-split-state": fakemta.MXSplit, "multi-mx-shared-state": fakemta.MXShared} {
		sc := byName[name]
		pol := policyOf(sc)
		if pol.MX == nil || pol.MX.State != state || pol.Greylist == nil || !slices.Contains(sc.Needs(), profile.CapMultiMX) {
			t.Errorf("%s: mx %+v, greylist %+v, needs %v: want state %s, a greylist and multi-mx", name, pol.MX, pol.Greylist, sc.Needs(), state)
		}
		// The primary MX defers every retry, so only failover delivers.
		if r := pol.Rules; len(r) != 1 || r[0].Match.MX == nil || r[0].Match.MX.Min != 1 || r[0].Match.MX.Max != 1 ||
			r[0].Match.Attempt == nil || r[0].Match.Attempt.Max != 0 || r[0].Reply == nil || r[0].Reply.Code/100 != 4 {
			t.Errorf("%s: rules %+v, want MX 1 to defer every retry", name, r)
		}
	}
	if g := policyOf(byName["rspamd-greylist-at-eod"]).Greylist; g == nil || g.Flavor != fakemta.FlavorRspamd || g.Stage != fakemta.StageEOD {
		t.Errorf("rspamd-greylist-at-eod must greylist as rspamd does, at eod: %+v", g)
	}
	gd := byName["greylisted-dsn"]
	if pol := policyOf(gd); pol.Greylist == nil || len(pol.Rules) != 1 || pol.Rules[0].Reply == nil || pol.Rules[0].Reply.Code/100 != 5 {
		t.Errorf("greylisted-dsn must refuse the recipient (5xx) and greylist the DSN: %+v", pol)
	}
	if m := gd.Expect.Messages; len(m) != 1 || m[0].Verdict != "bounced" || m[0].DSN == nil || m[0].DSN.Action != "failed" {
		t.Errorf("greylisted-dsn expectations: %+v", m)
	}

	outage := byName["fakemta-outage"]
	var actions []string
	for _, s := range outage.Steps {
		if s.FakeMTA != "" {
			actions = append(actions, s.FakeMTA)
		}
	}
	if !reflect.DeepEqual(actions, []string{"stop", "start"}) || !slices.Contains(outage.Needs(), profile.CapFakeMTAControl) {
		t.Errorf("fakemta-outage: fake MTA steps %v, needs %v", actions, outage.Needs())
	}
}
