package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

// FakeMTA is the relay's next hop as the runner drives it: the in-process
// fakemta.Server (localFakeMTA) or a fake MTA deployed beside a staging
// relay, driven by its control API (remoteFakeMTA). The runner calls only
// this interface.
type FakeMTA interface {
	// Start starts it with the policy last set and delivers every journal
	// event from then on to sink, in order, until Stop.
	Start(ctx context.Context, sink func(fakemta.Event)) error
	// Stop stops it; when Stop returns every event has reached sink.
	// Stopping a stopped fake MTA does nothing.
	Stop(ctx context.Context) error
	// SetPolicy replaces the policy, now if running, and for the next Start.
	SetPolicy(ctx context.Context, p *fakemta.Policy, node *yaml.Node) error
	// WipeGreylist forgets every greylist triplet.
	WipeGreylist(ctx context.Context) error
}

// newFakeMTA returns the profile's remote fake MTA when it names one, else
// an in-process one on the profile's next hop keeping its state in dir.
func newFakeMTA(p *profile.Profile, pol *fakemta.Policy, node *yaml.Node, dir string, tlsConf *tls.Config) FakeMTA {
	if p.FakeMTA != nil {
		return newRemoteFakeMTA(p.FakeMTA, node)
	}
	return &localFakeMTA{policy: pol, cfg: fakemta.Config{
		Listen: p.NextHop, StateDir: dir, TLS: tlsConf, ReadTimeout: 2 * time.Minute, Logf: func(string, ...any) {},
	}}
}

// localFakeMTA is the in-process fake MTA. Its greylist state lives in
// cfg.StateDir, so it survives a stop and start like a real greylister's.
type localFakeMTA struct {
	cfg fakemta.Config

	mu     sync.Mutex
	policy *fakemta.Policy
	srv    *fakemta.Server
	cancel func()        // ends the journal subscription
	done   chan struct{} // closed when every event reached the sink
}

func (m *localFakeMTA) Start(_ context.Context, sink func(fakemta.Event)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv != nil {
		return errors.New("the fake MTA is already running")
	}
	cfg := m.cfg
	cfg.Policy = m.policy
	srv, err := fakemta.New(cfg)
	if err != nil {
		return err
	}
	ch, cancel := srv.Journal().Subscribe()
	if err := srv.Start(); err != nil {
		cancel()
		srv.Close()
		return err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range ch {
			sink(ev)
		}
	}()
	m.srv, m.cancel, m.done = srv, cancel, done
	return nil
}

func (m *localFakeMTA) Stop(context.Context) error {
	m.mu.Lock()
	srv, cancel, done := m.srv, m.cancel, m.done
	m.srv = nil
	m.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	// Close closed the subscription after the last event: drain it.
	<-done
	cancel()
	return err
}

func (m *localFakeMTA) SetPolicy(_ context.Context, p *fakemta.Policy, _ *yaml.Node) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.policy = p
	if m.srv != nil {
		m.srv.SetPolicy(p)
	}
	return nil
}

func (m *localFakeMTA) WipeGreylist(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv == nil {
		return errors.New("the fake MTA is stopped")
	}
	m.srv.WipeGreylist()
	return nil
}

// addr is where the running fake MTA listens ("" when stopped), for tests.
func (m *localFakeMTA) addr() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.srv == nil {
		return ""
	}
	return m.srv.Addr()
}
