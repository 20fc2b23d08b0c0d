package fakemta

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
)

// heapProbe is a ResponseWriter that measures the live heap at its first
// Write: a streamed response writes long before it has read everything.
type heapProbe struct {
	hdr    http.Header
	code   int
	body   bytes.Buffer
	writes int
	heapAt uint64 // live heap at the first Write
}

func (p *heapProbe) Header() http.Header { return p.hdr }
func (p *heapProbe) WriteHeader(c int)   { p.code = c }
func (p *heapProbe) Write(b []byte) (int, error) {
	if p.writes == 0 {
		p.heapAt = liveHeap()
	}
	p.writes++
	return p.body.Write(b)
}

func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// bigJournalServer returns a server whose journal (a state directory)
// holds n events of about 250 bytes each, most of them only in the file.
func bigJournalServer(tb testing.TB, n int) *Server {
	tb.Helper()
	srv, err := New(Config{StateDir: tb.TempDir(), Logf: func(string, ...any) {}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { srv.Close() })
	cmd := "RCPT TO:<" + strings.Repeat("r", 180) + "@example.test>"
	for range n {
		srv.Journal().Append(Event{Kind: EventCommand, Conn: 1, Client: "127.0.0.1:2525", Command: cmd}, false)
	}
	return srv
}

// TestJournalAPIStreamsWithoutLimit: GET /api/v1/journal without limit
// streams from the file: its first bytes go out while the live heap holds
// a small part of the journal, not all of it (issue 11 item 4), and the
// whole array still comes out complete and in order.
func TestJournalAPIStreamsWithoutLimit(t *testing.T) {
	slow(t, "streams a 17 MB journal")
	const n = 60000 // ~17 MB of journal
	srv := bigJournalServer(t, n)
	a := srv.newAPI("")
	base := liveHeap()
	p := &heapProbe{hdr: http.Header{}, code: 200}
	a.ServeHTTP(p, httptest.NewRequest(http.MethodGet, "/api/v1/journal", nil))
	if p.code != 200 {
		t.Fatalf("status %d: %s", p.code, p.body.String())
	}
	var evs []Event
	if err := json.Unmarshal(p.body.Bytes(), &evs); err != nil {
		t.Fatal(err)
	}
	first := evs[0].Seq
	for i, ev := range evs {
		if ev.Seq != first+uint64(i) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
	if len(evs) < n || p.writes < 2 {
		t.Fatalf("%d events in %d writes", len(evs), p.writes)
	}
	grew := int64(p.heapAt) - int64(base)
	t.Logf("journal %d bytes as JSON; live heap at the first write: +%d KB", p.body.Len(), grew>>10)
	if grew > 4<<20 {
		t.Fatalf("the live heap grew by %d MB before the first byte went out (journal JSON is %d MB): not streamed",
			grew>>20, p.body.Len()>>20)
	}
}

// BenchmarkJournalAPIMemory reports the live heap while GET
// /api/v1/journal streams a journal of 60,000 events (about 17 MB).
func BenchmarkJournalAPIMemory(b *testing.B) {
	srv := bigJournalServer(b, 60000)
	a := srv.newAPI("")
	b.ResetTimer()
	var grew int64
	for range b.N {
		base := liveHeap()
		p := &heapProbe{hdr: http.Header{}, code: 200}
		a.ServeHTTP(p, httptest.NewRequest(http.MethodGet, "/api/v1/journal", nil))
		grew = max(grew, int64(p.heapAt)-int64(base))
	}
	b.ReportMetric(float64(grew)/(1<<20), "MB-live-heap-at-first-write")
}
