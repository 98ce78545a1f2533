package outbox

import (
	"context"
	"errors"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
	"github.com/quicproquo/qpq/node/e2e"
)

// Transport is what a Sender needs from the node: handing over an
// envelope, and finding a recipient's key bundle. SessionTransport is the
// real one; tests may fake it.
type Transport interface {
	// Enqueue hands env to a node; nil means a node stored it (or
	// already held it).
	Enqueue(ctx context.Context, env gossip.Envelope) error
	// LookupBundle returns the verified bundle of fp; an unknown user is
	// an error matching client.ErrNoBundle.
	LookupBundle(ctx context.Context, fp identity.Fingerprint) (e2e.Bundle, error)
}

// SessionTransport sends over a client.Session: each call takes the
// session's working connection (reconnecting when needed, until ctx
// ends) and drops it when a call fails for any reason but the node's own
// answer (full, no such bundle), so the next call reconnects.
func SessionTransport(s *client.Session) Transport { return sessionTransport{s} }

type sessionTransport struct{ s *client.Session }

func (t sessionTransport) Enqueue(ctx context.Context, env gossip.Envelope) error {
	c, err := t.s.Get(ctx)
	if err != nil {
		return err
	}
	if _, err := c.Client.Enqueue(ctx, env); err != nil {
		if !errors.Is(err, client.ErrNodeFull) && ctx.Err() == nil {
			t.s.Fail(c, err)
		}
		return err
	}
	return nil
}

func (t sessionTransport) LookupBundle(ctx context.Context, fp identity.Fingerprint) (e2e.Bundle, error) {
	c, err := t.s.Get(ctx)
	if err != nil {
		return e2e.Bundle{}, err
	}
	b, err := c.Client.LookupBundle(ctx, fp)
	if err != nil && !errors.Is(err, client.ErrNoBundle) && ctx.Err() == nil {
		t.s.Fail(c, err)
	}
	return b, err
}

// callTimeout is the default bound of one call (with its reconnection).
const callTimeout = 15 * time.Second
