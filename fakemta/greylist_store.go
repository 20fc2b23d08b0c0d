package fakemta

import (
	"context"
	"time"
)

// greyStore keeps greylist records. The memory store is rebuilt from the
// journal on start; the Redis store is shared by every fake MTA using it
// (one per MX machine in staging) and outlives them.
type greyStore interface {
	// check applies the greylist to k at now, atomically.
	check(ctx context.Context, gl *Greylist, k greyKey, now time.Time) (outcome string, left time.Duration, err error)
	entries(ctx context.Context) ([]GreylistEntry, error)
	wipe(ctx context.Context) error
	// replays reports whether journal replay rebuilds the store.
	replays() bool
	close() error
}

// memStore is the in-memory store: the greylistState itself.
type memStore struct{ g *greylistState }

func (m memStore) check(_ context.Context, gl *Greylist, k greyKey, now time.Time) (string, time.Duration, error) {
	o, left := m.g.check(gl, k, now)
	return o, left, nil
}

func (m memStore) entries(context.Context) ([]GreylistEntry, error) { return m.g.entries(), nil }

func (m memStore) wipe(context.Context) error { m.g.wipe(); return nil }

func (memStore) replays() bool { return true }

func (memStore) close() error { return nil }

// greyStoreTimeout bounds one store operation: a store that does not
// answer makes a 451 4.3.0, not a hung session.
const greyStoreTimeout = 3 * time.Second
