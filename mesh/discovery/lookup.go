package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
)

// LookupConfig says where a one-shot Lookup looks.
type LookupConfig struct {
	// Domain is the mesh domain; zero means DefaultDomain.
	Domain string
	// Ifaces chooses interfaces as Config.Ifaces does; empty means every
	// up, multicast-capable interface that is not a loopback.
	Ifaces []*regexp.Regexp
	// Logger receives debug records; nil discards.
	Logger *slog.Logger
}

// ErrNoInterfaces is returned by Lookup when no interface qualifies.
var ErrNoInterfaces = errors.New("discovery: no up multicast interface with an address")

// Lookup sends one query round on each chosen interface, as a client
// does: it announces nothing and binds no responder socket. It returns
// every node of the domain that answered within about a second (the
// query timeout) or until ctx ends, each address once.
func Lookup(ctx context.Context, cfg LookupConfig) ([]Found, error) {
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	infos, err := scanIfaces(osIfaces{}, cfg.Ifaces)
	if err != nil {
		return nil, fmt.Errorf("discovery: list interfaces: %w", err)
	}
	if len(infos) == 0 {
		return nil, ErrNoInterfaces
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var mu sync.Mutex
	seen := map[string]bool{}
	var out []Found
	// A Discovery with no responder and no loops: only its query and
	// report are used. Its zero FP matches no node, so none is skipped as
	// itself.
	d := &Discovery{
		cfg: Config{Domain: cfg.Domain}, log: cfg.Logger, ctx: ctx,
		found: func(f Found) {
			mu.Lock()
			defer mu.Unlock()
			if k := f.FP.String() + " " + f.Addr; !seen[k] && len(out) < maxLookup {
				seen[k] = true
				out = append(out, f)
			}
		},
	}
	var wg sync.WaitGroup
	for _, info := range infos {
		wg.Go(func() { d.query(info) })
	}
	wg.Wait()
	if len(out) == 0 && ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return out, nil
}

// maxLookup bounds what one Lookup returns.
const maxLookup = 64
