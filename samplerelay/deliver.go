package samplerelay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// outcome is what one attempt got for one recipient.
type outcome struct {
	class  int    // 2, 4, 5, or 0 for a network error (treated as temporary)
	reply  string // "451 4.7.1 text" when there was a reply
	status string // enhanced status "4.7.1" (derived from the code when absent)
	err    string // network error text (class 0)
}

func (o outcome) text() string {
	if o.reply != "" {
		return o.reply
	}
	return o.err
}

func replyOutcome(e *smtp.SMTPError) outcome {
	msg := strings.Join(strings.Fields(strings.ReplaceAll(e.Message, "\n", " ")), " ")
	o := outcome{class: e.Code / 100}
	if o.class != 2 && o.class != 4 && o.class != 5 {
		o.class = 4 // an unexpected 1xx/3xx reply: try again later
	}
	ec := e.EnhancedCode
	if ec != smtp.EnhancedCodeNotSet && ec != smtp.NoEnhancedCode && ec[0] > 0 {
		o.status = fmt.Sprintf("%d.%d.%d", ec[0], ec[1], ec[2])
		o.reply = fmt.Sprintf("%d %s %s", e.Code, o.status, msg)
	} else {
		o.status = fmt.Sprintf("%d.0.0", o.class)
		o.reply = strings.TrimSpace(fmt.Sprintf("%d %s", e.Code, msg))
	}
	return o
}

func errOutcome(err error, stage string) outcome {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyOutcome(se)
	}
	return outcome{class: 0, status: "4.4.1", err: fmt.Sprintf("%s: %v", stage, err)}
}

// deliver makes one attempt for the due recipients of env (a snapshot).
func (r *relay) deliver(env *envelope, due []string) {
	defer r.wg.Done()
	res := map[string]outcome{}
	body, err := r.st.readBody(env.ID)
	if err != nil {
		r.logf("%s: read body: %v", env.ID, err)
		for _, a := range due {
			res[a] = outcome{class: 0, status: "4.3.0", err: "read queued body: " + err.Error()}
		}
	} else {
		res = r.transact(env.Sender, due, body)
	}
	r.apply(env.ID, res, time.Now())
}

// transact makes one delivery attempt for each route of the recipients
// (a lane, or the next hops: laneOf), one transaction per route.
func (r *relay) transact(sender string, rcpts []string, body []byte) map[string]outcome {
	byLane := map[int][]string{}
	var order []int
	for _, a := range rcpts {
		n := laneOf(a, len(r.cfg.Lanes))
		if _, ok := byLane[n]; !ok {
			order = append(order, n)
		}
		byLane[n] = append(byLane[n], a)
	}
	res := map[string]outcome{}
	for _, n := range order {
		hops := r.cfg.NextHop
		if n > 0 {
			hops = r.cfg.Lanes[n-1 : n]
		}
		for a, o := range r.transactHops(hops, sender, byLane[n], body) {
			res[a] = o
		}
	}
	return res
}

// laneOf is the lane (1..lanes) an address is routed to: its domain's first
// label starts "lN-"; 0 for the next hops.
func laneOf(addr string, lanes int) int {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 || lanes == 0 {
		return 0
	}
	label, _, _ := strings.Cut(addr[at+1:], ".")
	num, ok := strings.CutPrefix(strings.ToLower(label), "l")
	if !ok {
		return 0
	}
	digits, _, ok := strings.Cut(num, "-")
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n < 1 || n > lanes || digits != strconv.Itoa(n) {
		return 0
	}
	return n
}

// transactHops makes one delivery attempt: the MX hosts in order, each
// with the recipients the ones before it deferred (4xx or no answer); a
// 2xx or 5xx is final. A recipient's outcome is the last reply an MX gave
// it (a later MX that does not answer leaves an earlier 4xx in place).
func (r *relay) transactHops(hops []string, sender string, rcpts []string, body []byte) map[string]outcome {
	res := map[string]outcome{}
	todo := rcpts
	if r.bugs[BugNoMXFailover] {
		hops = hops[:1] // the bug: the first MX's 4xx is the attempt's end
	}
	for i, hop := range hops {
		out := r.transactHop(hop, sender, todo, body)
		var again []string
		for _, a := range todo {
			o, ok := out[a]
			if !ok || contains(again, a) {
				continue
			}
			if prev, tried := res[a]; tried && o.class == 0 && prev.class == 4 {
				o = prev // an MX's reply says more than the next one's silence
			}
			res[a] = o
			if o.class == 4 || o.class == 0 {
				again = append(again, a)
			}
		}
		if len(again) == 0 {
			break
		}
		if i+1 < len(hops) {
			r.logf("MX %s deferred %v (%s): trying %s", hop, again, out[again[0]].text(), hops[i+1])
		}
		todo = again
	}
	return res
}

// transactHop runs one SMTP transaction to the MX host hop with all rcpts.
func (r *relay) transactHop(hop, sender string, rcpts []string, body []byte) map[string]outcome {
	res := map[string]outcome{}
	all := func(o outcome, addrs []string) map[string]outcome {
		for _, a := range addrs {
			if _, done := res[a]; !done {
				res[a] = o
			}
		}
		return res
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(r.ctx, "tcp", hop)
	if err != nil {
		return all(errOutcome(err, "connect to "+hop), rcpts)
	}
	stop := context.AfterFunc(r.ctx, func() { conn.Close() })
	defer stop()
	c := smtp.NewClient(conn)
	c.CommandTimeout = 30 * time.Second
	c.SubmissionTimeout = 60 * time.Second
	defer c.Close()

	if err := c.Hello(r.cfg.Hostname); err != nil {
		return all(errOutcome(err, "greeting/EHLO"), rcpts)
	}
	if err := c.Mail(sender, nil); err != nil {
		return all(errOutcome(err, "MAIL FROM"), rcpts)
	}
	var accepted []string
	for _, a := range rcpts {
		if _, dup := res[a]; dup || contains(accepted, a) {
			continue
		}
		err := c.Rcpt(a, nil)
		if err != nil && r.bugs[BugHammer] && errOutcome(err, "RCPT TO").class == 4 {
			// The bug: ask again at once, in the same transaction.
			err = c.Rcpt(a, nil)
		}
		if err != nil {
			o := errOutcome(err, "RCPT TO")
			if o.class == 0 {
				return all(o, rcpts)
			}
			res[a] = o
			continue
		}
		accepted = append(accepted, a)
	}
	if len(accepted) == 0 {
		_ = c.Quit()
		return res
	}
	w, err := c.Data()
	if err != nil {
		return all(errOutcome(err, "DATA"), accepted)
	}
	if _, err := w.Write(body); err != nil {
		return all(errOutcome(err, "sending message"), accepted)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		// A cut after the final dot lands here as a network error: a
		// deferral, so the message is sent again (RFC 1047).
		return all(errOutcome(err, "after final dot"), accepted)
	}
	ok := outcome{class: 2, status: "2.0.0", reply: "250 " + strings.ReplaceAll(resp.StatusText, "\n", " ")}
	all(ok, accepted)
	_ = c.Quit()
	return res
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// statusOf gives a recipient's DSN status from its last reply.
func statusOf(rc *rcptState) string {
	if rc.LastReply != "" {
		f := strings.Fields(rc.LastReply)
		if len(f) > 1 && isStatus(f[1]) {
			return f[1]
		}
		if len(f) > 0 && len(f[0]) == 3 {
			return f[0][:1] + ".0.0"
		}
	}
	return "4.4.1" // no answer from the next hop (connect or connection failure)
}

func isStatus(s string) bool {
	p := strings.Split(s, ".")
	if len(p) != 3 || len(p[0]) != 1 || !strings.ContainsAny(p[0], "245") {
		return false
	}
	for _, x := range p[1:] {
		if x == "" || strings.Trim(x, "0123456789") != "" {
			return false
		}
	}
	return true
}

func renameSync(from, to string) error {
	if err := os.Rename(from, to); err != nil {
		return err
	}
	return syncDir(filepath.Dir(to))
}
