package ledger

import (
	"strings"
	"testing"

	"github.com/greyharness/greyharness/harness/history"
)

// A neighbour's restart failed at 10s and the harness could not bring the
// relay back (12–14s): the relay was down for good from then on
// (History.RelayDown). A message greylisted at 1s and not delivered by
// then is not the relay's failure in this scenario — stalled or lost would
// name the wrong one — it is pending, not failed, saying why; what was
// settled before the loss is judged as usual.
func TestRelayDownForGoodLeavesUnresolvedPending(t *testing.T) {
	b := newH(60)
	s := b.submit("m1", 0, bob)
	b.greylist(1, s, bob)
	d := b.submit("m2", 0, carol)
	b.deliver(2, d, carol)
	b.h.Faults = append(b.h.Faults,
		history.Fault{Kind: history.FaultRelayRestart, Start: at(10), End: at(12), Detail: "by neighbour x 1 of 1", Err: "did not come back"},
		history.Fault{Kind: history.FaultRelayRestart, Start: at(12), End: at(14), Detail: "by neighbour x recovery", Err: "did not come back"})
	b.listing(60) // a listing of a stopped relay proves nothing
	b.h.RelayDown = "relay down since x step 2 (x.yaml:4): restart failed: did not come back; the harness's one attempt to bring it back failed: did not come back"
	r := Judge(b.h)
	f := find(t, r, "m1", bob)
	want(t, f, Pending, false, Pending)
	if !strings.Contains(f.Why, "relay down since x step 2") {
		t.Errorf("why %q does not name the cause", f.Why)
	}
	want(t, find(t, r, "m2", carol), Delivered, false, Delivered)

	// Without RelayDown (the relay back, or this scenario the one whose
	// restart failed) the same history is judged as the relay's.
	b.h.RelayDown = ""
	if f := find(t, Judge(b.h), "m1", bob); !f.Failed {
		t.Errorf("without relay_down: %v failed %v, want a failure", f.Verdicts, f.Failed)
	}
}
