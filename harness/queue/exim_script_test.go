package queue

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestEximScriptListing runs ci/exim/exim.sh queue against a stand-in
// exim4 (its -bp) and a spool/msglog folder as Exim 4.96 writes it, and
// parses what the script prints: the listing the harness polls.
func TestEximScriptListing(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	script, err := filepath.Abs("../../ci/exim/exim.sh")
	if err != nil {
		t.Fatal(err)
	}
	cache, work := t.TempDir(), t.TempDir()
	bp := " 0m   489 1xYmNl-0003Uq-1p <refused@client.greyharness.test>\n          frank@rcpt.greyharness.test\n\n" +
		" 0m   475 1xYmNW-0003Ms-34 <soon@client.greyharness.test>\n          erin@rcpt.greyharness.test\n\n"
	write := func(path, body string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(cache, "usr/sbin/exim4"), "#!/bin/sh\ncase \"$*\" in *-bp*) printf '%s' '"+bp+"';; *) exit 9;; esac\n", 0o755)
	write(filepath.Join(work, "spool/msglog/1xYmNl-0003Uq-1p"),
		"2026-12-02 15:36:33 Received from refused@client.greyharness.test H=(client.greyharness.test) [127.0.0.1] P=esmtp S=489 id=refused2@client.greyharness.test\n"+
			"2026-12-02 15:36:33 H=127.0.0.1 [127.0.0.1] Connection refused\n"+
			"2026-12-02 15:36:33 frank@rcpt.greyharness.test R=to_next_hop T=remote_smtp defer (111): Connection refused DT=0s\n", 0o644)
	write(filepath.Join(work, "spool/msglog/1xYmNW-0003Ms-34"),
		"2026-12-02 15:36:18 Received from soon@client.greyharness.test H=(client.greyharness.test) [127.0.0.1] P=esmtp S=475 id=soon1@client.greyharness.test\n", 0o644)
	out, err := eximQueue(script, cache, work).CombinedOutput()
	if err != nil {
		t.Fatalf("exim.sh queue: %v\n%s", err, out)
	}
	es, err := ParseExim(out, time.Unix(1796225837, 0))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if len(es) != 2 {
		t.Fatalf("entries = %+v\n%s", es, out)
	}
	if e := es[0]; !e.Deferred || e.Reason != "Connection refused" {
		t.Errorf("refused = %+v\n%s", e, out)
	}
	if e := es[1]; e.Deferred || e.Reason != "" {
		t.Errorf("never tried = %+v\n%s", e, out)
	}

	// No deferral anywhere (grep finds nothing): still a listing.
	os.Remove(filepath.Join(work, "spool/msglog/1xYmNl-0003Uq-1p"))
	if out, err := eximQueue(script, cache, work).CombinedOutput(); err != nil {
		t.Fatalf("exim.sh queue without deferrals: %v\n%s", err, out)
	}
}

// eximQueue is `exim.sh queue` with Exim in cache and the instance in work.
func eximQueue(script, cache, work string) *exec.Cmd {
	c := exec.Command("bash", script, "queue")
	c.Env = append(os.Environ(), "GREYHARNESS_CACHE="+cache, "GREYHARNESS_WORK="+work)
	return c
}
