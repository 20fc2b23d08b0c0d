package fakemta

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readRawSSEIDs reads an event stream's HTTP response off a raw
// connection until the server ends it and returns the ids of the complete
// events (an event counts once its blank line came, as for EventSource:
// a dropped client may get the last one cut short).
func readRawSSEIDs(t *testing.T, nc net.Conn) []uint64 {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	var ids []uint64
	var pending uint64
	for sc.Scan() {
		line := sc.Text()
		if line == "" && pending != 0 {
			ids, pending = append(ids, pending), 0
			continue
		}
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			n, err := strconv.ParseUint(id, 10, 64)
			if err != nil {
				continue // cut short: the event never completed
			}
			pending = n
		}
	}
	if err := sc.Err(); err != nil && !isReset(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("reading the stream: %v", err)
	}
	return ids
}

// TestSSEStalledClientDroppedThenResumesGapFree: a client that stops
// reading is dropped (its stream ends) instead of queueing without bound;
// resuming with Last-Event-ID it gets every later event exactly once
// (issue 11 item 5).
func TestSSEStalledClientDroppedThenResumesGapFree(t *testing.T) {
	slow(t, "waits until a stalled SSE client is dropped")
	srv, err := New(Config{StateDir: t.TempDir(), Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	hs := httptest.NewServer(srv.APIHandler(""))
	defer hs.Close()
	j := srv.Journal()
	start := j.Seq()

	// A stalled client: asks for the stream, never reads.
	nc, err := net.Dial("tcp", hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	fmt.Fprintf(nc, "GET /api/v1/events?since=%d HTTP/1.1\r\nHost: x\r\n\r\n", start)
	pollUntil(t, "the client to join", func() bool { return j.sse().count() == 1 })

	// Far more than socket buffers and the client's queue hold.
	cmd := "NOOP " + strings.Repeat("n", 1000)
	total := 0
	for j.sse().count() > 0 {
		j.Append(Event{Kind: EventCommand, Conn: 1, Command: cmd}, false)
		total++
		if total > 200000 {
			t.Fatal("a stalled client was never dropped")
		}
	}
	t.Logf("stalled client dropped after %d events", total)
	for range 500 {
		j.Append(Event{Kind: EventCommand, Conn: 1, Command: cmd}, false)
	}
	end := j.Seq()

	// What reached the stalled client, then the rest by resuming.
	got := readRawSSEIDs(t, nc)
	if len(got) == 0 {
		t.Fatal("the stalled client got nothing at all")
	}
	f := &apiFixture{srv: srv, http: hs}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resumed := readSSE(t, ctx, f.openSSE(t, ctx, "", strconv.FormatUint(got[len(got)-1], 10)), func(e sseEvent) bool { return e.id == end })
	for _, e := range resumed {
		got = append(got, e.id)
	}
	for i, id := range got {
		if id != start+1+uint64(i) {
			t.Fatalf("event %d has id %d, want %d (gap or duplicate)", i, id, start+1+uint64(i))
		}
	}
	if got[len(got)-1] != end {
		t.Fatalf("last id %d, want %d", got[len(got)-1], end)
	}
}

// TestSSEEncodesOnceForAllClients: each event is encoded once, however
// many clients read it (they share the frame).
func TestSSEEncodesOnceForAllClients(t *testing.T) {
	j, err := openJournal("", 0, time.Now, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := j.sse()
	a, b := h.join(), h.join()
	j.Append(Event{Kind: EventCommand, Command: "NOOP"}, false)
	fa, fb := <-a.ch, <-b.ch
	if &fa.b[0] != &fb.b[0] {
		t.Fatal("each client got its own encoding")
	}
	j.Close()
	if _, ok := <-a.ch; ok {
		t.Fatal("stream not ended at the journal's close")
	}
}
