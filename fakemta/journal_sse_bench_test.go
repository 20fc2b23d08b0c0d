package fakemta

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

// BenchmarkSSEFanout: 100 clients read the event stream while 5,000
// events are appended; one op is until every client has the last one.
func BenchmarkSSEFanout(b *testing.B) {
	const clients, events = 100, 5000
	for range b.N {
		b.StopTimer()
		srv, err := New(Config{StateDir: b.TempDir(), Logf: func(string, ...any) {}})
		if err != nil {
			b.Fatal(err)
		}
		hs := httptest.NewServer(srv.APIHandler(""))
		start := srv.Journal().Seq()
		last := []byte("id: " + strconv.FormatUint(start+events, 10))
		var wg sync.WaitGroup
		var ready sync.WaitGroup
		for range clients {
			wg.Add(1)
			ready.Add(1)
			go func() {
				defer wg.Done()
				resp, err := http.Get(hs.URL + "/api/v1/events?since=" + strconv.FormatUint(start, 10))
				ready.Done()
				if err != nil {
					b.Error(err)
					return
				}
				defer resp.Body.Close()
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
				for sc.Scan() {
					if bytes.Equal(sc.Bytes(), last) {
						return
					}
				}
				b.Error("stream ended before the last event")
			}()
		}
		ready.Wait()
		b.StartTimer()
		for range events {
			srv.Journal().Append(Event{Kind: EventCommand, Conn: 1, Client: "127.0.0.1:2525", Command: "RCPT TO:<someone@example.test>"}, false)
		}
		wg.Wait()
		b.StopTimer()
		hs.Close()
		srv.Close()
	}
}
