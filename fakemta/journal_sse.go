package fakemta

import (
	"encoding/json"
	"strconv"
	"sync"
)

// sseClientQueue bounds the frames waiting for one event-stream client. A
// client that falls further behind is dropped (its stream ends) and
// resumes with Last-Event-ID from the journal, losing nothing.
const sseClientQueue = 4096

// sseFrame is one event encoded once as a server-sent event, shared by
// every client.
type sseFrame struct {
	seq uint64
	b   []byte
}

// sseHub fans the journal out to event-stream clients: one subscription,
// each event encoded once, a bounded queue per client.
type sseHub struct {
	mu      sync.Mutex
	clients map[*sseClient]struct{}
	ended   bool // the journal closed: no more events
}

// sseClient is one event-stream client's queue. ch closes at the end of
// the journal; dropped closes when the client fell behind.
type sseClient struct {
	ch      chan sseFrame
	dropped chan struct{}
}

// sse returns the journal's event-stream hub, started on first use.
func (j *Journal) sse() *sseHub {
	j.sseOnce.Do(func() {
		h := &sseHub{clients: map[*sseClient]struct{}{}}
		ch, _ := j.Subscribe() // for the journal's life: it ends at Close
		go h.run(ch)
		j.sseHub = h
	})
	return j.sseHub
}

func (h *sseHub) run(ch <-chan Event) {
	for ev := range ch {
		h.mu.Lock()
		if len(h.clients) == 0 {
			h.mu.Unlock()
			continue
		}
		h.mu.Unlock()
		f := sseFrame{seq: ev.Seq, b: encodeSSE(&ev)}
		h.mu.Lock()
		for c := range h.clients {
			select {
			case c.ch <- f:
			default:
				delete(h.clients, c)
				close(c.dropped)
			}
		}
		h.mu.Unlock()
	}
	h.mu.Lock()
	h.ended = true
	for c := range h.clients {
		close(c.ch) // after every event: the end of the journal reaches them
	}
	clear(h.clients)
	h.mu.Unlock()
}

// join adds a client; nil when the journal has ended.
func (h *sseHub) join() *sseClient {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ended {
		return nil
	}
	c := &sseClient{ch: make(chan sseFrame, sseClientQueue), dropped: make(chan struct{})}
	h.clients[c] = struct{}{}
	return c
}

func (h *sseHub) leave(c *sseClient) {
	h.mu.Lock()
	delete(h.clients, c)
	h.mu.Unlock()
}

// count returns the clients being fed (tests).
func (h *sseHub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients)
}

// encodeSSE encodes ev as one server-sent event.
func encodeSSE(ev *Event) []byte {
	data, err := json.Marshal(ev)
	if err != nil {
		data = mustJSON(apiError{Error: "encoding event " + strconv.FormatUint(ev.Seq, 10) + ": " + err.Error()})
	}
	b := make([]byte, 0, len(data)+40)
	b = append(b, "id: "...)
	b = strconv.AppendUint(b, ev.Seq, 10)
	b = append(b, "\nevent: "...)
	b = append(b, ev.Kind...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, '\n', '\n')
}
