package fakemta

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the fake MTA's Prometheus metrics, derived from journal
// events as they are recorded (one place, so they cannot disagree with it).
type Metrics struct {
	reg         *prometheus.Registry
	connections prometheus.Counter
	commands    *prometheus.CounterVec
	replies     *prometheus.CounterVec
	messages    prometheus.Counter
	dsns        *prometheus.CounterVec
	greylist    *prometheus.CounterVec
	// recordFailures counts durable records refused (what: journal, body);
	// recording is 1 while the fake MTA can record durably, 0 otherwise.
	recordFailures *prometheus.CounterVec
	recording      prometheus.GaugeFunc
	health         atomic.Pointer[func() error]

	commandKids counterCache
	replyKids   [500]atomic.Pointer[prometheus.Counter]
}

// NewMetrics registers the metrics on a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		connections: prometheus.NewCounter(prometheus.CounterOpts{Name: "greyharness_fakemta_connections_total",
			Help: "SMTP connections accepted."}),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greyharness_fakemta_commands_total",
			Help: "SMTP commands received, by verb."}, []string{"verb"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greyharness_fakemta_replies_total",
			Help: "SMTP replies sent, by code (\"dropped\" when the line was cut instead)."}, []string{"code"}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "greyharness_fakemta_messages_total",
			Help: "Message bodies received in full."}),
		dsns: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greyharness_fakemta_dsns_total",
			Help: "DSNs received, by action."}, []string{"action"}),
		greylist: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greyharness_fakemta_greylist_total",
			Help: "Greylist decisions, by outcome (deferred, passed, whitelisted)."}, []string{"outcome"}),
	}
	m.recordFailures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "greyharness_fakemta_record_failures_total",
		Help: "Messages refused (451/452 at the final dot) because they could not be recorded durably, by what failed (journal, body)."}, []string{"what"})
	m.recording = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "greyharness_fakemta_recording",
		Help: "1 while the fake MTA can record durably, 0 while journal or body writes fail (see /healthz)."}, func() float64 {
		if f := m.health.Load(); f != nil && (*f)() != nil {
			return 0
		}
		return 1
	})
	m.reg.MustRegister(m.connections, m.commands, m.replies, m.messages, m.dsns, m.greylist, m.recordFailures, m.recording)
	m.commandKids.vec = m.commands
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry (for tests and embedding).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

var knownVerbs = map[string]bool{"EHLO": true, "HELO": true, "LHLO": true, "MAIL": true, "RCPT": true, "DATA": true,
	"BDAT": true, "RSET": true, "NOOP": true, "QUIT": true, "STARTTLS": true, "VRFY": true, "AUTH": true, "HELP": true}

// Label children are resolved once and kept (WithLabelValues hashes the
// labels on every call). A child is made on first use, as WithLabelValues
// does, so /metrics shows the same series.
type counterCache struct {
	vec  *prometheus.CounterVec
	mu   sync.Mutex
	kids atomic.Pointer[map[string]prometheus.Counter] // copy on write
}

func (cc *counterCache) get(label string) prometheus.Counter {
	if m := cc.kids.Load(); m != nil {
		if c, ok := (*m)[label]; ok {
			return c
		}
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	old := cc.kids.Load()
	if old != nil {
		if c, ok := (*old)[label]; ok {
			return c
		}
	}
	c := cc.vec.WithLabelValues(label)
	m := make(map[string]prometheus.Counter, 1+len(ptrMap(old)))
	for k, v := range ptrMap(old) {
		m[k] = v
	}
	m[label] = c
	cc.kids.Store(&m)
	return c
}

func ptrMap(p *map[string]prometheus.Counter) map[string]prometheus.Counter {
	if p == nil {
		return nil
	}
	return *p
}

// replyCounter returns the replies child for a code, cached for 100-599.
func (m *Metrics) replyCounter(code int) prometheus.Counter {
	if code < 100 || code > 599 {
		return m.replies.WithLabelValues(strconv.Itoa(code))
	}
	if c := m.replyKids[code-100].Load(); c != nil {
		return *c
	}
	c := m.replies.WithLabelValues(strconv.Itoa(code))
	m.replyKids[code-100].Store(&c)
	return c
}

// commandVerb is the verb label of a command line: its first word in upper
// case when it is a known verb, "other" otherwise.
func commandVerb(cmd string) string {
	verb, _, _ := strings.Cut(cmd, " ")
	if len(verb) <= 8 {
		// ASCII fast path: no allocation for the known verbs.
		var up [8]byte
		ascii := true
		for i := 0; i < len(verb); i++ {
			b := verb[i]
			if b >= 0x80 {
				ascii = false
				break
			}
			if 'a' <= b && b <= 'z' {
				b -= 'a' - 'A'
			}
			up[i] = b
		}
		if ascii {
			switch string(up[:len(verb)]) {
			case "EHLO":
				return "EHLO"
			case "HELO":
				return "HELO"
			case "LHLO":
				return "LHLO"
			case "MAIL":
				return "MAIL"
			case "RCPT":
				return "RCPT"
			case "DATA":
				return "DATA"
			case "BDAT":
				return "BDAT"
			case "RSET":
				return "RSET"
			case "NOOP":
				return "NOOP"
			case "QUIT":
				return "QUIT"
			case "STARTTLS":
				return "STARTTLS"
			case "VRFY":
				return "VRFY"
			case "AUTH":
				return "AUTH"
			case "HELP":
				return "HELP"
			}
			return "other"
		}
	}
	verb = strings.ToUpper(verb)
	if !knownVerbs[verb] {
		verb = "other" // bounded label values, whatever clients send
	}
	return verb
}

// recordFailed counts one message refused because what failed to record.
func (m *Metrics) recordFailed(what string) { m.recordFailures.WithLabelValues(what).Inc() }

// watchHealth makes the recording gauge follow fn.
func (m *Metrics) watchHealth(fn func() error) { m.health.Store(&fn) }

func (m *Metrics) observe(ev *Event) {
	switch ev.Kind {
	case EventConnect:
		m.connections.Inc()
	case EventCommand:
		m.commandKids.get(commandVerb(ev.Command)).Inc()
	case EventReply:
		if ev.Reply.Dropped {
			m.replies.WithLabelValues("dropped").Inc()
		} else {
			m.replyCounter(ev.Reply.Code).Inc()
		}
	case EventTransaction:
		tx := ev.Transaction
		for _, r := range tx.Rcpts {
			if r.Greylist != "" {
				m.greylist.WithLabelValues(r.Greylist).Inc()
			}
		}
		if tx.Message != nil {
			m.messages.Inc()
			if tx.Message.DSN != nil {
				for _, r := range tx.Message.DSN.Recipients {
					m.dsns.WithLabelValues(r.Action).Inc()
				}
			}
		}
	}
}
