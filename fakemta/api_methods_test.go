package fakemta

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

// RFC 9110 9.3.2: HEAD answers as GET does, without the body.
func TestAPIHeadAnswersLikeGet(t *testing.T) {
	f := newAPIFixture(t, "greylist: {delay: 1m}\n", "tok", nil)
	apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test")
	for _, path := range []string{"/healthz", "/api/v1/messages", "/api/v1/journal", "/api/v1/greylist", "/api/v1/policy", "/metrics", "/api/v1/events"} {
		getCode, getHdr := 0, http.Header(nil)
		if path != "/api/v1/events" { // a stream: its GET never ends
			getCode, getHdr, _ = f.do(t, http.MethodGet, path, nil)
		} else {
			getCode, getHdr = http.StatusOK, http.Header{"Content-Type": {"text/event-stream"}}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, f.http.URL+path, nil)
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := f.http.Client().Do(req)
		if err != nil {
			cancel()
			t.Fatalf("HEAD %s: %v", path, err)
		}
		resp.Body.Close()
		cancel()
		if resp.StatusCode != getCode || resp.Header.Get("Content-Type") != getHdr.Get("Content-Type") {
			t.Errorf("HEAD %s: %d %q, GET: %d %q", path, resp.StatusCode, resp.Header.Get("Content-Type"), getCode, getHdr.Get("Content-Type"))
		}
	}
	// Other wrong methods: 405 with Allow (HEAD named wherever GET is).
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/api/v1/messages", "GET, HEAD"},
		{http.MethodDelete, "/api/v1/policy", "GET, HEAD, PUT"},
		{http.MethodHead, "/api/v1/reset", "POST"},
		{http.MethodPut, "/healthz", "GET, HEAD"},
	} {
		code, hdr, _ := f.do(t, c.method, c.path, nil)
		if code != http.StatusMethodNotAllowed || hdr.Get("Allow") != c.allow {
			t.Errorf("%s %s: %d Allow %q, want 405 Allow %q", c.method, c.path, code, hdr.Get("Allow"), c.allow)
		}
	}
}

// A blank token (or one with spaces around it) could never be matched by
// a request (the header's value is trimmed): refused at start.
func TestCLIBlankAPITokenExit2(t *testing.T) {
	for _, tok := range []string{" ", "\t", "  tok", "tok\n"} {
		code, stdout, stderr := runCLI(t, "--api-token", tok, "--api", "127.0.0.1:0", "--listen", "127.0.0.1:0")
		if code != ExitConfig || stdout != "" || !strings.Contains(stderr, "--api-token") {
			t.Errorf("--api-token %q: exit %d, stdout %q, stderr %q; want exit 2", tok, code, stdout, stderr)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var out, errOut syncBuffer
		env := func(k string) string {
			if k == APITokenEnv {
				return tok
			}
			return ""
		}
		if code := run(ctx, []string{"--api", "127.0.0.1:0", "--listen", "127.0.0.1:0"}, env, &out, &errOut); code != ExitConfig || !strings.Contains(errOut.String(), APITokenEnv) {
			t.Errorf("$%s=%q: exit %d, stderr %q; want exit 2", APITokenEnv, tok, code, errOut.String())
		}
	}
}
