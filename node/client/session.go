package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/mesh/link"
)

// Conn is one working connection of a Session: the client and the
// user's mailbox opened on it. It is replaced, never repaired.
type Conn struct {
	Client  *Client
	Mailbox *Mailbox

	stop      chan struct{} // closed by close: ends the watcher
	closeOnce sync.Once
}

func (c *Conn) close() {
	c.closeOnce.Do(func() {
		close(c.stop)
		c.Mailbox.Release()
		c.Client.Close()
	})
}

// SessionConfig says how a Session reaches its node.
type SessionConfig struct {
	// Connect dials the node; it must pin the node's key (a reconnection
	// must reach the same node). Required.
	Connect func(ctx context.Context) (*Client, error)
	// Authenticate opens the user's mailbox on a new connection, answering
	// that connection's own challenge (typically Client.Authenticate).
	// Required.
	Authenticate func(ctx context.Context, c *Client) (*Mailbox, error)
	// Backoff spaces reconnection attempts; the zero value is 250 ms
	// doubling to 30 s, with jitter.
	Backoff Backoff
	// AttemptTimeout bounds one dial and authentication; zero: 10 s.
	AttemptTimeout time.Duration
	// ProbeInterval is how often a connection is probed with a health
	// call: a node that vanished without closing the connection (killed,
	// rebooted, unplugged) is noticed within ProbeInterval+ProbeTimeout
	// instead of QUIC's idle timeout. Zero: 10 s; negative: never.
	ProbeInterval time.Duration
	// ProbeTimeout bounds a probe; zero: 5 s.
	ProbeTimeout time.Duration
	// OnLost is called once when a working connection fails, with why;
	// OnBack once when a new connection works again. Either may be nil.
	// They run on the goroutine that noticed and must not block.
	OnLost func(err error)
	OnBack func()
}

// Session keeps a user's authenticated connection to one node: the first
// connection is made by Open; when one fails (the node restarted, the
// network dropped), the next Get redials with backoff and jitter and
// authenticates again, until its context ends. A changed node key is
// never retried.
type Session struct {
	cfg SessionConfig
	sem chan struct{}  // one dialler at a time; others wait for its result
	wg  sync.WaitGroup // the watchers

	mu      sync.Mutex // guards the fields below
	cur     *Conn
	down    bool // a failure was announced and no connection works yet
	closed  bool
	backoff Backoff
}

// ErrSessionClosed is returned by Get after Close.
var ErrSessionClosed = errors.New("session closed")

// Open makes the session's first connection; its failure is returned
// as it is (a node that was never reached is not retried).
func Open(ctx context.Context, cfg SessionConfig) (*Session, error) {
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 10 * time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	s := &Session{cfg: cfg, sem: make(chan struct{}, 1), backoff: cfg.Backoff}
	c, err := s.attempt(ctx)
	if err != nil {
		return nil, err
	}
	s.cur = c
	s.watch(c)
	return s, nil
}

// watch fails c as soon as its connection ends or a probe goes
// unanswered, so long polls in progress do not wait out their timeouts.
func (s *Session) watch(c *Conn) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		var tick <-chan time.Time
		if s.cfg.ProbeInterval > 0 {
			t := time.NewTicker(s.cfg.ProbeInterval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-c.stop:
				return
			case <-c.Client.Done():
				s.Fail(c, errors.New("the node closed the connection"))
				return
			case <-tick:
				ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ProbeTimeout)
				err := c.Client.Ping(ctx)
				cancel()
				if err != nil {
					s.Fail(c, err)
					return
				}
			}
		}
	}()
}

func (s *Session) attempt(ctx context.Context) (*Conn, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	c, err := s.cfg.Connect(actx)
	if err != nil {
		return nil, err
	}
	mb, err := s.cfg.Authenticate(actx, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Conn{Client: c, Mailbox: mb, stop: make(chan struct{})}, nil
}

// Get returns the working connection, reconnecting first when the last
// one failed. It returns an error only when ctx ends, the session is
// closed, or the node no longer proves its key.
func (s *Session) Get(ctx context.Context) (*Conn, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.sem }()
	for {
		s.mu.Lock()
		cur, closed, wait := s.cur, s.closed, time.Duration(0)
		if cur == nil && !closed {
			wait = s.backoff.Next()
		}
		s.mu.Unlock()
		if closed {
			return nil, ErrSessionClosed
		}
		if cur != nil {
			return cur, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		c, err := s.attempt(ctx)
		if err != nil {
			if errors.Is(err, link.ErrFingerprintMismatch) {
				return nil, fmt.Errorf("reconnect: %w", err)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.close()
			return nil, ErrSessionClosed
		}
		s.cur, s.down = c, false
		s.backoff.Reset()
		s.watch(c)
		s.mu.Unlock()
		if s.cfg.OnBack != nil {
			s.cfg.OnBack()
		}
		return c, nil
	}
}

// Fail reports that a call on c failed with err: the connection is
// dropped and the next Get reconnects. Failures of a connection already
// replaced are ignored, so two loops noticing one loss announce it once.
func (s *Session) Fail(c *Conn, err error) {
	s.mu.Lock()
	if s.cur != c || s.closed {
		s.mu.Unlock()
		return
	}
	s.cur = nil
	announce := !s.down
	s.down = true
	s.mu.Unlock()
	c.close()
	if announce && s.cfg.OnLost != nil {
		s.cfg.OnLost(err)
	}
}

// Close drops the connection and stops reconnecting; calls in progress
// on it fail. Safe to call twice.
func (s *Session) Close() {
	s.mu.Lock()
	c := s.cur
	s.cur, s.closed = nil, true
	s.mu.Unlock()
	if c != nil {
		c.close()
	}
	s.wg.Wait()
}
