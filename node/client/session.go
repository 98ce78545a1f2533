package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
)

// Conn is one working connection of a Session: the client and the
// user's mailbox opened on it. It is replaced, never repaired.
type Conn struct {
	Client  *Client
	Mailbox *Mailbox
	// Node is the candidate this connection reached, with Pin set to the
	// key it proved (except for SessionConfig.Connect sessions).
	Node Candidate

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

// DefaultSwitchAfter is how many attempts in a row may fail on one node
// before a Session with other candidates moves on.
const DefaultSwitchAfter = 3

// SessionConfig says how a Session reaches its nodes.
type SessionConfig struct {
	// Candidates returns the nodes to use, best first. It is asked at
	// Open and again each time the session moves to another node, so it
	// may change (nodes found by mDNS, remembered ones). Nodes is a
	// static alternative; Connect a single node dialled by the caller
	// (it must pin the node's key). One of the three is required.
	Candidates func(ctx context.Context) []Candidate
	Nodes      []Candidate
	Connect    func(ctx context.Context) (*Client, error)
	// Dial dials one candidate; it must pin c.Pin when set. Nil:
	// client.Dial(ctx, c.Addr, c.Pin).
	Dial func(ctx context.Context, c Candidate) (*Client, error)
	// Trust is asked, once per session and node key, before the mailbox
	// authenticates to an untrusted candidate (Candidate.Trusted false),
	// with the key the node proved; nil accepts (trust on first use). An
	// error refuses the node for the rest of the session: the caller
	// remembers what it accepts (home.RememberNode). It may block (a
	// person confirming), bounded by the context of Open or Get.
	Trust func(ctx context.Context, c Candidate, fp identity.Fingerprint) error
	// Authenticate opens the user's mailbox on a new connection, answering
	// that connection's own challenge (typically Client.Authenticate).
	// Required.
	Authenticate func(ctx context.Context, c *Client) (*Mailbox, error)
	// SwitchAfter is how many attempts in a row may fail on one node
	// before the session moves to the next candidate; zero:
	// DefaultSwitchAfter.
	SwitchAfter int
	// Backoff spaces reconnection attempts; the zero value is 250 ms
	// doubling to 30 s, with jitter. It starts again from its minimum on
	// each move to another node, until every candidate was tried once.
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
	// OnBack once when a new connection works again; OnSwitch just before
	// OnBack when that connection is to another node than the last one
	// (after a failover or SwitchTo); OnRefused when a candidate is given
	// up for good (its key changed, or Trust refused it). Each may be nil.
	// They run on the goroutine that noticed and must not block.
	OnLost    func(err error)
	OnBack    func()
	OnSwitch  func(from, to Candidate)
	OnRefused func(c Candidate, err error)
}

// LinkState is what a Session is doing, for a status line.
type LinkState struct {
	Node     Candidate // the node in use, or being tried
	Up       bool      // a connection works
	Since    time.Time // when Up last changed
	Attempts int       // failed attempts in a row on Node
	Err      string    // the last failure, while down
}

// Word is the state in one word for a status line: "connected",
// "reconnecting" (a connection worked and was lost, or attempts failed),
// "connecting" or "no node".
func (st LinkState) Word() string {
	switch {
	case st.Up:
		return "connected"
	case st.Node.Addr == "" && st.Since.IsZero():
		return "no node"
	case st.Err != "" || st.Attempts > 0:
		return "reconnecting"
	}
	return "connecting"
}

// Session keeps a user's authenticated connection to one of its nodes:
// the first connection is made by Open; when one fails (the node
// restarted, the network dropped), the next Get redials with backoff and
// jitter and authenticates again, moving to the next candidate after
// SwitchAfter failures, until its context ends. A node whose key changed
// is never used again; with no other candidate that ends the session.
type Session struct {
	cfg SessionConfig
	sem chan struct{}  // one dialler at a time; others wait for its result
	wg  sync.WaitGroup // the watchers

	mu       sync.Mutex // guards the fields below
	cur      *Conn
	down     bool // a failure was announced and no connection works yet
	closed   bool
	backoff  Backoff
	list     []Candidate // the order tried; list[idx] is tried next
	idx      int
	fails    int                             // failed attempts in a row on list[idx]
	moves    int                             // moves since the last success
	prefer   *Candidate                      // chosen by SwitchTo: first in every list
	learned  map[string]identity.Fingerprint // address: key proved in this session
	accepted map[string]bool                 // address#key accepted by Trust
	refused  map[string]bool                 // addresses given up for good
	last     Candidate                       // node of the last working connection
	gen      int                             // raised by SwitchTo: attempts begun before are stale
	state    LinkState
}

// ErrSessionClosed is returned by Get after Close.
var ErrSessionClosed = errors.New("session closed")

// Open makes the session's first connection, trying each candidate once
// in order; when none works the failure is returned (a node that was
// never reached is not retried).
func Open(ctx context.Context, cfg SessionConfig) (*Session, error) {
	s, list, err := newSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	var errs []error
	for i, cand := range list {
		c, err := s.attempt(ctx, cand)
		if err != nil {
			if ctx.Err() != nil || len(list) == 1 {
				return nil, err
			}
			if refusal(err) {
				s.refuse(cand, err)
			}
			errs = append(errs, err)
			continue
		}
		s.list, s.idx, s.cur, s.last = list, i, c, c.Node
		s.state = LinkState{Node: c.Node, Up: true, Since: time.Now()}
		s.watch(c)
		return s, nil
	}
	return nil, fmt.Errorf("no node of %d worked: %w", len(list), errors.Join(errs...))
}

// newSession fills cfg's defaults and returns a session that has not
// connected yet, with its first candidate list (Open and Start).
func newSession(ctx context.Context, cfg SessionConfig) (*Session, []Candidate, error) {
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = 10 * time.Second
	}
	if cfg.ProbeInterval == 0 {
		cfg.ProbeInterval = 10 * time.Second
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = 5 * time.Second
	}
	if cfg.SwitchAfter <= 0 {
		cfg.SwitchAfter = DefaultSwitchAfter
	}
	if cfg.Candidates == nil && len(cfg.Nodes) > 0 {
		cfg.Candidates = Static(cfg.Nodes...)
	}
	if cfg.Candidates == nil && cfg.Connect == nil {
		return nil, nil, ErrNoCandidates
	}
	s := &Session{
		cfg: cfg, sem: make(chan struct{}, 1), backoff: cfg.Backoff,
		learned: map[string]identity.Fingerprint{}, accepted: map[string]bool{}, refused: map[string]bool{},
	}
	list := s.candidates(ctx)
	if len(list) == 0 {
		return nil, nil, ErrNoCandidates
	}
	return s, list, nil
}

// candidates asks the provider for the current list, with the node chosen
// by SwitchTo first and the refused ones left out.
func (s *Session) candidates(ctx context.Context) []Candidate {
	if s.cfg.Candidates == nil {
		return []Candidate{{Trusted: true}} // Connect: one node the caller dials
	}
	got := s.cfg.Candidates(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Candidate
	if s.prefer != nil && !s.refused[s.prefer.Addr] {
		out = append(out, *s.prefer)
	}
	for _, c := range got {
		if s.refused[c.Addr] || c.Addr == "" {
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o.Addr == c.Addr
		}
		if !dup {
			out = append(out, c)
		}
	}
	return out
}

// refusal reports whether err means a node must not be used again.
func refusal(err error) bool {
	return errors.Is(err, link.ErrFingerprintMismatch) || errors.Is(err, ErrNotTrusted)
}

func (s *Session) refuse(c Candidate, err error) { s.refuseIn(-1, c, err) }

// refuseIn is refuse for an attempt begun at generation gen (-1: any);
// an attempt made stale by SwitchTo refuses nothing, since the user may
// have just confirmed that very node.
func (s *Session) refuseIn(gen int, c Candidate, err error) {
	s.mu.Lock()
	if gen >= 0 && s.gen != gen {
		s.mu.Unlock()
		return
	}
	s.refused[c.Addr] = true
	s.mu.Unlock()
	if s.cfg.OnRefused != nil {
		s.cfg.OnRefused(c, err)
	}
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

// attempt dials cand, has Trust confirm it when it is not trusted, and
// authenticates.
func (s *Session) attempt(ctx context.Context, cand Candidate) (*Conn, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	if s.cfg.Candidates == nil {
		c, err := s.cfg.Connect(actx)
		if err != nil {
			return nil, err
		}
		return s.authenticate(actx, c, cand)
	}
	s.mu.Lock()
	if fp, ok := s.learned[cand.Addr]; ok && cand.Pin.IsZero() {
		cand.Pin = fp
	}
	s.mu.Unlock()
	var c *Client
	var err error
	if s.cfg.Dial != nil {
		c, err = s.cfg.Dial(actx, cand)
	} else {
		c, err = Dial(actx, cand.Addr, cand.Pin)
	}
	if err != nil {
		return nil, err
	}
	fp := c.NodeFingerprint()
	if !cand.Pin.IsZero() && fp != cand.Pin {
		c.Close() // a Dial hook that did not pin
		return nil, fmt.Errorf("node %s: %w", cand.Addr, link.ErrFingerprintMismatch)
	}
	key := cand.Addr + "#" + fp.String()
	s.mu.Lock()
	ok := cand.Trusted || s.accepted[key]
	s.mu.Unlock()
	if !ok && s.cfg.Trust != nil {
		// A person may be asked: the outer context bounds it, not the
		// attempt's.
		if err := s.cfg.Trust(ctx, cand, fp); err != nil {
			c.Close()
			if !errors.Is(err, ErrNotTrusted) {
				err = fmt.Errorf("%w: %w", ErrNotTrusted, err)
			}
			return nil, fmt.Errorf("node %s (%s): %w", cand.Addr, fp.Short(), err)
		}
	}
	s.mu.Lock()
	s.accepted[key] = true
	s.learned[cand.Addr] = fp
	s.mu.Unlock()
	cand.Pin, cand.Trusted = fp, true
	return s.authenticate(actx, c, cand)
}

func (s *Session) authenticate(ctx context.Context, c *Client, cand Candidate) (*Conn, error) {
	mb, err := s.cfg.Authenticate(ctx, c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &Conn{Client: c, Mailbox: mb, Node: cand, stop: make(chan struct{})}, nil
}

// Get returns the working connection, reconnecting first when the last
// one failed. It returns an error only when ctx ends, the session is
// closed, or no node is left that still proves its key (and is trusted).
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
		var cand Candidate
		if len(s.list) > 0 {
			cand = s.list[s.idx%len(s.list)]
		}
		gen := s.gen
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
		c, err := s.attempt(ctx, cand)
		s.mu.Lock()
		stale := s.gen != gen
		s.mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if stale {
				continue // SwitchTo chose another node meanwhile
			}
			if err := s.failedAttempt(ctx, gen, cand, err); err != nil {
				return nil, err
			}
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.close()
			return nil, ErrSessionClosed
		}
		if s.gen != gen {
			s.mu.Unlock()
			c.close() // SwitchTo chose another node meanwhile
			continue
		}
		from := s.last
		s.cur, s.down, s.last, s.fails, s.moves = c, false, c.Node, 0, 0
		s.state = LinkState{Node: c.Node, Up: true, Since: time.Now()}
		s.backoff.Reset()
		s.watch(c)
		s.mu.Unlock()
		if from.Addr != c.Node.Addr && s.cfg.OnSwitch != nil {
			s.cfg.OnSwitch(from, c.Node)
		}
		if s.cfg.OnBack != nil {
			s.cfg.OnBack()
		}
		return c, nil
	}
}

// failedAttempt counts a failed attempt on cand, begun at generation
// gen, and moves to the next candidate when due; it returns an error when
// the session cannot go on. Once SwitchTo has run since the attempt began
// it changes nothing: its list and state are the user's choice.
func (s *Session) failedAttempt(ctx context.Context, gen int, cand Candidate, err error) error {
	if refusal(err) {
		if s.cfg.Candidates == nil {
			return fmt.Errorf("reconnect: %w", err)
		}
		s.refuseIn(gen, cand, err)
		list := s.candidates(ctx)
		if len(list) == 0 {
			return fmt.Errorf("reconnect: %w", err)
		}
		s.mu.Lock()
		if s.gen == gen {
			s.move(list, cand)
		}
		s.mu.Unlock()
		return nil
	}
	s.mu.Lock()
	if s.gen != gen {
		s.mu.Unlock()
		return nil
	}
	s.fails++
	s.state.Node, s.state.Attempts, s.state.Err = cand, s.fails, err.Error()
	due := s.fails >= s.cfg.SwitchAfter && s.cfg.Candidates != nil
	s.mu.Unlock()
	if !due {
		return nil
	}
	list := s.candidates(ctx)
	if len(list) == 0 {
		list = []Candidate{cand}
	}
	s.mu.Lock()
	if s.gen == gen {
		s.move(list, cand)
	}
	s.mu.Unlock()
	return nil
}

// move makes list the order tried and points at the candidate after
// from. Called with mu held.
func (s *Session) move(list []Candidate, from Candidate) {
	s.list, s.idx, s.fails = list, 0, 0
	for i, c := range list {
		if c.Addr == from.Addr {
			s.idx = (i + 1) % len(list)
			break
		}
	}
	if s.moves < len(list) {
		// The next node's first attempt need not wait for the last one's
		// backoff; after a full round of failures the backoff grows.
		s.backoff.Reset()
	}
	s.moves++
	s.state.Node, s.state.Attempts = list[s.idx], 0
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
	s.state.Up, s.state.Since, s.state.Err = false, time.Now(), err.Error()
	s.mu.Unlock()
	c.close()
	if announce && s.cfg.OnLost != nil {
		s.cfg.OnLost(err)
	}
}

// SwitchTo makes the session use c from now on: the working connection
// is dropped (without OnLost) and the next Get connects to c, first of
// every candidate list; when c fails, the usual failover goes on from it.
// A trusted c refused earlier is tried again (the user named it); an
// untrusted one stays refused (SwitchTo does nothing). Switching to the
// node in use does nothing.
func (s *Session) SwitchTo(c Candidate) {
	s.mu.Lock()
	if s.closed || s.cur != nil && s.cur.Node.same(c) || !c.Trusted && s.refused[c.Addr] {
		s.mu.Unlock()
		return
	}
	if c.Trusted {
		delete(s.refused, c.Addr) // the user named it
	}
	s.prefer = &c
	list := []Candidate{c}
	for _, o := range s.list {
		if o.Addr != c.Addr {
			list = append(list, o)
		}
	}
	s.list, s.idx, s.fails, s.moves = list, 0, 0, 0
	s.gen++
	s.backoff.Reset()
	old := s.cur
	s.cur, s.down = nil, true
	s.state = LinkState{Node: c, Since: time.Now(), Err: "switching"}
	s.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// State returns what the session is doing now.
func (s *Session) State() LinkState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

// Nodes returns the candidates in the order the session tries them.
func (s *Session) Nodes() []Candidate {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Candidate(nil), s.list...)
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
