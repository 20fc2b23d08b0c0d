package traffic

import (
	"bytes"
	"net"
)

// doubleEHLOConn makes the client's first EHLO go out twice (the
// submission-side double handshake) and hides the first reply from the
// go-smtp client, which only knows how to say EHLO once.
type doubleEHLOConn struct {
	net.Conn
	sent    bool
	swallow bool   // still discarding the first EHLO reply
	pending []byte // reply bytes read while swallowing
}

func (d *doubleEHLOConn) Write(p []byte) (int, error) {
	if !d.sent && (bytes.HasPrefix(p, []byte("EHLO ")) || bytes.HasPrefix(p, []byte("HELO "))) {
		d.sent, d.swallow = true, true
		if _, err := d.Conn.Write(append(append([]byte{}, p...), p...)); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	return d.Conn.Write(p)
}

func (d *doubleEHLOConn) Read(p []byte) (int, error) {
	for d.swallow {
		buf := make([]byte, 4096)
		n, err := d.Conn.Read(buf)
		d.pending = append(d.pending, buf[:n]...)
		// The first reply ends at the first line with a space after the code.
		for start := 0; ; {
			i := bytes.IndexByte(d.pending[start:], '\n')
			if i < 0 {
				break
			}
			line := d.pending[start : start+i+1]
			start += i + 1
			if len(line) >= 4 && line[3] == ' ' {
				d.pending = d.pending[start:]
				d.swallow = false
				break
			}
		}
		if err != nil && d.swallow {
			return 0, err
		}
	}
	if len(d.pending) > 0 {
		n := copy(p, d.pending)
		d.pending = d.pending[n:]
		return n, nil
	}
	return d.Conn.Read(p)
}
