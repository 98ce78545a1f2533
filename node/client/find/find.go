// Package find is the client's side of node discovery: it browses the
// client's own links for _quicproquo._udp.local. (mesh/discovery's
// query, announcing nothing), measures each node's round-trip time with a
// QUIC dial and health calls, and chooses a node automatically with
// hysteresis (Auto). Nodes the user already trusts (remembered in the
// home dir) come first: anyone on the same Wi-Fi can announce a node, so a
// never-seen one is only a candidate the session asks about
// (client.SessionConfig.Trust) before the mailbox authenticates to it.
package find

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/quicproquo/qpq/mesh/discovery"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/node/client"
)

// Node is a node found on the local links.
type Node struct {
	Addr    string               // host:port of its QUIC endpoint
	FP      identity.Fingerprint // from its TXT record; the dial pins it
	Iface   string               // the interface it answered on
	Trusted bool                 // the user trusts this key (Config.Trusted)
	RTT     time.Duration        // the lowest health round trip; zero when Err
	Err     error                // why RTT could not be measured
}

// Candidate is n as a session candidate: pinned to its announced key,
// trusted only when the user already trusts that key.
func (n Node) Candidate() client.Candidate {
	return client.Candidate{Addr: n.Addr, Pin: n.FP, Trusted: n.Trusted, Name: "mdns " + n.Iface}
}

// Defaults for Config's zero values.
const (
	DefaultProbeTimeout = 2 * time.Second
	DefaultPings        = 3
	DefaultParallel     = 4
)

// Config says where to look and how to measure.
type Config struct {
	// Domain is the mesh domain; zero: discovery.DefaultDomain.
	Domain string
	// Ifaces chooses the interfaces browsed (discovery.LookupConfig).
	Ifaces []*regexp.Regexp
	// Trusted reports whether the user trusts a node key (typically
	// home.Home.TrustsNode); nil trusts none.
	Trusted func(identity.Fingerprint) bool
	// ProbeTimeout bounds the dial and pings of one node.
	ProbeTimeout time.Duration
	// Pings is how many health calls are timed per node (the lowest
	// counts).
	Pings int
	// Parallel bounds the nodes measured at once.
	Parallel int
	// Lookup replaces the mDNS browse (tests); nil: discovery.Lookup.
	Lookup func(ctx context.Context) ([]discovery.Found, error)
}

func (cfg *Config) populate() {
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.Pings <= 0 {
		cfg.Pings = DefaultPings
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.Lookup == nil {
		lc := discovery.LookupConfig{Domain: cfg.Domain, Ifaces: cfg.Ifaces}
		cfg.Lookup = func(ctx context.Context) ([]discovery.Found, error) { return discovery.Lookup(ctx, lc) }
	}
}

// Browse returns the nodes that answered an mDNS query on the local
// links, without measuring them. No interface to browse is no nodes.
func Browse(ctx context.Context, cfg Config) ([]Node, error) {
	cfg.populate()
	found, err := cfg.Lookup(ctx)
	if errors.Is(err, discovery.ErrNoInterfaces) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("mdns browse: %w", err)
	}
	out := make([]Node, 0, len(found))
	for _, f := range found {
		n := Node{Addr: f.Addr, FP: f.FP, Iface: f.Iface}
		if cfg.Trusted != nil {
			n.Trusted = cfg.Trusted(f.FP)
		}
		out = append(out, n)
	}
	return out, nil
}

// Peers browses, measures every node found and returns them sorted
// (Sort): what `/mesh peers` lists.
func Peers(ctx context.Context, cfg Config) ([]Node, error) {
	ns, err := Browse(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return Measure(ctx, cfg, ns), nil
}

// Measure times each node, at most cfg.Parallel at once, and returns
// them sorted (Sort). Nothing is authenticated: a health call needs none.
func Measure(ctx context.Context, cfg Config, ns []Node) []Node {
	cfg.populate()
	out := append([]Node(nil), ns...)
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	for i := range out {
		wg.Add(1)
		go func(n *Node) {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				n.Err = ctx.Err()
				return
			}
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
			defer cancel()
			n.RTT, n.Err = RTT(pctx, n.Addr, n.FP, cfg.Pings)
		}(&out[i])
	}
	wg.Wait()
	Sort(out)
	return out
}

// RTT dials addr (pinned to fp when set) and returns the lowest of pings
// health round trips.
func RTT(ctx context.Context, addr string, fp identity.Fingerprint, pings int) (time.Duration, error) {
	c, err := client.Dial(ctx, addr, fp)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	best := time.Duration(0)
	for i := 0; i < max(pings, 1); i++ {
		start := time.Now()
		if err := c.Ping(ctx); err != nil {
			return 0, fmt.Errorf("node %s: %w", addr, err)
		}
		if d := time.Since(start); best == 0 || d < best {
			best = d
		}
	}
	return best, nil
}

// Sort orders nodes trusted first, then measured before unmeasured, then
// by RTT, then by address (stable output for equal times).
func Sort(ns []Node) {
	sort.SliceStable(ns, func(i, j int) bool {
		a, b := ns[i], ns[j]
		if a.Trusted != b.Trusted {
			return a.Trusted
		}
		if (a.Err == nil) != (b.Err == nil) {
			return a.Err == nil
		}
		if a.RTT != b.RTT {
			return a.RTT < b.RTT
		}
		return a.Addr < b.Addr
	})
}

// Candidates returns the usable nodes of ns (measured, in Sort order) as
// session candidates.
func Candidates(ns []Node) []client.Candidate {
	var out []client.Candidate
	for _, n := range ns {
		if n.Err == nil {
			out = append(out, n.Candidate())
		}
	}
	return out
}
