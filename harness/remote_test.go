package harness_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness"
	"github.com/greyharness/greyharness/harness/profile"
	"github.com/greyharness/greyharness/harness/relay"
	"github.com/greyharness/greyharness/harness/runner"
	"github.com/greyharness/greyharness/scenarios"
)

// TestStagingFakeMTAOverAPI runs a scenario the way it runs against a
// staging relay: the fake MTA is already deployed beside the relay (here a
// separate server on loopback), and the harness drives it only through its
// control API (policy, reset, live events) with a bearer token.
func TestStagingFakeMTAOverAPI(t *testing.T) {
	sampleOnly(t)
	bin, env := testBin()
	prof, cleanup, err := harness.LoadRelay("sample", bin, env)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()

	// The "deployed" fake MTA: its own state, an API with a token.
	deployed, err := fakemta.New(fakemta.Config{Listen: prof.NextHop, StateDir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if err := deployed.Start(); err != nil {
		t.Fatal(err)
	}
	defer deployed.Close()
	const token = "s3cret-token"
	hs, l, err := deployed.ServeAPI("127.0.0.1:0", token)
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	prof.FakeMTA = &profile.FakeMTARef{API: "http://" + l.Addr().String(), Token: token}

	pack, err := scenarios.Default()
	if err != nil {
		t.Fatal(err)
	}
	var sc *scenarios.Scenario
	for i := range pack {
		if pack[i].Name == "greylist-once" {
			sc = &pack[i]
		}
	}
	if sc == nil {
		t.Fatal("greylist-once missing from the pack")
	}
	if prof.Has(profile.CapFakeMTAControl) {
		t.Fatal("a profile with a remote fake MTA must not claim fakemta-control")
	}

	logDir, err := os.MkdirTemp("", "greyharness-remote-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(logDir)
	rc := relay.New(prof, logDir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := rc.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	defer rc.Teardown(context.Background())
	if err := rc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer rc.Stop(context.Background())

	h, res, err := runner.RunScenario(ctx, &runner.Options{Profile: prof, Relay: rc}, sc)
	if err != nil {
		t.Fatalf("step: %v", err)
	}
	if !res.Passed {
		t.Fatalf("greylist-once failed over the API: %+v", res.Failed())
	}
	// The policy went in over the API (a greylist deferral happened) and
	// the journal came back over server-sent events.
	var deferred, delivered bool
	for _, ev := range h.Journal {
		if ev.Kind != fakemta.EventTransaction {
			continue
		}
		for _, r := range ev.Transaction.Rcpts {
			if r.Greylist == "deferred" {
				deferred = true
			}
		}
		if ev.Transaction.Message != nil && ev.Transaction.Message.Accepted {
			delivered = true
		}
	}
	if !deferred || !delivered {
		t.Fatalf("journal over SSE: deferred=%v delivered=%v (%d events)", deferred, delivered, len(h.Journal))
	}
	if got := deployed.Policy().Greylist; got == nil || got.Delay != time.Second {
		t.Fatalf("the deployed fake MTA's policy was not set from the scenario: %+v", got)
	}
}
