package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

// remoteFakeMTA drives a fake MTA deployed beside a staging relay through
// its control API: each scenario is a tenant (PUT, DELETE
// /api/v1/tenants/NAME...), and the journal streams back from GET
// /api/v1/events, one stream for the whole run. It cannot be stopped or
// started (profiles with `fakemta.api` lack the fakemta-control capability).
type remoteFakeMTA struct {
	ref    *profile.FakeMTARef
	client *http.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func newRemoteFakeMTA(ref *profile.FakeMTARef) *remoteFakeMTA {
	return &remoteFakeMTA{ref: ref, client: &http.Client{Timeout: 30 * time.Second}}
}

func (m *remoteFakeMTA) do(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(m.ref.API, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if m.ref.Token != "" {
		req.Header.Set("Authorization", "Bearer "+m.ref.Token)
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return fmt.Errorf("fake MTA API %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("fake MTA API %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// open streams the journal's events from now on into sink.
func (m *remoteFakeMTA) open(sink func(fakemta.Event)) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sctx, scancel := context.WithCancel(context.Background())
	m.cancel, m.done = scancel, make(chan struct{})
	ready := make(chan error, 1)
	go m.stream(sctx, 0, sink, ready)
	select {
	case err := <-ready:
		if err != nil {
			scancel()
			<-m.done
			return err
		}
	case <-ctx.Done():
		scancel()
		<-m.done
		return ctx.Err()
	}
	return nil
}

func (m *remoteFakeMTA) call(method, path string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return m.do(ctx, method, path, body, nil)
}

// putTenant registers a tenant or swaps its policy.
func (m *remoteFakeMTA) putTenant(name string, policyYAML []byte, connections bool) error {
	if len(bytes.TrimSpace(policyYAML)) == 0 {
		policyYAML = []byte("{}")
	}
	path := "/api/v1/tenants/" + name + "/policy"
	if connections {
		path += "?connections=true"
	}
	return m.call(http.MethodPut, path, policyYAML)
}

func (m *remoteFakeMTA) deleteTenant(name string) error {
	return m.call(http.MethodDelete, "/api/v1/tenants/"+name, nil)
}

func (m *remoteFakeMTA) wipeTenant(name string) error {
	return m.call(http.MethodPost, "/api/v1/tenants/"+name+"/wipe", nil)
}

// end stops the event stream.
func (m *remoteFakeMTA) end() {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		m.cancel = nil
	}
}

// stream reads server-sent events, reconnecting with Last-Event-ID so no
// event is lost or repeated, until ctx ends.
func (m *remoteFakeMTA) stream(ctx context.Context, since uint64, sink func(fakemta.Event), ready chan<- error) {
	defer close(m.done)
	first := true
	last := since
	for ctx.Err() == nil {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(m.ref.API, "/")+"/api/v1/events", nil)
		if err != nil {
			ready <- err
			return
		}
		if last > 0 {
			// (Before the first event: live only; a resume from 0 would
			// replay the fake MTA's whole journal.)
			req.Header.Set("Last-Event-ID", strconv.FormatUint(last, 10))
		}
		req.Header.Set("Accept", "text/event-stream")
		if m.ref.Token != "" {
			req.Header.Set("Authorization", "Bearer "+m.ref.Token)
		}
		resp, err := (&http.Client{}).Do(req)
		if err == nil && resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			err = fmt.Errorf("fake MTA events: %s", resp.Status)
		}
		if err != nil {
			if first {
				ready <- err
				return
			}
			t := time.NewTimer(time.Second) // the API is away: try again shortly
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if first {
			ready <- nil
			first = false
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		var data []byte
		for sc.Scan() {
			line := sc.Bytes()
			switch {
			case len(line) == 0:
				if len(data) > 0 {
					var ev fakemta.Event
					if json.Unmarshal(data, &ev) == nil && ev.Seq > last {
						last = ev.Seq
						sink(ev)
					}
				}
				data = data[:0]
			case bytes.HasPrefix(line, []byte("data:")):
				data = append(data, bytes.TrimSpace(line[5:])...)
			}
		}
		resp.Body.Close()
	}
}
