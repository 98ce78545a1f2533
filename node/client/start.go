package client

import (
	"context"
)

// Start returns a session that has not connected yet: the first Get
// dials, with the backoff and failover of a reconnection, and waits
// (bounded by its context) until a node answers. Unlike Open it works
// with no node reachable, so a client that must come up offline (the
// chat: messages are queued meanwhile) can start at once; State says
// "connecting", then "reconnecting" once attempts failed. OnSwitch is
// called before the first OnBack with a zero from.
func Start(ctx context.Context, cfg SessionConfig) (*Session, error) {
	s, list, err := newSession(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.list = list
	s.state = LinkState{Node: list[0]}
	return s, nil
}
