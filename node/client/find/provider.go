package find

import (
	"context"
	"sync"
	"time"

	"github.com/quicproquo/qpq/node/client"
)

// DefaultProviderTimeout bounds one browse and measurement of a Provider.
const DefaultProviderTimeout = 3 * time.Second

// Provider returns a client.SessionConfig.Candidates that answers given
// first, then the nodes found by mDNS now (trusted first, by RTT), then
// extra() (typically the remembered nodes; may be nil), each address
// once. Each call browses again, bounded by timeout (zero:
// DefaultProviderTimeout), so a session that loses its node moves to
// what is around it then. When initial is not nil the first call answers
// it without browsing (the caller just browsed).
func Provider(cfg Config, timeout time.Duration, given []client.Candidate, extra func() []client.Candidate, initial []client.Candidate) func(context.Context) []client.Candidate {
	if timeout <= 0 {
		timeout = DefaultProviderTimeout
	}
	var mu sync.Mutex
	first := initial != nil
	return func(ctx context.Context) []client.Candidate {
		mu.Lock()
		use := first
		first = false
		mu.Unlock()
		if use {
			return initial
		}
		out := append([]client.Candidate(nil), given...)
		bctx, cancel := context.WithTimeout(ctx, timeout)
		ns, err := Peers(bctx, cfg)
		cancel()
		if err == nil {
			out = merge(out, Candidates(ns))
		}
		if extra != nil {
			out = merge(out, extra())
		}
		return out
	}
}

// merge appends the candidates of more whose address is not in list yet.
func merge(list, more []client.Candidate) []client.Candidate {
	for _, c := range more {
		dup := false
		for _, o := range list {
			dup = dup || o.Addr == c.Addr
		}
		if !dup {
			list = append(list, c)
		}
	}
	return list
}
