package fakemta

import "testing"

// slow skips, in the -short inner loop, a test that waits out real
// timeouts or drives a real redis-server; make test (go test without
// -short) runs it.
func slow(t testing.TB, why string) {
	t.Helper()
	if testing.Short() {
		t.Skipf("%s; make test (go test without -short) runs it", why)
	}
}
