package harness_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
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
	endToEnd(t)
	sampleOnly(t)
	bin, env := testBin()
	prof, cleanup, err := harness.LoadRelay("sample", bin, env)
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()

	// The "deployed" fake MTA: `greyharness fakemta` as a process of its
	// own, with its own state and an API behind a token; the harness reaches
	// it only over HTTP.
	const token = "s3cret-token"
	apiURL := startDeployedFakeMTA(t, prof.NextHop, token)
	prof.FakeMTA = &profile.FakeMTARef{API: apiURL, Token: token}

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
	// The scenario's policy is in force on the deployed fake MTA; without
	// the token its API refuses.
	// The scenario's policy went to its tenant (registered, then deleted
	// at its end), and every transaction the history holds is the tenant's.
	tenant := ""
	for _, ev := range h.Journal {
		if ev.Kind == fakemta.EventControl && ev.Note == "tenant" {
			tenant = ev.Tenant
		}
	}
	if tenant == "" {
		t.Fatalf("no tenant registration in the journal streamed back (%d events)", len(h.Journal))
	}
	for _, ev := range h.Journal {
		if ev.Kind == fakemta.EventTransaction && ev.Tenant != tenant {
			t.Errorf("transaction of tenant %q in the history of tenant %s", ev.Tenant, tenant)
		}
	}
	var ts []fakemta.TenantInfo
	if code := getJSON(t, apiURL+"/api/v1/tenants", token, &ts); code != http.StatusOK || len(ts) != 0 {
		t.Fatalf("GET /api/v1/tenants after the run: HTTP %d %+v, want no tenant left", code, ts)
	}
	if code := getJSON(t, apiURL+"/api/v1/policy", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("GET /api/v1/policy without the token: HTTP %d, want 401", code)
	}
}

// startDeployedFakeMTA runs `greyharness fakemta` (this test binary
// re-executed) on the next-hop addresses with an API on a free loopback
// port, and returns the API's URL once the process says it listens.
func startDeployedFakeMTA(t *testing.T, nextHop []string, token string) string {
	t.Helper()
	bin, env := testBin()
	args := []string{"fakemta", "--state", t.TempDir(), "--api", "127.0.0.1:0", "--api-token", token}
	for _, a := range nextHop {
		args = append(args, "--listen", a)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("deployed fake MTA: %v\n%s", err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("deployed fake MTA did not stop on SIGTERM")
		}
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "fakemta: api listening on "); ok {
				addr <- a
			}
		}
		exited <- cmd.Wait()
	}()
	select {
	case a := <-addr:
		return "http://" + a
	case err := <-exited:
		exited <- err
		t.Fatalf("deployed fake MTA exited before its API listened: %v\n%s", err, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("deployed fake MTA: no API address after 30s\n%s", stderr.String())
	}
	return ""
}

// getJSON GETs url with the bearer token (none when empty), decodes a 200
// body into v (when not nil) and returns the status code.
func getJSON(t *testing.T, url, token string, v any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
	}
	return resp.StatusCode
}
