package samplerelay

import (
	"bytes"
	"errors"
	"io"
	"log"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The test-only next hop: a tiny go-smtp server with scriptable replies.

type sinkAction int

const (
	sinkAccept  sinkAction = iota
	sinkCut                // close the connection after the final dot, no reply
	sinkTempEOD            // 451 4.7.1 after the final dot
	sinkHang               // hold the reply after the final dot until the client goes away
)

type delivery struct {
	From string
	To   []string
	Data []byte
	At   time.Time
}

type rcptEvent struct {
	From, To string
	Code     int
	At       time.Time
	Conn     *smtp.Conn // the connection it came on
}

type sink struct {
	t    *testing.T
	addr string

	mu     sync.Mutex
	rcptFn func(from, to string, n int) *smtp.SMTPError // n: 1-based count of RCPTs for (from,to)
	dataFn func(from string, to []string, n int) sinkAction
	counts map[string]int
	ndata  int

	deliveries chan delivery
	cuts       chan delivery
	rcpts      chan rcptEvent
	rawLines   chan string // every line the relay sent (from the server's debug stream)
	hangs      chan struct{}
}

func greylist(times int) func(from, to string, n int) *smtp.SMTPError {
	return func(from, to string, n int) *smtp.SMTPError {
		if n <= times {
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
		}
		return nil
	}
}

// rejectNobody answers 550 5.1.1 to nobody@rcpt.test and accepts the rest.
func rejectNobody(from, to string, n int) *smtp.SMTPError {
	if to == "nobody@rcpt.test" {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "No such user"}
	}
	return nil
}

// tempfailBob answers 4xx to bob@rcpt.test on every attempt and accepts the rest.
func tempfailBob(from, to string, n int) *smtp.SMTPError {
	if to == "bob@rcpt.test" {
		return tempfailAlways(from, to, n)
	}
	return nil
}

func tempfailAlways(from, to string, n int) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted, try again later"}
}

func newSink(t *testing.T) *sink {
	t.Helper()
	s := &sink{
		t:          t,
		counts:     map[string]int{},
		deliveries: make(chan delivery, 100),
		cuts:       make(chan delivery, 100),
		rcpts:      make(chan rcptEvent, 1000),
		rawLines:   make(chan string, 10000),
		hangs:      make(chan struct{}, 10),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s, c: c}, nil
	}))
	srv.Domain = "sink.greyharness.test"
	srv.ErrorLog = log.New(io.Discard, "", 0)
	srv.AllowInsecureAuth = true
	srv.Debug = &lineSniffer{ch: s.rawLines}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return s
}

func (s *sink) script(rcpt func(from, to string, n int) *smtp.SMTPError, data func(from string, to []string, n int) sinkAction) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcptFn, s.dataFn = rcpt, data
}

// lineSniffer collects the client's command lines from go-smtp's debug
// stream (it writes server replies too; those start with a digit).
type lineSniffer struct {
	mu  sync.Mutex
	buf []byte
	ch  chan string
}

func (l *lineSniffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := strings.TrimRight(string(l.buf[:i]), "\r")
		l.buf = l.buf[i+1:]
		select {
		case l.ch <- line:
		default:
		}
	}
	return len(p), nil
}

type sinkSession struct {
	s    *sink
	c    *smtp.Conn
	from string
	to   []string
}

func (ss *sinkSession) Reset()        { ss.from, ss.to = "", nil }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s := ss.s
	s.mu.Lock()
	key := ss.from + "\x00" + to
	s.counts[key]++
	n := s.counts[key]
	fn := s.rcptFn
	s.mu.Unlock()
	var err *smtp.SMTPError
	if fn != nil {
		err = fn(ss.from, to, n)
	}
	code := 250
	if err != nil {
		code = err.Code
	}
	s.rcpts <- rcptEvent{From: ss.from, To: to, Code: code, At: time.Now(), Conn: ss.c}
	if err != nil {
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s := ss.s
	s.mu.Lock()
	s.ndata++
	n := s.ndata
	fn := s.dataFn
	s.mu.Unlock()
	act := sinkAccept
	if fn != nil {
		act = fn(ss.from, ss.to, n)
	}
	d := delivery{From: ss.from, To: append([]string(nil), ss.to...), Data: data, At: time.Now()}
	switch act {
	case sinkCut:
		s.cuts <- d
		ss.c.Conn().Close()
		return errors.New("cut")
	case sinkTempEOD:
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "Greylisted after data"}
	case sinkHang:
		s.hangs <- struct{}{}
		// Block until the client closes the connection.
		buf := make([]byte, 1)
		ss.c.Conn().SetReadDeadline(time.Now().Add(20 * time.Second))
		for {
			if _, err := ss.c.Conn().Read(buf); err != nil {
				return errors.New("client went away")
			}
		}
	}
	s.deliveries <- d
	return nil
}
