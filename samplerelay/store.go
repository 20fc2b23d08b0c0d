package samplerelay

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Recipient states in the on-disk envelope.
const (
	statePending   = "pending"
	stateDeferred  = "deferred"
	stateDelivered = "delivered"
	stateBounced   = "bounced"
)

// Stuck markers (written by the no-retry and stall-visible bugs).
const (
	stuckNoRetry      = "no-retry"
	stuckStallVisible = "stall-visible"
)

// rcptState is the per-recipient delivery state kept in the envelope file.
type rcptState struct {
	Addr          string    `json:"addr"`
	State         string    `json:"state"`
	Attempts      int       `json:"attempts"`
	LastReply     string    `json:"last_reply,omitempty"` // "451 4.7.1 text"
	LastError     string    `json:"last_error,omitempty"` // network error, when there was no reply
	LastAttempt   time.Time `json:"last_attempt,omitzero"`
	NextAttempt   time.Time `json:"next_attempt,omitzero"`
	DelayNotified bool      `json:"delay_notified,omitempty"`
	// Stuck is set by the no-retry / stall-visible bugs: never retried.
	Stuck         string        `json:"stuck,omitempty"`
	StallInterval time.Duration `json:"stall_interval,omitempty"`
}

func (r *rcptState) active() bool { return r.State == statePending || r.State == stateDeferred }

// envelope is the JSON half of a queued message's file pair.
type envelope struct {
	ID         string       `json:"id"`
	Sender     string       `json:"sender"`
	Arrival    time.Time    `json:"arrival"`
	MessageID  string       `json:"message_id,omitempty"`
	HarnessID  string       `json:"harness_id,omitempty"`
	IsDSN      bool         `json:"is_dsn,omitempty"`
	Stamp      string       `json:"stamp"`
	Recipients []*rcptState `json:"recipients"`
	// Done is set (by the redeliver-after-restart bug only) on a message
	// whose recipients are all final but whose files were kept.
	Done bool `json:"done,omitempty"`
}

func (e *envelope) clone() *envelope {
	c := *e
	c.Recipients = make([]*rcptState, len(e.Recipients))
	for i, r := range e.Recipients {
		rc := *r
		c.Recipients[i] = &rc
	}
	return &c
}

func (e *envelope) activeRcpts() []*rcptState {
	var out []*rcptState
	for _, r := range e.Recipients {
		if r.active() {
			out = append(out, r)
		}
	}
	return out
}

// bootState is QueueDir/boot.json: the start-up handshake's record.
type bootState struct {
	Boot      int       `json:"boot"`
	Stamp     string    `json:"stamp"` // the stamp the queue listing accepts
	StartedAt time.Time `json:"started_at"`
}

// store is the queue directory.
type store struct {
	dir string
}

func (s *store) msgDir() string                     { return filepath.Join(s.dir, "messages") }
func (s *store) bodyPath(id string) string          { return filepath.Join(s.msgDir(), id+".eml") }
func (s *store) envPath(id string) string           { return filepath.Join(s.msgDir(), id+".json") }
func (s *store) bootPath() string                   { return filepath.Join(s.dir, "boot.json") }
func (s *store) flushGlob() string                  { return filepath.Join(s.dir, "flush-*.req") }
func (s *store) flushAck(name string) string        { return strings.TrimSuffix(name, ".req") + ".ack" }
func (s *store) init() error                        { return os.MkdirAll(s.msgDir(), 0o755) }
func newQueueID() string                            { return fmt.Sprintf("%x%s", time.Now().UnixMilli(), randHex(4)) }
func syncDir(dir string) error                      { return fsyncPath(dir) }
func (s *store) removeMsg(id string) error          { return s.removeFiles(id) }
func (s *store) readBody(id string) ([]byte, error) { return os.ReadFile(s.bodyPath(id)) }

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func fsyncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeFileSync writes path atomically (temp file, fsync, rename, fsync dir).
func writeFileSync(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		os.Remove(name)
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(name)
		return err
	}
	if err := os.Rename(name, path); err != nil {
		os.Remove(name)
		return err
	}
	return syncDir(dir)
}

// add stores a new message: body first, then the envelope, each fsync'd
// with the directory, so that a 250 after add returns means it is on disk.
func (s *store) add(env *envelope, body []byte) error {
	if err := writeFileSync(s.bodyPath(env.ID), body); err != nil {
		return fmt.Errorf("write body: %w", err)
	}
	if err := s.save(env); err != nil {
		os.Remove(s.bodyPath(env.ID))
		return err
	}
	return nil
}

func (s *store) save(env *envelope) error {
	data, err := json.MarshalIndent(env, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileSync(s.envPath(env.ID), append(data, '\n')); err != nil {
		return fmt.Errorf("write envelope: %w", err)
	}
	return nil
}

func (s *store) removeFiles(id string) error {
	err1 := os.Remove(s.envPath(id))
	err2 := os.Remove(s.bodyPath(id))
	if errors.Is(err1, os.ErrNotExist) {
		err1 = nil
	}
	if errors.Is(err2, os.ErrNotExist) {
		err2 = nil
	}
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	return syncDir(s.msgDir())
}

// load reads every envelope; an envelope without a body is skipped. With
// cleanup (the relay at start-up, never a listing) leftovers of a crash are
// removed: temp files and bodies without an envelope (never answered 250).
func (s *store) load(cleanup bool) ([]*envelope, []error) {
	ents, err := os.ReadDir(s.msgDir())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var out []*envelope
	var errs []error
	for _, de := range ents {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, ".tmp-"):
			if cleanup {
				os.Remove(filepath.Join(s.msgDir(), name))
			}
		case strings.HasSuffix(name, ".eml"):
			if !cleanup {
				continue
			}
			id := strings.TrimSuffix(name, ".eml")
			if _, err := os.Stat(s.envPath(id)); errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(s.msgDir(), name))
			}
		case strings.HasSuffix(name, ".json"):
			data, err := os.ReadFile(filepath.Join(s.msgDir(), name))
			if errors.Is(err, os.ErrNotExist) {
				continue // finished and removed since ReadDir
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			var env envelope
			if err := json.Unmarshal(data, &env); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				continue
			}
			if env.ID == "" {
				env.ID = strings.TrimSuffix(name, ".json")
			}
			if _, err := os.Stat(s.bodyPath(env.ID)); err != nil {
				if !cleanup && errors.Is(err, os.ErrNotExist) {
					continue // being removed right now
				}
				errs = append(errs, fmt.Errorf("%s: body missing", env.ID))
				continue
			}
			out = append(out, &env)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Arrival.Before(out[j].Arrival) })
	return out, errs
}

func (s *store) readBoot() (*bootState, error) {
	data, err := os.ReadFile(s.bootPath())
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var b bootState
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", s.bootPath(), err)
	}
	return &b, nil
}

func (s *store) writeBoot(b *bootState) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return writeFileSync(s.bootPath(), append(data, '\n'))
}

// wipe removes every queued message (the lose-queue-on-restart bug).
func (s *store) wipe() error {
	if err := os.RemoveAll(s.msgDir()); err != nil {
		return err
	}
	if err := os.MkdirAll(s.msgDir(), 0o755); err != nil {
		return err
	}
	return syncDir(s.dir)
}

// headerFields reads Message-ID and X-Greyharness-Id from a message and
// returns its header block (up to and including the blank line).
func headerFields(body []byte) (msgID, harnessID string, headers []byte) {
	end := bytes.Index(body, []byte("\r\n\r\n"))
	sepLen := 4
	if lf := bytes.Index(body, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
		end, sepLen = lf, 2
	}
	if end < 0 {
		headers = body
	} else {
		headers = body[:end+sepLen]
	}
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(append(append([]byte{}, headers...), "\r\n"...))))
	h, _ := r.ReadMIMEHeader()
	msgID = strings.Trim(strings.TrimSpace(h.Get("Message-Id")), "<>")
	harnessID = strings.TrimSpace(h.Get("X-Greyharness-Id"))
	return msgID, harnessID, headers
}
