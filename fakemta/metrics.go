package fakemta

import (
	"net/http"
	"strconv"
	"strings"

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
	m.reg.MustRegister(m.connections, m.commands, m.replies, m.messages, m.dsns, m.greylist)
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

func (m *Metrics) observe(ev Event) {
	switch ev.Kind {
	case EventConnect:
		m.connections.Inc()
	case EventCommand:
		verb, _, _ := strings.Cut(ev.Command, " ")
		verb = strings.ToUpper(verb)
		if !knownVerbs[verb] {
			verb = "other" // bounded label values, whatever clients send
		}
		m.commands.WithLabelValues(verb).Inc()
	case EventReply:
		if ev.Reply.Dropped {
			m.replies.WithLabelValues("dropped").Inc()
		} else {
			m.replies.WithLabelValues(strconv.Itoa(ev.Reply.Code)).Inc()
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
