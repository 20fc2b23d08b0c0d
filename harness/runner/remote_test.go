package runner

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/greyharness/greyharness/fakemta"
	"github.com/greyharness/greyharness/harness/profile"
)

// TestRemoteFakeMTAHonoursCtx: an API that never answers cannot hold the
// runner past its ctx (the client's own timeout is 30s).
func TestRemoteFakeMTAHonoursCtx(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	m := newRemoteFakeMTA(&profile.FakeMTARef{API: srv.URL}, nil)
	for name, call := range map[string]func(ctx context.Context) error{
		"Start":        func(ctx context.Context) error { return m.Start(ctx, func(fakemta.Event) {}) },
		"SetPolicy":    func(ctx context.Context) error { return m.SetPolicy(ctx, &fakemta.Policy{}, nil) },
		"WipeGreylist": func(ctx context.Context) error { return m.WipeGreylist(ctx) },
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		err := call(ctx)
		cancel()
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("%s took %s with a 100ms ctx", name, d)
		}
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: error %v, want the ctx's deadline", name, err)
		}
	}
}
