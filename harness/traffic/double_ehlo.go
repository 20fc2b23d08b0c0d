package traffic

import (
	"bytes"
	"net"
	"strings"
)

// doubleEHLOConn makes the client's first EHLO go out twice (the
// submission-side double handshake) and hides the first reply from the
// go-smtp client, which only knows how to say EHLO once. The second EHLO
// waits for the first reply: RFC 2920 lets EHLO only end a pipelined group,
// and correct relays (OpenSMTPD, sendmail) refuse it pipelined. A refused
// second EHLO (RFC 5321 §4.1.4 allows it: OpenSMTPD 6.8 answers "503 5.5.1
// Invalid command: Already identified") leaves the session in the state of
// the first: the client gets the first reply and goes on, and the refusal is
// kept in refused.
//
// It also keeps go-smtp from saying hello again after RSET (its Reset
// forgets the hello, so the next MAIL would follow a new EHLO): with twice
// unset it only does that, for send's rset_before_mail. A later EHLO of the
// client is answered here with the relay's first reply and never sent:
// the scenarios' conversations are EHLO [EHLO] RSET MAIL, as they say.
type doubleEHLOConn struct {
	net.Conn
	twice   bool   // say the first EHLO twice
	sent    bool   // the first EHLO went out
	first   []byte // the relay's accepted reply to it
	pending []byte // reply bytes read ahead, for the client
	refused string // the relay's refusal of the second EHLO, one line per reply line
}

func (d *doubleEHLOConn) Write(p []byte) (int, error) {
	if !(bytes.HasPrefix(p, []byte("EHLO ")) || bytes.HasPrefix(p, []byte("HELO "))) {
		return d.Conn.Write(p)
	}
	if d.sent {
		if d.first == nil {
			return d.Conn.Write(p)
		}
		d.pending = append(d.pending, d.first...) // go-smtp's hello again: not sent
		return len(p), nil
	}
	d.sent = true
	if _, err := d.Conn.Write(p); err != nil {
		return 0, err
	}
	reply, rest, err := readReply(d.Conn)
	if err != nil {
		d.pending = append(reply, rest...)
		return len(p), nil // the client reads what came, then the error
	}
	if len(reply) < 1 || reply[0] != '2' {
		// Refused: the client sees this reply, and no second EHLO goes out.
		d.pending = append(reply, rest...)
		return len(p), nil
	}
	d.first = reply
	if !d.twice {
		d.pending = append(reply, rest...)
		return len(p), nil
	}
	if _, err := d.Conn.Write(p); err != nil {
		return 0, err
	}
	if len(rest) > 0 {
		// Bytes after the first reply, before the second EHLO: the client
		// reads them, then the second reply.
		d.pending = rest // the first reply is swallowed
		return len(p), nil
	}
	second, rest, err := readReply(d.Conn)
	if err != nil || len(second) < 1 || second[0] == '2' {
		d.pending = append(second, rest...) // the first reply is swallowed
		return len(p), nil
	}
	d.refused = strings.TrimSpace(strings.ReplaceAll(string(second), "\r\n", "\n"))
	d.pending = append(reply, rest...)
	return len(p), nil
}

func (d *doubleEHLOConn) Read(p []byte) (int, error) {
	if len(d.pending) > 0 {
		n := copy(p, d.pending)
		d.pending = d.pending[n:]
		return n, nil
	}
	return d.Conn.Read(p)
}

// readReply reads one whole SMTP reply (up to the line with a space after
// the code) and returns it and any bytes read beyond it.
func readReply(c net.Conn) (reply, rest []byte, err error) {
	var buf []byte
	chunk := make([]byte, 4096)
	for {
		for start := 0; ; {
			i := bytes.IndexByte(buf[start:], '\n')
			if i < 0 {
				break
			}
			line := buf[start : start+i+1]
			start += i + 1
			if len(line) < 4 || line[3] != '-' {
				return buf[:start], buf[start:], nil
			}
		}
		n, err := c.Read(chunk)
		buf = append(buf, chunk[:n]...)
		if err != nil {
			return buf, nil, err
		}
	}
}
