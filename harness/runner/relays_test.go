package runner

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// blackholeRelay answers 250 to everything and delivers nothing.
func blackholeRelay(t *testing.T) string {
	return smtpStub(t, "220 blackhole", "250 ok", "250 2.0.0 queued, never delivered")
}

// refusingRelay answers every RCPT with 550.
func refusingRelay(t *testing.T) string {
	return smtpStub(t, "220 refusing", "550 5.7.1 relay access denied", "250 ok")
}

// smtpStub is a relay under test on 127.0.0.1:0 that speaks just enough
// SMTP to a submitter and forwards nothing: greeting first, rcptReply to
// every RCPT, 354 to DATA and then dataReply after the final dot, 221 to
// QUIT, 250 ok to anything else. It returns its address; it closes with
// the test.
func smtpStub(t *testing.T, greeting, rcptReply, dataReply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				say := func(l string) { c.Write([]byte(l + "\r\n")) }
				say(greeting)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					verb, _, _ := strings.Cut(strings.ToUpper(strings.TrimSpace(l)), " ")
					switch verb {
					case "RCPT":
						say(rcptReply)
					case "DATA":
						say("354 go on")
						for l != ".\r\n" {
							if l, err = r.ReadString('\n'); err != nil {
								return
							}
						}
						say(dataReply)
					case "QUIT":
						say("221 bye")
						return
					default:
						say("250 ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
