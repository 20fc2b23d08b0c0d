package fakemta

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// apiTestMsg is the body apiSend delivers.
const apiTestMsg = "From: a@client.test\r\nTo: b@remote.test\r\nMessage-ID: <api-1@client.test>\r\nX-Greyharness-Id: gh-api-1\r\nSubject: api\r\n\r\nhello\r\n"

// apiFixture is a fake MTA on 127.0.0.1:0 with its API on an httptest server.
type apiFixture struct {
	srv   *Server
	http  *httptest.Server
	token string
}

func newAPIFixture(t *testing.T, policyYAML, token string, mod func(*Config)) *apiFixture {
	t.Helper()
	s := startServer(t, policyYAML, mod)
	hs := httptest.NewServer(s.APIHandler(token))
	t.Cleanup(hs.Close)
	return &apiFixture{srv: s, http: hs, token: token}
}

// do makes one API request with the fixture's token and returns status, headers and body.
func (f *apiFixture) do(t *testing.T, method, path string, body io.Reader) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.http.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// getJSON GETs path, wants 200, and decodes the body into v.
func (f *apiFixture) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	code, _, body := f.do(t, http.MethodGet, path, nil)
	if code != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

// wantError checks an error response: status, JSON body with "error".
func wantError(t *testing.T, what string, code int, body []byte, wantCode int) apiError {
	t.Helper()
	var e apiError
	if code != wantCode {
		t.Fatalf("%s: status %d, want %d (%s)", what, code, wantCode, body)
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Fatalf("%s: body %q is not a JSON error (%v)", what, body, err)
	}
	return e
}

// apiSend makes one SMTP transaction and ends the session with QUIT; it
// returns the SMTP code of the first failure (0 = delivered).
func apiSend(t *testing.T, addr, from string, rcpts ...string) int {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	code := func(err error) int {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se.Code
		}
		t.Fatalf("smtp: %v", err)
		return -1
	}
	if err := c.Hello("relay.client.test"); err != nil {
		return code(err)
	}
	if err := c.Mail(from, nil); err != nil {
		return code(err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			c.Quit()
			return code(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return code(err)
	}
	if _, err := io.WriteString(w, apiTestMsg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		return code(err)
	}
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	return 0
}

// waitEvent reads ch until an event satisfies pred (or the deadline).
func waitEvent(t *testing.T, ch <-chan Event, what string, pred func(Event) bool) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("journal closed waiting for %s", what)
			}
			if pred(ev) {
				return ev
			}
		case <-ctx.Done():
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func TestAPIHealthzNeedsNoToken(t *testing.T) {
	f := newAPIFixture(t, "", "s3cret", nil)
	resp, err := http.Get(f.http.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("healthz: %d %q", resp.StatusCode, body)
	}
}

func TestAPIMessagesAfterDelivery(t *testing.T) {
	f := newAPIFixture(t, "", "", nil)
	code, hdr, body := f.do(t, http.MethodGet, "/api/v1/messages", nil)
	if code != 200 || strings.TrimSpace(string(body)) != "[]" || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("empty list: %d %q %q", code, hdr.Get("Content-Type"), body)
	}
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test", "c@remote.test"); c != 0 {
		t.Fatalf("delivery: %d", c)
	}
	var raw []map[string]json.RawMessage
	f.getJSON(t, "/api/v1/messages", &raw)
	if len(raw) != 1 {
		t.Fatalf("want 1 message, got %d", len(raw))
	}
	for _, k := range []string{"message_id", "mail_from", "rcpt_to", "received_at", "size", "sha256", "harness_id", "dsn"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("message lacks %q: %v", k, raw[0])
		}
	}
	if string(raw[0]["dsn"]) != "null" {
		t.Errorf("dsn of an ordinary message: %s, want null", raw[0]["dsn"])
	}
	var msgs []Message
	f.getJSON(t, "/api/v1/messages", &msgs)
	m := msgs[0]
	sum := sha256.Sum256([]byte(apiTestMsg))
	if m.MessageID != "api-1@client.test" || m.HarnessID != "gh-api-1" || m.MailFrom != "a@client.test" ||
		!reflect.DeepEqual(m.RcptTo, []string{"b@remote.test", "c@remote.test"}) || m.Size != int64(len(apiTestMsg)) ||
		m.SHA256 != hex.EncodeToString(sum[:]) || m.ReceivedAt.IsZero() || !m.Accepted {
		t.Fatalf("message: %+v", m)
	}
}

func TestAPIJournalSince(t *testing.T) {
	f := newAPIFixture(t, "", "", nil)
	base := f.srv.Journal().Seq()
	apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test")
	var evs []Event
	f.getJSON(t, fmt.Sprintf("/api/v1/journal?since=%d", base), &evs)
	if len(evs) == 0 || evs[0].Seq != base+1 {
		t.Fatalf("since=%d: %+v", base, evs)
	}
	sawTx := false
	for i, ev := range evs {
		if ev.Seq != base+1+uint64(i) {
			t.Fatalf("events not contiguous at %d: %+v", i, evs)
		}
		if ev.Kind == EventTransaction && ev.Transaction.Message != nil {
			sawTx = true
		}
	}
	if !sawTx {
		t.Fatalf("no transaction event with a message in %+v", evs)
	}
	var two []Event
	f.getJSON(t, fmt.Sprintf("/api/v1/journal?since=%d&limit=2", base), &two)
	if len(two) != 2 || two[0].Seq != base+1 || two[1].Seq != base+2 {
		t.Fatalf("limit=2: %+v", two)
	}
	var none []Event
	code, _, body := f.do(t, http.MethodGet, "/api/v1/journal?since=999999", nil)
	if code != 200 || json.Unmarshal(body, &none) != nil || none == nil || len(none) != 0 {
		t.Fatalf("since past the end: %d %s, want []", code, body)
	}
	for _, q := range []string{"since=abc", "since=-1", "limit=x", "limit=-2", "since=1&since=2", "snce=1"} {
		code, _, body := f.do(t, http.MethodGet, "/api/v1/journal?"+q, nil)
		wantError(t, q, code, body, http.StatusBadRequest)
	}
}

// sseEvent is one server-sent event as read off the wire.
type sseEvent struct {
	id   uint64
	kind string
	ev   Event
}

// openSSE opens the event stream; events arrive on the channel until ctx ends.
func (f *apiFixture) openSSE(t *testing.T, ctx context.Context, query, lastID string) <-chan sseEvent {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.http.URL+"/api/v1/events"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if f.token != "" {
		req.Header.Set("Authorization", "Bearer "+f.token)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		resp.Body.Close()
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		var cur sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data == "" {
					continue // a comment-only block
				}
				if err := json.Unmarshal([]byte(data), &cur.ev); err != nil {
					cur.kind = "bad-json: " + err.Error()
				}
				select {
				case ch <- cur:
				case <-ctx.Done():
					return
				}
				cur, data = sseEvent{}, ""
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				cur.id, _ = strconv.ParseUint(line[4:], 10, 64)
			case strings.HasPrefix(line, "event: "):
				cur.kind = line[7:]
			case strings.HasPrefix(line, "data: "):
				data += line[6:]
			}
		}
	}()
	return ch
}

// readSSE reads events until one satisfies stop, checking each is well formed.
func readSSE(t *testing.T, ctx context.Context, ch <-chan sseEvent, stop func(sseEvent) bool) []sseEvent {
	t.Helper()
	var out []sseEvent
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %d events", len(out))
			}
			if e.id == 0 || e.id != e.ev.Seq || e.kind != string(e.ev.Kind) {
				t.Fatalf("malformed event: id %d kind %q data %+v", e.id, e.kind, e.ev)
			}
			out = append(out, e)
			if stop(e) {
				return out
			}
		case <-ctx.Done():
			t.Fatalf("stream: deadline after %d events", len(out))
		}
	}
}

func contiguous(t *testing.T, what string, evs []sseEvent, first uint64) {
	t.Helper()
	for i, e := range evs {
		if e.id != first+uint64(i) {
			t.Fatalf("%s: event %d has id %d, want %d (gap or duplicate)", what, i, e.id, first+uint64(i))
		}
	}
}

func isCloseOf(conn uint64) func(sseEvent) bool {
	return func(e sseEvent) bool { return e.ev.Kind == EventClose && e.ev.Conn == conn }
}

func TestAPIEventsLiveThenResumeWithoutGaps(t *testing.T) {
	f := newAPIFixture(t, "", "", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Live: the stream is open (subscribed) once the response headers came.
	liveCtx, stopLive := context.WithCancel(ctx)
	live := f.openSSE(t, liveCtx, "", "")
	base := f.srv.Journal().Seq()
	apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test")
	evs := readSSE(t, ctx, live, isCloseOf(1))
	contiguous(t, "live", evs, base+1)
	var kinds []string
	for _, e := range evs {
		if len(kinds) == 0 || kinds[len(kinds)-1] != e.kind {
			kinds = append(kinds, e.kind)
		}
	}
	if kinds[0] != "connect" || kinds[len(kinds)-1] != "close" || !strings.Contains(strings.Join(kinds, ","), "transaction") {
		t.Fatalf("live event kinds in order: %v", kinds)
	}
	// The client goes away after the third event it saw.
	seen := evs[2].id
	stopLive()

	// Traffic while nobody listens, then resume with Last-Event-ID.
	apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test")
	head := f.srv.Journal().Seq()
	resumed := f.openSSE(t, ctx, "", strconv.FormatUint(seen, 10))
	replayed := readSSE(t, ctx, resumed, func(e sseEvent) bool { return e.id == head })
	contiguous(t, "replay", replayed, seen+1)
	// ... and it goes on live from there.
	apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test")
	more := readSSE(t, ctx, resumed, isCloseOf(3))
	contiguous(t, "replay then live", append(replayed, more...), seen+1)

	// ?since=0 replays from the very first event (the start record).
	fromZero := f.openSSE(t, ctx, "?since=0", "")
	all := readSSE(t, ctx, fromZero, isCloseOf(3))
	contiguous(t, "since=0", all, 1)
	if all[0].ev.Kind != EventControl || all[0].ev.Note != "start" {
		t.Fatalf("first event: %+v", all[0].ev)
	}

	code, _, body := f.do(t, http.MethodGet, "/api/v1/events?since=x", nil)
	wantError(t, "events since=x", code, body, http.StatusBadRequest)
}

func TestAPIGreylistListingAndReset(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	f := newAPIFixture(t, "greylist:\n  delay: 5m\n", "", func(c *Config) { c.Now = clock.Now })
	var es []GreylistEntry
	f.getJSON(t, "/api/v1/greylist", &es)
	if es == nil || len(es) != 0 {
		t.Fatalf("empty greylist: %+v", es)
	}
	if c := apiSend(t, f.srv.Addr(), "A@Client.test", "B@Remote.test"); c != 451 {
		t.Fatalf("first attempt: %d, want 451", c)
	}
	f.getJSON(t, "/api/v1/greylist", &es)
	if len(es) != 1 || es[0].Subnet != "127.0.0.0/24" || es[0].Sender != "a@client.test" || es[0].Recipient != "b@remote.test" ||
		es[0].Attempts != 1 || es[0].Passes != 0 || !es[0].FirstSeen.Equal(clock.Now()) {
		t.Fatalf("greylist: %+v", es)
	}

	// The journal is history: it cannot be reset.
	code, _, body := f.do(t, http.MethodPost, "/api/v1/reset?journal=true", nil)
	wantError(t, "reset journal", code, body, http.StatusBadRequest)
	f.getJSON(t, "/api/v1/greylist", &es)
	if len(es) != 1 {
		t.Fatalf("a refused reset wiped the greylist: %+v", es)
	}

	// Past the delay the retry would pass; after a reset it is a new triplet again.
	clock.Add(6 * time.Minute)
	code, _, body = f.do(t, http.MethodPost, "/api/v1/reset", nil)
	var rr resetResult
	if code != 200 || json.Unmarshal(body, &rr) != nil || rr.Wiped != "greylist" || rr.Seq != f.srv.Journal().Seq() {
		t.Fatalf("reset: %d %s", code, body)
	}
	f.getJSON(t, "/api/v1/greylist", &es)
	if len(es) != 0 {
		t.Fatalf("after reset: %+v", es)
	}
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "b@remote.test"); c != 451 {
		t.Fatalf("retry after reset: %d, want 451 (state wiped)", c)
	}
	evs, _ := f.srv.Journal().Since(0, 0)
	wipes := 0
	for _, ev := range evs {
		if ev.Kind == EventControl && ev.Note == "wipe-state" {
			wipes++
		}
	}
	if wipes != 1 {
		t.Fatalf("journal has %d wipe-state records, want 1", wipes)
	}
}

func TestAPIPolicyPutChangesTheNextTransaction(t *testing.T) {
	f := newAPIFixture(t, "", "", nil)
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "x@blocked.test"); c != 0 {
		t.Fatalf("before: %d", c)
	}
	var empty PolicyDoc
	f.getJSON(t, "/api/v1/policy", &empty)
	if empty.Greylist != nil || empty.Rules == nil || len(empty.Rules) != 0 {
		t.Fatalf("empty policy: %+v", empty)
	}

	yamlPolicy := "greylist:\n  delay: 90s\n  max_age: 35d\nrules:\n  - match: {stage: rcpt, rcpt: \"*@blocked.test\", attempt: 1-}\n    reply: \"550 5.1.1 No such user\"\n  - match: {stage: data, connection: \"5\"}\n    delay: 2s\n"
	code, _, body := f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader(yamlPolicy))
	if code != 200 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	var put PolicyDoc
	if err := json.Unmarshal(body, &put); err != nil {
		t.Fatal(err)
	}
	if put.Greylist == nil || put.Greylist.Delay != "1m30s" || put.Greylist.MaxAge != "840h0m0s" || len(put.Rules) != 2 ||
		put.Rules[0].Reply != "550 5.1.1 No such user" || put.Rules[0].Match.Attempt != "1-" ||
		put.Rules[1].Delay == nil || *put.Rules[1].Delay != "2s" || put.Rules[1].Match.Connection != "5" {
		t.Fatalf("PUT answer: %s", body)
	}
	if got := f.srv.Policy(); got.Greylist == nil || got.Greylist.Delay != 90*time.Second {
		t.Fatalf("policy in force: %+v", got)
	}
	// The next transaction follows the new rule (the rule comes before the greylist).
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "x@blocked.test"); c != 550 {
		t.Fatalf("after PUT: %d, want 550", c)
	}
	var got PolicyDoc
	f.getJSON(t, "/api/v1/policy", &got)
	if !reflect.DeepEqual(got, put) {
		t.Fatalf("GET %+v != PUT %+v", got, put)
	}
	// GET's document is a policy file: it can be PUT back unchanged.
	code, _, again := f.do(t, http.MethodPut, "/api/v1/policy", bytes.NewReader(body))
	if code != 200 || !bytes.Equal(again, body) {
		t.Fatalf("round trip: %d\n%s\n%s", code, again, body)
	}
}

func TestAPIPolicyPutInvalid(t *testing.T) {
	f := newAPIFixture(t, "rules:\n  - match: {rcpt: \"*@blocked.test\"}\n    reply: 550 5.1.1 nope\n", "", nil)
	bad := "rules:\n  - match: {stage: rcpt}\n    reply: \"999 bad\"\n  - match: {stage: nowhere}\n    drop: true\n"
	code, _, body := f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader(bad))
	e := wantError(t, "bad policy", code, body, http.StatusBadRequest)
	if len(e.Errors) != 2 || !strings.HasPrefix(e.Errors[0], "request:3:12: reply: ") || !strings.HasPrefix(e.Errors[1], "request:4:20: unknown stage \"nowhere\"") {
		t.Fatalf("errors: %q", e.Errors)
	}
	if !strings.Contains(e.Error, "request:3:12") {
		t.Fatalf("error: %q", e.Error)
	}
	code, _, body = f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader("rules: [\n"))
	if e := wantError(t, "syntax", code, body, http.StatusBadRequest); len(e.Errors) != 1 || !strings.HasPrefix(e.Errors[0], "request:") {
		t.Fatalf("syntax errors: %q", e.Errors)
	}
	code, _, body = f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader("  \n"))
	wantError(t, "empty body", code, body, http.StatusBadRequest)
	// Nothing changed.
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "x@blocked.test"); c != 550 {
		t.Fatalf("after bad PUTs: %d, want 550 from the old policy", c)
	}
}

func TestAPIMetricsCountTraffic(t *testing.T) {
	f := newAPIFixture(t, "greylist:\n  delay: 5m\nrules:\n  - match: {rcpt: \"*@ok.test\"}\n    accept: true\n", "", nil)
	sub, cancel := f.srv.Journal().Subscribe()
	defer cancel()
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "x@ok.test"); c != 0 {
		t.Fatalf("accepted: %d", c)
	}
	if c := apiSend(t, f.srv.Addr(), "a@client.test", "y@grey.test"); c != 451 {
		t.Fatalf("greylisted: %d", c)
	}
	// Counters settle when both sessions are closed.
	waitEvent(t, sub, "close of connection 2", func(ev Event) bool { return ev.Kind == EventClose && ev.Conn == 2 })
	code, _, body := f.do(t, http.MethodGet, "/metrics", nil)
	if code != 200 {
		t.Fatalf("metrics: %d", code)
	}
	text := string(body)
	for _, want := range []string{
		"greyharness_fakemta_connections_total 2",
		"greyharness_fakemta_messages_total 1",
		`greyharness_fakemta_commands_total{verb="RCPT"} 2`,
		`greyharness_fakemta_commands_total{verb="DATA"} 1`,
		`greyharness_fakemta_commands_total{verb="QUIT"} 2`,
		`greyharness_fakemta_replies_total{code="451"} 1`,
		`greyharness_fakemta_replies_total{code="354"} 1`,
		`greyharness_fakemta_greylist_total{outcome="deferred"} 1`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(text, `outcome="passed"`) {
		t.Errorf("a greylist pass was counted:\n%s", text)
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", text)
	}
}

func TestAPITokenRequiredAndAccepted(t *testing.T) {
	f := newAPIFixture(t, "", "s3cret", nil)
	for _, path := range []string{"/api/v1/messages", "/api/v1/journal", "/api/v1/greylist", "/api/v1/policy", "/metrics", "/api/v1/events", "/nowhere"} {
		for _, auth := range []string{"", "Bearer wrong", "Bearer s3cret2", "Basic czNjcmV0", "s3cret", "Bearer"} {
			req, _ := http.NewRequest(http.MethodGet, f.http.URL+path, nil)
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := f.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantError(t, path+" with "+strconv.Quote(auth), resp.StatusCode, body, http.StatusUnauthorized)
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Fatalf("%s: WWW-Authenticate %q", path, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	for _, auth := range []string{"Bearer s3cret", "bearer s3cret"} {
		for _, path := range []string{"/api/v1/messages", "/metrics"} {
			req, _ := http.NewRequest(http.MethodGet, f.http.URL+path, nil)
			req.Header.Set("Authorization", auth)
			resp, err := f.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s with %q: %d", path, auth, resp.StatusCode)
			}
		}
	}
	code, _, _ := f.do(t, http.MethodPost, "/api/v1/reset", nil)
	if code != 200 {
		t.Fatalf("reset with token: %d", code)
	}
}

func TestAPIErrorStatuses(t *testing.T) {
	f := newAPIFixture(t, "", "", nil)
	code, _, body := f.do(t, http.MethodGet, "/api/v1/nothing", nil)
	wantError(t, "unknown path", code, body, http.StatusNotFound)
	code, _, body = f.do(t, http.MethodGet, "/api/v1/messages/", nil)
	wantError(t, "trailing slash", code, body, http.StatusNotFound)
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodPost, "/api/v1/messages", "GET, HEAD"},
		{http.MethodDelete, "/api/v1/policy", "GET, HEAD, PUT"},
		{http.MethodGet, "/api/v1/reset", "POST"},
		{http.MethodPut, "/metrics", "GET, HEAD"},
		{http.MethodPost, "/healthz", "GET, HEAD"},
	} {
		code, hdr, body := f.do(t, c.method, c.path, nil)
		wantError(t, c.method+" "+c.path, code, body, http.StatusMethodNotAllowed)
		if hdr.Get("Allow") != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, hdr.Get("Allow"), c.allow)
		}
	}
	big := "rules: []\n" + strings.Repeat("#", MaxAPIBodyBytes)
	code, _, body = f.do(t, http.MethodPut, "/api/v1/policy", strings.NewReader(big))
	wantError(t, "big body", code, body, http.StatusRequestEntityTooLarge)
	code, _, body = f.do(t, http.MethodGet, "/api/v1/messages?x=1", nil)
	wantError(t, "unknown parameter", code, body, http.StatusBadRequest)
	code, _, body = f.do(t, http.MethodGet, "/api/v1/journal?since=%zz", nil)
	wantError(t, "bad escape", code, body, http.StatusBadRequest)
}

// FuzzAPIRequest checks that no request makes the API fail with a 5xx or
// answer an error without a JSON body.
func FuzzAPIRequest(f *testing.F) {
	s, err := New(Config{Logf: f.Logf})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	h := s.APIHandler("tok")
	for _, seed := range []struct{ method, target, auth, body string }{
		{"GET", "/api/v1/messages", "Bearer tok", ""},
		{"GET", "/api/v1/journal?since=18446744073709551616", "Bearer tok", ""},
		{"GET", "/api/v1/journal?limit=99999999999999999999", "Bearer tok", ""},
		{"GET", "/api/v1/events?since=0", "Bearer tok", ""},
		{"GET", "/api/v1/events", "Bearer tok", ""},
		{"PUT", "/api/v1/policy", "Bearer tok", "rules:\n  - {match: {stage: connect}, reply: 250 ok}\n"},
		{"PUT", "/api/v1/policy", "Bearer tok", "greylist: *a\n"},
		{"PUT", "/api/v1/policy", "Bearer tok", "{\"rules\": [{\"match\": {\"attempt\": \"0\"}, \"drop\": true}]}"},
		{"PUT", "/api/v1/policy", "Bearer tok", "- 1\n- 2\n"},
		{"POST", "/api/v1/reset?journal=maybe", "Bearer tok", ""},
		{"GET", "/metrics", "bearer tok", ""},
		{"PATCH", "/", "", "x"},
		{"GET", "/healthz?x=1", "", ""},
	} {
		f.Add(seed.method, seed.target, seed.auth, seed.body)
	}
	f.Fuzz(func(t *testing.T, method, target, auth, body string) {
		req, err := http.NewRequest(method, "http://fakemta.test"+target, strings.NewReader(body))
		if err != nil || req.URL.Path == "" {
			return
		}
		// A finished context: the event stream must still return.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req = req.WithContext(ctx)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %q: %d %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var e apiError
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %q: %d with a non-JSON error %q", method, target, rec.Code, rec.Body)
			}
		}
	})
}
