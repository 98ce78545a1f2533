// Package route chooses onion routes on the sender's side and turns an
// envelope into the onion packets that carry it (mesh/onion). The client
// chooses, not its node: the entry node is not trusted either, so the
// client collects relays' signed descriptors from its nodes over time
// (Cache), checks each, and picks relays other than its entry node,
// preferring those it has known longest.
package route

import (
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
)

// DefaultHops is a route's length: three relays.
const DefaultHops = 3

// ErrNoRoute is returned when too few usable relays are known.
var ErrNoRoute = errors.New("not enough onion relays known for a route")

// Relay is a node that relays onion packets, from its checked descriptor.
type Relay struct {
	FP    identity.Fingerprint
	Key   *ecdh.PublicKey
	Epoch uint32
	Seq   uint64
	// FirstSeen is when this client first saw the node (any key).
	FirstSeen time.Time
}

// FromDescriptor is the relay a verified descriptor names; it fails for a
// node that does not relay (an older one, or relaying off).
func FromDescriptor(d descriptor.Descriptor) (Relay, error) {
	if d.OnionVersion != onion.Version {
		return Relay{}, fmt.Errorf("node %s does not relay onion packets of version %d", d.FP.Short(), onion.Version)
	}
	k, err := ecdh.X25519().NewPublicKey(d.Onion)
	if err != nil {
		return Relay{}, fmt.Errorf("node %s: onion key: %w", d.FP.Short(), err)
	}
	return Relay{FP: d.FP, Key: k, Epoch: d.OnionEpoch, Seq: d.Seq}, nil
}

// MaxCached bounds a Cache.
const MaxCached = 1024

// Cache is the relays a client has learnt, from every node it asked. A
// newer descriptor of a node replaces the older (its key rotated); its
// first-seen time stays. Safe for concurrent use.
type Cache struct {
	mu     sync.Mutex
	relays map[identity.Fingerprint]Relay
}

// NewCache returns an empty Cache.
func NewCache() *Cache { return &Cache{relays: map[identity.Fingerprint]Relay{}} }

// Add takes descriptors a node returned (verified by client.Descriptors)
// and reports how many were new or newer.
func (c *Cache) Add(descs []descriptor.Descriptor, now time.Time) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, d := range descs {
		r, err := FromDescriptor(d)
		if err != nil {
			delete(c.relays, d.FP) // it no longer relays, if it did
			continue
		}
		old, known := c.relays[d.FP]
		switch {
		case known && old.Seq >= r.Seq:
			continue
		case known:
			r.FirstSeen = old.FirstSeen
		case len(c.relays) >= MaxCached:
			continue
		default:
			r.FirstSeen = now
		}
		c.relays[d.FP] = r
		n++
	}
	return n
}

// Relays returns the relays known.
func (c *Cache) Relays() []Relay {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Relay, 0, len(c.relays))
	for _, r := range c.relays {
		out = append(out, r)
	}
	return out
}

// Forget drops a relay (it dropped packets: the client tries others).
func (c *Cache) Forget(fp identity.Fingerprint) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.relays, fp)
}

// Pick chooses n distinct relays, none in exclude (the entry node, and
// relays that failed), at random among the longest-known half of those
// left (at least n of them), so that relays that appeared lately, which
// an attacker could add by the dozen, seldom make a route.
func Pick(relays []Relay, n int, exclude []identity.Fingerprint, rnd *mrand.Rand) ([]Relay, error) {
	if n < 1 || n > onion.MaxHops {
		return nil, fmt.Errorf("route of %d relays: want 1 to %d", n, onion.MaxHops)
	}
	var ok []Relay
	for _, r := range relays {
		if !slices.Contains(exclude, r.FP) {
			ok = append(ok, r)
		}
	}
	if len(ok) < n {
		return nil, fmt.Errorf("%w: %d usable, want %d", ErrNoRoute, len(ok), n)
	}
	slices.SortFunc(ok, func(a, b Relay) int { return a.FirstSeen.Compare(b.FirstSeen) })
	pool := ok[:max(n, (len(ok)+1)/2)]
	if rnd == nil {
		rnd = mrand.New(mrand.NewPCG(mrand.Uint64(), mrand.Uint64()))
	}
	rnd.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	return slices.Clone(pool[:n]), nil
}

// Packets cuts env into the onion packets that carry it through route,
// the last relay the exit, which injects it.
func Packets(env gossip.Envelope, route []Relay) ([][]byte, error) {
	return packets(env, route, rand.Reader)
}

func packets(env gossip.Envelope, route []Relay, rnd io.Reader) ([][]byte, error) {
	msg, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("onion route: %w", err)
	}
	frags, err := onion.Fragments(msg, rnd)
	if err != nil {
		return nil, err
	}
	hops := make([]onion.Hop, len(route))
	for i, r := range route {
		hops[i] = onion.Hop{Node: r.FP, Key: r.Key, Epoch: r.Epoch}
	}
	out := make([][]byte, 0, len(frags))
	for _, f := range frags {
		pkt, err := onion.Build(hops, f, rnd)
		if err != nil {
			return nil, err
		}
		out = append(out, pkt)
	}
	return out, nil
}
