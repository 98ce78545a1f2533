package client

import (
	"context"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Start returns a session that has not connected yet: the first Get
// dials, with the backoff and failover of a reconnection, and waits
// (bounded by its context) until a node answers. Unlike Open it works
// with no node reachable, so a client that must come up offline (the
// chat: messages are queued meanwhile) can start at once; State says
// "connecting", then "reconnecting" once attempts failed. OnSwitch is
// called before the first OnBack with a zero from.
func Start(ctx context.Context, cfg SessionConfig) (*Session, error) {
	// The defaults of Open.
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
		return nil, ErrNoCandidates
	}
	s := &Session{
		cfg: cfg, sem: make(chan struct{}, 1), backoff: cfg.Backoff,
		learned: map[string]identity.Fingerprint{}, accepted: map[string]bool{}, refused: map[string]bool{},
	}
	list := s.candidates(ctx)
	if len(list) == 0 {
		return nil, ErrNoCandidates
	}
	s.list = list
	s.state = LinkState{Node: list[0]}
	return s, nil
}
