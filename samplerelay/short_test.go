package samplerelay

import "testing"

// slow skips, in the -short inner loop, a test that waits out the relay's
// real retry, expiry or restart timers (seconds); make test (go test
// without -short) and make e2e-sample run it.
func slow(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("waits for the sample relay's real retry and expiry timers; make test or make e2e-sample runs it")
	}
}
