package fakemta

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MaxAPIBodyBytes bounds a request body (a policy document) sent to the
// control API; larger bodies get 413.
const MaxAPIBodyBytes = 1 << 20

// sseKeepalive is how often an idle event stream gets a comment line, so
// proxies keep it open and a gone client is noticed.
const sseKeepalive = 15 * time.Second

// ssePage is how many journal events one replay read fetches.
const ssePage = 4096

// api is the control API of one Server.
type api struct {
	s        *Server
	token    [sha256.Size]byte
	hasToken bool
	mux      *http.ServeMux
	quit     chan struct{}
	quitOnce sync.Once
}

// APIHandler returns the HTTP/JSON control API (see docs/fakemta.md):
//
//	GET  /healthz               "ok", 503 while messages cannot be recorded (never needs the token)
//	GET  /api/v1/messages       received messages
//	GET  /api/v1/journal        journal events (?since=SEQ&limit=N)
//	GET  /api/v1/events         live journal events as server-sent events
//	GET  /api/v1/greylist       greylist triplets
//	GET  /api/v1/policy         the policy in force
//	PUT  /api/v1/policy         swap the policy (YAML or JSON body)
//	POST /api/v1/reset          wipe greylist state (the server's and every tenant's)
//	GET  /api/v1/tenants        registered tenants
//	GET  /api/v1/tenants/{name}/policy    a tenant's policy
//	PUT  /api/v1/tenants/{name}/policy    register a tenant, or swap its policy (?connections=true: it owns connect, helo, starttls)
//	DELETE /api/v1/tenants/{name}         forget a tenant and its state
//	POST /api/v1/tenants/{name}/wipe      wipe a tenant's greylist state
//	GET  /api/v1/tenants/{name}/greylist  a tenant's greylist records
//	GET  /metrics               Prometheus metrics
//
// Wrong methods get 405 with an Allow header (HEAD wherever GET is).
// With a non-empty token every endpoint but /healthz needs the header
// "Authorization: Bearer TOKEN". Errors are JSON {"error": "..."}.
func (s *Server) APIHandler(token string) http.Handler {
	return s.newAPI(token)
}

func (s *Server) newAPI(token string) *api {
	a := &api{s: s, quit: make(chan struct{})}
	s.metrics.watchHealth(s.Health)
	if token != "" {
		a.token, a.hasToken = sha256.Sum256([]byte(token)), true
	}
	m := http.NewServeMux()
	// "GET" patterns answer HEAD too (net/http drops the body).
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /api/v1/messages", a.messages)
	m.HandleFunc("GET /api/v1/journal", a.journal)
	m.HandleFunc("GET /api/v1/events", a.events)
	m.HandleFunc("GET /api/v1/greylist", a.greylist)
	m.HandleFunc("GET /api/v1/policy", a.getPolicy)
	m.HandleFunc("PUT /api/v1/policy", a.putPolicy)
	m.HandleFunc("POST /api/v1/reset", a.reset)
	m.HandleFunc("GET /api/v1/tenants", a.listTenants)
	m.HandleFunc("GET /api/v1/tenants/{name}/policy", a.getTenantPolicy)
	m.HandleFunc("PUT /api/v1/tenants/{name}/policy", a.putTenantPolicy)
	m.HandleFunc("DELETE /api/v1/tenants/{name}", a.deleteTenant)
	m.HandleFunc("POST /api/v1/tenants/{name}/wipe", a.wipeTenant)
	m.HandleFunc("GET /api/v1/tenants/{name}/greylist", a.tenantGreylist)
	m.HandleFunc("GET /metrics", a.metrics)
	a.mux = m
	return a
}

// stop ends every open event stream (http.Server.Shutdown does not wait
// for them: they never go idle).
func (a *api) stop() { a.quitOnce.Do(func() { close(a.quit) }) }

// ServeAPI listens on addr and serves the control API in the background.
// Shut it down with the returned server's Shutdown (open event streams end
// at once) or Close.
func (s *Server) ServeAPI(addr, token string) (*http.Server, net.Listener, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("fakemta: api listen %s: %w", addr, err)
	}
	hs := s.serveAPIOn(l, token)
	return hs, l, nil
}

func (s *Server) serveAPIOn(l net.Listener, token string) *http.Server {
	a := s.newAPI(token)
	hs := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: the event stream is long-lived.
		ErrorLog: newStdLogger(s.cfg.Logf, "api: "),
	}
	hs.RegisterOnShutdown(a.stop)
	go func() {
		if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logf("api: %v", err)
		}
	}()
	return hs
}

// ServeHTTP authenticates, routes, and turns panics into 500s.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.s.cfg.Logf("api: panic serving %s %s: %v", r.Method, r.URL.Path, v)
			writeError(w, http.StatusInternalServerError, "internal error")
		}
	}()
	if r.URL.Path != "/healthz" && !a.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="greyharness fakemta"`)
		writeError(w, http.StatusUnauthorized, "missing or bad bearer token (Authorization: Bearer TOKEN)")
		return
	}
	h, pattern := a.mux.Handler(r)
	if pattern == "" {
		// No route: the mux's own 404 or 405 (with Allow), said in JSON.
		rec := &statusRecorder{h: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.code {
		case http.StatusMethodNotAllowed:
			allow := rec.h.Get("Allow")
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
		default:
			writeError(w, http.StatusNotFound, "no such endpoint: "+r.URL.Path)
		}
		return
	}
	if r.Method == http.MethodHead {
		// RFC 9110 9.3.2: HEAD is GET without the body. A stream ends
		// once its headers are out.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		a.mux.ServeHTTP(&headWriter{w: w, done: cancel}, r.WithContext(ctx))
		return
	}
	a.mux.ServeHTTP(w, r)
}

// statusRecorder keeps what the mux's not-found and method-not-allowed
// handlers write, so the API answers them in its own JSON.
type statusRecorder struct {
	h    http.Header
	code int
}

func (s *statusRecorder) Header() http.Header { return s.h }
func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
}
func (s *statusRecorder) Write(b []byte) (int, error) {
	s.WriteHeader(http.StatusOK)
	return len(b), nil
}

// headWriter answers a HEAD request with a GET handler: it cancels the
// request's context once the handler has written its headers and cannot
// flush (so an event stream returns at once).
type headWriter struct {
	w    http.ResponseWriter
	done func()
}

func (h *headWriter) Header() http.Header { return h.w.Header() }

func (h *headWriter) WriteHeader(code int) {
	h.w.WriteHeader(code)
	h.done()
}

func (h *headWriter) Write(b []byte) (int, error) {
	h.done()
	return h.w.Write(b) // net/http discards it for HEAD
}

// authorized checks the bearer token in constant time (both sides are
// hashed first, so the comparison does not leak the token's length).
func (a *api) authorized(r *http.Request) bool {
	if !a.hasToken {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(cred)))
	return subtle.ConstantTimeCompare(got[:], a.token[:]) == 1
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// apiError is the body of every error response.
type apiError struct {
	Error  string   `json:"error"`
	Errors []string `json:"errors,omitempty"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, apiError{Error: msg})
}

// query checks a request's query string: only the named parameters, each
// at most once. It returns the values given.
func query(r *http.Request, allowed ...string) (map[string]string, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("bad query string: %v", err)
	}
	out := map[string]string{}
	for k, vs := range q {
		if !contains(allowed, k) {
			if len(allowed) == 0 {
				return nil, fmt.Errorf("unknown query parameter %q (this endpoint takes none)", k)
			}
			return nil, fmt.Errorf("unknown query parameter %q (allowed: %s)", k, strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return nil, fmt.Errorf("query parameter %q given %d times", k, len(vs))
		}
		out[k] = vs[0]
	}
	return out, nil
}

// seqParam parses a journal sequence number.
func seqParam(name, v string) (uint64, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s must be a journal sequence number (a whole number ≥ 0), got %q", name, v)
	}
	return n, nil
}

// healthz says "ok", or 503 with the reason while the fake MTA cannot
// record durably (it then refuses messages with 451/452 at the final dot).
func (a *api) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if err := a.s.Health(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "unhealthy: cannot record messages (they get 451/452): "+err.Error()+"\n")
		return
	}
	io.WriteString(w, "ok\n")
}

func (a *api) messages(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Streamed: GET /messages after 100,000 messages must not hold them all.
	a.streamArray(w, "/api/v1/messages", func(emit func(any) error) error {
		return a.s.Journal().EachMessage(func(m *Message) error {
			if m.RcptTo == nil {
				m.RcptTo = []string{}
			}
			return emit(m)
		})
	})
}

func (a *api) journal(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "since", "limit")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var since uint64
	limit := 0
	if v, ok := q["since"]; ok {
		if since, err = seqParam("since", v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if v, ok := q["limit"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be a whole number ≥ 0 (0 = no limit), got %q", v))
			return
		}
		limit = n
	}
	// Streamed, as /api/v1/messages: a journal of any length is never
	// held in memory, whatever limit says.
	a.streamArray(w, "/api/v1/journal", func(emit func(any) error) error {
		return a.s.Journal().EachSince(since, limit, func(ev *Event) error { return emit(ev) })
	})
}

// streamArray writes the values each emits as one JSON array, as they
// come, so no endpoint holds a whole journal in memory.
func (a *api) streamArray(w http.ResponseWriter, path string, each func(emit func(any) error) error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	bw := bufio.NewWriterSize(w, 64<<10)
	n := 0
	err := each(func(v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		sep := byte(',')
		if n == 0 {
			sep = '['
		}
		n++
		bw.WriteByte(sep)
		_, err = bw.Write(b)
		return err
	})
	switch {
	case err != nil && n == 0:
		writeError(w, http.StatusInternalServerError, "reading the journal: "+err.Error())
		return
	case err != nil:
		// The 200 may be out already: cut the response so the client
		// sees it broken rather than a short array that looks whole.
		a.s.cfg.Logf("api: GET %s: %v", path, err)
		panic(http.ErrAbortHandler)
	case n == 0:
		bw.WriteByte('[')
	}
	bw.WriteString("]\n")
	bw.Flush()
}

// events streams journal events as server-sent events. With ?since=SEQ or
// a Last-Event-ID header (which wins: it is what a reconnecting client
// sends) it first replays the events after SEQ, then goes on live, with
// no gap and no duplicate: it subscribes before reading the history and
// skips live events it already replayed.
func (a *api) events(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "since")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var since uint64
	replay := false
	if v, ok := q["since"]; ok {
		if since, err = seqParam("since", v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		replay = true
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		if since, err = seqParam("Last-Event-ID", v); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		replay = true
	}
	j := a.s.Journal()
	// Join the hub before reading the history: no gap between the two.
	hub := j.sse()
	cl := hub.join()
	if cl != nil {
		defer hub.leave(cl)
	}
	if replay && since > j.Seq() {
		// Sequence numbers only grow, so the client saw another journal
		// (an in-memory one that restarted): everything here is new to it.
		since = 0
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := io.WriteString(w, ": greyharness fakemta journal\n\n"); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}
	last := since
	send := func(f sseFrame) bool {
		if _, err := w.Write(f.b); err != nil {
			return false
		}
		last = f.seq
		return rc.Flush() == nil
	}
	if replay {
		for {
			evs, err := j.Since(last, ssePage)
			if err != nil {
				fmt.Fprintf(w, "event: error\ndata: %s\n\n", mustJSON(apiError{Error: "reading the journal: " + err.Error()}))
				rc.Flush()
				return
			}
			for i := range evs {
				if r.Context().Err() != nil || !send(sseFrame{seq: evs[i].Seq, b: encodeSSE(&evs[i])}) {
					return
				}
			}
			if len(evs) < ssePage {
				break
			}
		}
	}
	if cl == nil {
		return // the journal closed: the fake MTA stopped
	}
	tick := time.NewTicker(sseKeepalive)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.quit:
			return
		case <-cl.dropped:
			// Fell behind: the connection is closed; the client resumes
			// with Last-Event-ID and gets the rest from the journal.
			a.s.cfg.Logf("api: event stream of %s fell behind by %d events: closed (it resumes with Last-Event-ID)", r.RemoteAddr, sseClientQueue)
			panic(http.ErrAbortHandler)
		case f, ok := <-cl.ch:
			if !ok {
				return // the journal closed: the fake MTA stopped
			}
			// Write what is queued, then flush once: a busy journal costs
			// one flush per batch, not per event and client.
			for n := 0; ; n++ {
				if f.seq > last { // else already replayed
					if _, err := w.Write(f.b); err != nil {
						return
					}
					last = f.seq
				}
				if n == 255 || len(cl.ch) == 0 {
					break
				}
				if f, ok = <-cl.ch; !ok {
					break
				}
			}
			if rc.Flush() != nil || !ok {
				return
			}
		case <-tick.C:
			if _, err := io.WriteString(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		}
	}
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func (a *api) greylist(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	es, err := a.s.GreylistEntries()
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "greylist store: "+err.Error())
		return
	}
	if es == nil {
		es = []GreylistEntry{}
	}
	writeJSON(w, http.StatusOK, es)
}

func (a *api) getPolicy(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, PolicyDocument(a.s.Policy()))
}

func (a *api) putPolicy(w http.ResponseWriter, r *http.Request) {
	if _, err := query(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pol, ok := a.readPolicy(w, r)
	if !ok {
		return
	}
	a.s.SetPolicy(pol)
	writeJSON(w, http.StatusOK, PolicyDocument(pol))
}

// readPolicy reads and parses a policy body; on failure it has answered.
func (a *api) readPolicy(w http.ResponseWriter, r *http.Request) (*Policy, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxAPIBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxAPIBodyBytes))
			return nil, false
		}
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return nil, false
	}
	// ParsePolicy refuses an empty body, null, a second document and
	// trailing text with their position: the policy stays as it is.
	pol, err := ParsePolicy("request", body)
	if err != nil {
		var list []string
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range joined.Unwrap() {
				list = append(list, e.Error())
			}
		} else {
			list = []string{err.Error()}
		}
		msg := "invalid policy: " + list[0]
		if len(list) > 1 {
			msg += fmt.Sprintf(" (and %d more)", len(list)-1)
		}
		writeJSON(w, http.StatusBadRequest, apiError{Error: msg, Errors: list})
		return nil, false
	}
	return pol, true
}

// resetResult is the answer to POST /api/v1/reset.
type resetResult struct {
	Wiped string `json:"wiped"`
	// Seq is the journal's latest sequence number after the reset: read
	// /api/v1/journal?since=Seq for what happened afterwards.
	Seq uint64 `json:"seq"`
}

func (a *api) reset(w http.ResponseWriter, r *http.Request) {
	q, err := query(r, "journal")
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if v, ok := q["journal"]; ok {
		if b, err := strconv.ParseBool(v); err != nil || b {
			writeError(w, http.StatusBadRequest, "the journal is history and is never reset: read /api/v1/journal?since=SEQ with the seq this endpoint returns")
			return
		}
	}
	a.s.WipeGreylist()
	writeJSON(w, http.StatusOK, resetResult{Wiped: "greylist", Seq: a.s.Journal().Seq()})
}

func (a *api) metrics(w http.ResponseWriter, r *http.Request) {
	a.s.Metrics().Handler().ServeHTTP(w, r)
}

// PolicyDoc is a Policy in the policy-file syntax (durations as "5m0s",
// replies as "451 4.7.1 text", actions as their YAML keys), so a document
// from GET /api/v1/policy can be PUT back or saved as a --policy file.
type PolicyDoc struct {
	Greylist *GreylistDoc `json:"greylist,omitempty"`
	Rules    []RuleDoc    `json:"rules"`
	MX       *MX          `json:"mx,omitempty"`
}

// GreylistDoc is a Greylist in policy-file syntax.
type GreylistDoc struct {
	Flavor             string   `json:"flavor"`
	Key                []string `json:"key"`
	SenderNormalize    string   `json:"sender_normalize"`
	BodyKey            int      `json:"body_key"`
	AutoWhitelistBy    string   `json:"auto_whitelist_by"`
	Delay              string   `json:"delay"`
	RetryWindow        string   `json:"retry_window"`
	MaxAge             string   `json:"max_age"`
	SubnetV4           int      `json:"subnet_v4"`
	SubnetV6           int      `json:"subnet_v6"`
	AutoWhitelistAfter int      `json:"auto_whitelist_after"`
	Reply              string   `json:"reply"`
	Stage              Stage    `json:"stage"`
}

// RuleDoc is a Rule in policy-file syntax: match plus exactly one action key.
type RuleDoc struct {
	Match  MatchDoc `json:"match"`
	Accept *bool    `json:"accept,omitempty"`
	Reply  string   `json:"reply,omitempty"`
	Drop   *bool    `json:"drop,omitempty"`
	Close  string   `json:"close,omitempty"`
	Delay  *string  `json:"delay,omitempty"`
	TLS    string   `json:"tls,omitempty"`
}

// MatchDoc is a Match in policy-file syntax.
type MatchDoc struct {
	Stage      Stage  `json:"stage,omitempty"`
	Attempt    string `json:"attempt,omitempty"`
	Connection string `json:"connection,omitempty"`
	MX         string `json:"mx,omitempty"`
	Client     string `json:"client,omitempty"`
	Helo       string `json:"helo,omitempty"`
	Sender     string `json:"sender,omitempty"`
	Rcpt       string `json:"rcpt,omitempty"`
	After      string `json:"after,omitempty"`
	Before     string `json:"before,omitempty"`
}

// PolicyDocument renders p in policy-file syntax.
func PolicyDocument(p *Policy) PolicyDoc {
	doc := PolicyDoc{Rules: []RuleDoc{}}
	if p == nil {
		return doc
	}
	doc.MX = p.MX
	if g := p.Greylist; g != nil {
		norm := g.SenderNormalize
		if norm == "" {
			norm = "none"
		}
		doc.Greylist = &GreylistDoc{Flavor: g.Flavor, Key: g.Key, SenderNormalize: norm, BodyKey: g.BodyKey, AutoWhitelistBy: g.AutoWhitelistBy,
			Delay: g.Delay.String(), RetryWindow: g.RetryWindow.String(), MaxAge: g.MaxAge.String(),
			SubnetV4: g.SubnetV4, SubnetV6: g.SubnetV6, AutoWhitelistAfter: g.AutoWhitelistAfter, Reply: g.Reply, Stage: g.Stage}
	}
	yes := true
	for _, r := range p.Rules {
		m := r.Match
		rd := RuleDoc{Match: MatchDoc{Stage: m.Stage, Client: m.Client, Helo: m.Helo, Sender: m.Sender, Rcpt: m.Rcpt,
			Attempt: rangeString(m.Attempt), Connection: rangeString(m.Connection), MX: rangeString(m.MX)}}
		if m.After > 0 {
			rd.Match.After = m.After.String()
		}
		if m.Before > 0 {
			rd.Match.Before = m.Before.String()
		}
		switch r.Action {
		case ActionAccept:
			rd.Accept = &yes
		case ActionReply:
			rd.Reply = replyString(r.Reply)
		case ActionDrop:
			rd.Drop = &yes
		case ActionClose:
			rd.Close = replyString(r.Reply)
		case ActionDelay:
			d := r.Delay.String()
			rd.Delay = &d
		case ActionTLS:
			rd.TLS = "fail"
		}
		doc.Rules = append(doc.Rules, rd)
	}
	return doc
}

func rangeString(r *IntRange) string {
	switch {
	case r == nil:
		return ""
	case r.Max == 0:
		return strconv.Itoa(r.Min) + "-"
	case r.Min == r.Max:
		return strconv.Itoa(r.Min)
	}
	return strconv.Itoa(r.Min) + "-" + strconv.Itoa(r.Max)
}

func replyString(r *Reply) string {
	if r == nil {
		return ""
	}
	s := strconv.Itoa(r.Code)
	if r.Enhanced != "" {
		s += " " + r.Enhanced
	}
	if r.Text != "" {
		s += " " + r.Text
	}
	return s
}

// newStdLogger adapts a Logf function to the *log.Logger net/http wants.
func newStdLogger(logf func(string, ...any), prefix string) *log.Logger {
	return log.New(logfWriter(func(p []byte) {
		logf("%s%s", prefix, strings.TrimRight(string(p), "\n"))
	}), "", 0)
}

type logfWriter func([]byte)

func (f logfWriter) Write(p []byte) (int, error) {
	f(p)
	return len(p), nil
}
