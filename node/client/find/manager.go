package find

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/quicproquo/qpq/node/client"
)

// DefaultAutoEvery is how often Manager re-measures in auto mode.
const DefaultAutoEvery = 30 * time.Second

// Mode words of Manager.Mode.
const (
	ModeFixed = "fixed" // a node chosen by the user (or given with --node)
	ModeAuto  = "auto"  // the lowest RTT, with hysteresis
)

// ErrNoneAnswers is returned by Manager.Auto when no node found answers.
var ErrNoneAnswers = errors.New("no node found by mDNS on this machine's links answers")

// Manager is what a chat's /mesh commands need over one Session: list
// the nodes around (Peers), pin one (Server), or follow the lowest RTT
// (Auto). It owns the auto loop's goroutine; Close stops it.
type Manager struct {
	s     *client.Session
	cfg   Config
	every time.Duration
	acfg  AutoConfig

	mu     sync.Mutex // guards the fields below
	mode   string
	stop   context.CancelFunc // ends the auto loop; nil when none
	wg     sync.WaitGroup
	closed bool
}

// NewManager returns a Manager of s in fixed mode. every is the auto
// mode's measuring interval (zero: DefaultAutoEvery).
func NewManager(s *client.Session, cfg Config, acfg AutoConfig, every time.Duration) *Manager {
	if every <= 0 {
		every = DefaultAutoEvery
	}
	return &Manager{s: s, cfg: cfg, acfg: acfg, every: every, mode: ModeFixed}
}

// Mode is ModeFixed or ModeAuto.
func (m *Manager) Mode() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.mode
}

// Peers browses and measures the nodes on the local links (what `/mesh
// peers` lists, sorted as Sort does); current is the index of the node
// the session uses, -1 when none of them.
func (m *Manager) Peers(ctx context.Context) (ns []Node, current int, err error) {
	ns, err = Peers(ctx, m.cfg)
	if err != nil {
		return nil, -1, err
	}
	return ns, m.currentIn(ns), nil
}

func (m *Manager) currentIn(ns []Node) int {
	st := m.s.State()
	for i, n := range ns {
		if n.Addr == st.Node.Addr || !st.Node.Pin.IsZero() && n.FP == st.Node.Pin {
			return i
		}
	}
	return -1
}

// Server stops auto mode and switches the session to c (`/mesh server
// ADDR[#FP]`, parsed with client.ParseCandidate).
func (m *Manager) Server(c client.Candidate) {
	m.stopAuto(ModeFixed)
	m.s.SwitchTo(c)
}

// Auto measures a round now, switches the session to the best node
// (trusted first; an untrusted one goes through the session's Trust
// before the mailbox authenticates) unless the current one is within
// the hysteresis, and keeps doing so every interval until Server or
// Close. It returns the node chosen.
func (m *Manager) Auto(ctx context.Context) (Node, error) {
	ns, err := Peers(ctx, m.cfg)
	if err != nil {
		return Node{}, err
	}
	a := NewAuto(m.acfg)
	if i := m.currentIn(ns); i >= 0 && ns[i].Err == nil {
		a.Set(ns[i])
	}
	n, changed, ok := a.Pick(ns)
	if !ok {
		return Node{}, ErrNoneAnswers
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Node{}, client.ErrSessionClosed
	}
	if m.stop != nil {
		m.stop()
	}
	lctx, cancel := context.WithCancel(context.Background())
	m.mode, m.stop = ModeAuto, cancel
	m.wg.Add(1)
	m.mu.Unlock()
	if changed {
		m.s.SwitchTo(n.Candidate())
	}
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.every)
		defer t.Stop()
		for {
			select {
			case <-lctx.Done():
				return
			case <-t.C:
			}
			ns, err := Peers(lctx, m.cfg)
			if err != nil {
				continue
			}
			if n, changed, ok := a.Pick(ns); ok && changed && lctx.Err() == nil {
				m.s.SwitchTo(n.Candidate())
			}
		}
	}()
	return n, nil
}

func (m *Manager) stopAuto(mode string) {
	m.mu.Lock()
	stop := m.stop
	m.stop, m.mode = nil, mode
	m.mu.Unlock()
	if stop != nil {
		stop()
	}
	m.wg.Wait()
}

// Close stops the auto loop and waits for it (not the session). Safe to
// call twice.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	m.stopAuto(ModeFixed)
}
