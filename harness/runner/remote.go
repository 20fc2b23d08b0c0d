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

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

// remoteFakeMTA drives a fake MTA deployed beside a staging relay through
// its control API: the scenario's policy goes in with PUT /api/v1/policy,
// greylist state is wiped at the start of each scenario, and the journal
// streams back from GET /api/v1/events. It cannot be stopped or started
// (profiles with `fakemta.api` lack the fakemta-control capability): Start
// installs the policy and begins the event stream, Stop ends the stream.
type remoteFakeMTA struct {
	ref    *profile.FakeMTARef
	client *http.Client
	policy []byte // the policy YAML for the API
	cancel context.CancelFunc
	done   chan struct{}
}

func newRemoteFakeMTA(ref *profile.FakeMTARef, policy *yaml.Node) *remoteFakeMTA {
	return &remoteFakeMTA{ref: ref, client: &http.Client{Timeout: 30 * time.Second}, policy: policyYAML(policy)}
}

// policyYAML renders a policy node for the remote fake MTA's API.
func policyYAML(n *yaml.Node) []byte {
	if n == nil || n.Kind == 0 || n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		// "policy: ~" is the empty policy; the API refuses a null document.
		return []byte("{}")
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return []byte("{}")
	}
	return b
}

// apiTimeout bounds one API call beyond the caller's ctx.
const apiTimeout = 30 * time.Second

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

// Start installs the policy, wipes greylist state and streams events from
// the wipe on into sink.
func (m *remoteFakeMTA) Start(ctx context.Context, sink func(fakemta.Event)) error {
	if m.cancel != nil {
		return fmt.Errorf("fake MTA API %s: already streaming events", m.ref.API)
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	policy := m.policy
	if len(bytes.TrimSpace(policy)) == 0 {
		policy = []byte("{}")
	}
	if err := m.do(ctx, http.MethodPut, "/api/v1/policy", policy, nil); err != nil {
		return err
	}
	var reset struct {
		Seq uint64 `json:"seq"`
	}
	if err := m.do(ctx, http.MethodPost, "/api/v1/reset", nil, &reset); err != nil {
		return err
	}
	// The stream outlives this call (it runs until Stop), not its values.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel, m.done = scancel, make(chan struct{})
	ready := make(chan error, 1)
	go m.stream(sctx, reset.Seq, sink, ready)
	select {
	case err := <-ready:
		if err != nil {
			scancel()
			<-m.done
			m.cancel = nil
			return err
		}
	case <-ctx.Done():
		scancel()
		<-m.done
		m.cancel = nil
		return ctx.Err()
	}
	return nil
}

func (m *remoteFakeMTA) SetPolicy(ctx context.Context, _ *fakemta.Policy, node *yaml.Node) error {
	m.policy = policyYAML(node)
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return m.do(ctx, http.MethodPut, "/api/v1/policy", m.policy, nil)
}

func (m *remoteFakeMTA) WipeGreylist(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return m.do(ctx, http.MethodPost, "/api/v1/reset", nil, nil)
}

// open streams the journal's events from now on into sink (a hub's one
// stream for every tenant).
func (m *remoteFakeMTA) open(ctx context.Context, sink func(fakemta.Event)) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	m.cancel, m.done = scancel, make(chan struct{})
	ready := make(chan error, 1)
	go m.stream(sctx, 0, sink, ready)
	select {
	case err := <-ready:
		if err != nil {
			scancel()
			<-m.done
			m.cancel = nil
			return err
		}
	case <-ctx.Done():
		scancel()
		<-m.done
		m.cancel = nil
		return ctx.Err()
	}
	return nil
}

func (m *remoteFakeMTA) call(ctx context.Context, method, path string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	return m.do(ctx, method, path, body, nil)
}

// putTenant registers a tenant or swaps its policy.
func (m *remoteFakeMTA) putTenant(ctx context.Context, name string, policyYAML []byte, connections bool) error {
	if len(bytes.TrimSpace(policyYAML)) == 0 {
		policyYAML = []byte("{}")
	}
	path := "/api/v1/tenants/" + name + "/policy"
	if connections {
		path += "?connections=true"
	}
	return m.call(ctx, http.MethodPut, path, policyYAML)
}

func (m *remoteFakeMTA) deleteTenant(ctx context.Context, name string) error {
	return m.call(ctx, http.MethodDelete, "/api/v1/tenants/"+name, nil)
}

func (m *remoteFakeMTA) wipeTenant(ctx context.Context, name string) error {
	return m.call(ctx, http.MethodPost, "/api/v1/tenants/"+name+"/wipe", nil)
}

// Stop ends the event stream; the remote fake MTA keeps running.
func (m *remoteFakeMTA) Stop(context.Context) error {
	if m.cancel != nil {
		m.cancel()
		<-m.done
		m.cancel = nil
	}
	return nil
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
