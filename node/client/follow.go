package client

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
)

// Handler receives what a Reader fetches. Its methods are never called
// concurrently. Each envelope is handed over at most once per Reader:
// after a reconnection the node sends again what was not acknowledged,
// and the Reader acknowledges it without asking again.
type Handler interface {
	// DM opens and shows one mailbox envelope and returns its receipt
	// secret, or nil when it cannot be opened (it stays at the node until
	// its TTL ends and is not acknowledged). An error ends the Reader.
	DM(e gossip.Envelope) (secret []byte, err error)
	// Broadcast opens and shows one message of channel i (an index into
	// ReaderConfig.Channels). An error ends the Reader.
	Broadcast(i int, e gossip.Envelope) error
	// Shown is called after each batch, before it is acknowledged, so
	// what was shown can be remembered first (a crash in between then
	// shows nothing twice).
	Shown() error
}

// ReaderConfig says what a Reader fetches.
type ReaderConfig struct {
	Channels [][32]byte    // channel ids to follow besides the mailbox
	Wait     time.Duration // long poll of each fetch when following; zero: 1 min
	Limit    int           // envelopes per fetch; zero: 256
	// CallTimeout is added to Wait for each fetch and bounds each
	// acknowledgement; zero: 15 s.
	CallTimeout time.Duration
	// StuckPause is how long to wait when a whole batch could not be
	// opened (it would come back at once); zero: 10 s.
	StuckPause time.Duration
}

// maxRemembered bounds the envelope ids a Reader remembers handing over.
const maxRemembered = 8192

// Reader fetches a user's mailbox and channels through a Session and
// hands each new envelope to a Handler once: `qpq recv` and the chat
// client both read through it.
type Reader struct {
	s   *Session
	cfg ReaderConfig
	h   Handler

	hmu   sync.Mutex  // serialises the Handler and guards the fields below
	after []gossip.ID // per channel: the newest envelope fetched (survives reconnection)
	given map[gossip.ID][]byte
	order []gossip.ID
}

// NewReader returns a Reader of s handing envelopes to h.
func NewReader(s *Session, cfg ReaderConfig, h Handler) *Reader {
	if cfg.Wait <= 0 {
		cfg.Wait = time.Minute
	}
	if cfg.Limit <= 0 {
		cfg.Limit = 256
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 15 * time.Second
	}
	if cfg.StuckPause <= 0 {
		cfg.StuckPause = 10 * time.Second
	}
	return &Reader{s: s, cfg: cfg, h: h, after: make([]gossip.ID, len(cfg.Channels)), given: map[gossip.ID][]byte{}}
}

// Drain fetches what the node holds now, mailbox first, then channels,
// and returns when nothing new is left. Errors are returned, not retried.
func (r *Reader) Drain(ctx context.Context) error {
	if err := r.mailboxLoop(ctx, false); err != nil {
		return err
	}
	return r.channelLoop(ctx, false)
}

// Follow keeps fetching until ctx ends (then it returns nil), reconnecting
// through the Session when the node goes away. It returns an error when
// the Handler fails or the Session gives up. When it returns, the Session
// is closed (closing it is what ends the long polls in progress).
func (r *Reader) Follow(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, r.s.Close)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- r.channelLoop(ctx, true) }()
	err := r.mailboxLoop(ctx, true)
	cancel()
	if cerr := <-errc; err == nil {
		err = cerr
	}
	return err
}

func (r *Reader) mailboxLoop(ctx context.Context, follow bool) error {
	wait := time.Duration(0)
	if follow {
		wait = r.cfg.Wait
	}
	for ctx.Err() == nil {
		c, err := r.s.Get(ctx)
		if err != nil {
			return quiet(ctx, err)
		}
		fctx, cancel := context.WithTimeout(ctx, wait+r.cfg.CallTimeout)
		envs, err := c.Mailbox.Fetch(fctx, r.cfg.Limit, wait)
		cancel()
		if err != nil {
			if stop, err := r.failed(ctx, c, follow, "fetch", err); stop {
				return err
			}
			continue
		}
		secrets, err := r.handDMs(envs)
		if err != nil {
			return err
		}
		if len(secrets) > 0 {
			actx, cancel := context.WithTimeout(ctx, r.cfg.CallTimeout)
			_, err := c.Mailbox.Ack(actx, secrets)
			cancel()
			if err != nil {
				// The node sends them again on the next connection; they
				// are acknowledged then without being shown again.
				if stop, err := r.failed(ctx, c, follow, "acknowledge", err); stop {
					return err
				}
				continue
			}
		}
		stuck := len(envs) > 0 && len(secrets) == 0
		if !follow && (len(envs) == 0 || stuck) {
			return nil
		}
		if stuck {
			t := time.NewTimer(r.cfg.StuckPause)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
	return nil
}

// handDMs hands over the new envelopes of a batch and returns the
// secrets of all it could open, old and new.
func (r *Reader) handDMs(envs []gossip.Envelope) ([][]byte, error) {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	var secrets [][]byte
	for _, e := range envs {
		k, ok := r.given[e.ID]
		if !ok {
			var err error
			if k, err = r.h.DM(e); err != nil {
				return nil, err
			}
			r.rememberLocked(e.ID, k)
		}
		if k != nil {
			secrets = append(secrets, k)
		}
	}
	if err := r.h.Shown(); err != nil {
		return nil, err
	}
	return secrets, nil
}

func (r *Reader) rememberLocked(id gossip.ID, secret []byte) {
	r.given[id] = secret
	r.order = append(r.order, id)
	if len(r.order) > maxRemembered {
		delete(r.given, r.order[0])
		r.order = r.order[1:]
	}
}

func (r *Reader) channelLoop(ctx context.Context, follow bool) error {
	if len(r.cfg.Channels) == 0 {
		return nil
	}
	wait := time.Duration(0)
	if follow {
		wait = r.cfg.Wait
	}
	for ctx.Err() == nil {
		c, err := r.s.Get(ctx)
		if err != nil {
			return quiet(ctx, err)
		}
		r.hmu.Lock()
		after := append([]gossip.ID(nil), r.after...)
		r.hmu.Unlock()
		fctx, cancel := context.WithTimeout(ctx, wait+r.cfg.CallTimeout)
		envs, err := c.Client.ChannelFetch(fctx, r.cfg.Channels, after, r.cfg.Limit, wait)
		cancel()
		if err != nil {
			if stop, err := r.failed(ctx, c, follow, "channel fetch", err); stop {
				return err
			}
			continue
		}
		if err := r.handBroadcasts(envs); err != nil {
			return err
		}
		if !follow && len(envs) == 0 {
			return nil
		}
	}
	return nil
}

func (r *Reader) handBroadcasts(envs []gossip.Envelope) error {
	r.hmu.Lock()
	defer r.hmu.Unlock()
	for _, e := range envs {
		idx := -1
		for i, id := range r.cfg.Channels {
			if string(id[:]) == string(e.Destination) {
				idx = i
				break
			}
		}
		if idx < 0 {
			continue // not asked for
		}
		r.after[idx] = e.ID
		if _, ok := r.given[e.ID]; ok {
			continue
		}
		if err := r.h.Broadcast(idx, e); err != nil {
			return err
		}
		r.rememberLocked(e.ID, nil)
	}
	return r.h.Shown()
}

// failed handles a call that failed on connection c: the end of ctx is a
// clean stop; without follow the error ends the read; with follow the
// connection is dropped and the loop goes on (the session reconnects).
func (r *Reader) failed(ctx context.Context, c *Conn, follow bool, what string, err error) (stop bool, _ error) {
	err = fmt.Errorf("%s: %w", what, err)
	switch {
	case ctx.Err() != nil:
		return true, nil
	case !follow:
		return true, err
	}
	r.s.Fail(c, err)
	return false, nil
}

// quiet turns the end of ctx into a clean stop.
func quiet(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
