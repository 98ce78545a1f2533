// Package route chooses onion routes on the sender's side and turns an
// envelope into the onion packets that carry it (mesh/onion). The client
// chooses, not its node: the entry node is not trusted either, so the
// client collects relays' signed descriptors from its nodes over time
// (Cache), checks each, and picks relays other than its entry node,
// preferring those it has known longest.
package route

import (
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
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
	// FirstSeen is when this client first saw the node (any key);
	// LastSeen when a node last offered its descriptor.
	FirstSeen, LastSeen time.Time
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

// UsableFor is how long after a node last offered a relay's descriptor
// the relay is used: a descriptor lives 2 hours, and the key it names
// rotates daily. ForgetAfter drops a relay not seen for that long.
const (
	UsableFor   = 3 * time.Hour
	ForgetAfter = 30 * 24 * time.Hour
)

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
			old.LastSeen = now
			c.relays[d.FP] = old
			continue
		case known:
			r.FirstSeen = old.FirstSeen
		case len(c.relays) >= MaxCached:
			continue
		default:
			r.FirstSeen = now
		}
		r.LastSeen = now
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

// Usable returns the relays a node offered within UsableFor of now.
func (c *Cache) Usable(now time.Time) []Relay {
	var out []Relay
	for _, r := range c.Relays() {
		if now.Sub(r.LastSeen) < UsableFor {
			out = append(out, r)
		}
	}
	return out
}

// The cache file: one line per relay,
//
//	relay-v1 FINGERPRINT KEY(base64) EPOCH SEQ FIRST-SEEN LAST-SEEN
//
// (times in Unix seconds), so that first-seen times add up over the
// client's runs and routes draw on every node it asked.
const cacheLine = "relay-v1"

// Save writes the cache, leaving out relays not seen for ForgetAfter.
func (c *Cache) Save(path string, now time.Time) error {
	var b strings.Builder
	for _, r := range c.Relays() {
		if now.Sub(r.LastSeen) > ForgetAfter {
			continue
		}
		fmt.Fprintf(&b, "%s %s %s %d %d %d %d\n", cacheLine, r.FP, base64.RawStdEncoding.EncodeToString(r.Key.Bytes()),
			r.Epoch, r.Seq, r.FirstSeen.Unix(), r.LastSeen.Unix())
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("save onion relays: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save onion relays: %w", err)
	}
	return nil
}

// Load reads a cache file written by Save; a missing file is an empty
// cache. Damaged lines are skipped; bad says how many.
func Load(path string) (c *Cache, bad int, err error) {
	c = NewCache()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, 0, nil
	}
	if err != nil {
		return c, 0, fmt.Errorf("read onion relays: %w", err)
	}
	if len(b) > MaxCached*256 {
		return c, 0, fmt.Errorf("read onion relays: %s is %d bytes, more than a cache of %d relays", path, len(b), MaxCached)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		r, err := parseCacheLine(line)
		if err != nil || len(c.relays) >= MaxCached {
			bad++
			continue
		}
		c.relays[r.FP] = r
	}
	return c, bad, nil
}

func parseCacheLine(line string) (Relay, error) {
	f := strings.Fields(line)
	if len(f) != 7 || f[0] != cacheLine {
		return Relay{}, errors.New("not a relay line")
	}
	fp, err := identity.ParseFingerprint(f[1])
	if err != nil {
		return Relay{}, err
	}
	raw, err := base64.RawStdEncoding.DecodeString(f[2])
	if err != nil {
		return Relay{}, err
	}
	key, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return Relay{}, err
	}
	var n [4]int64
	for i := range n {
		if n[i], err = strconv.ParseInt(f[3+i], 10, 64); err != nil || n[i] < 0 {
			return Relay{}, fmt.Errorf("field %d", 4+i)
		}
	}
	if n[0] > math.MaxUint32 {
		return Relay{}, errors.New("epoch")
	}
	return Relay{FP: fp, Key: key, Epoch: uint32(n[0]), Seq: uint64(n[1]), FirstSeen: time.Unix(n[2], 0), LastSeen: time.Unix(n[3], 0)}, nil
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
// the last relay the exit, which injects it; the first packet carries
// reply, if not nil, for the exit to answer with.
func Packets(env gossip.Envelope, route []Relay, reply *onion.ReplyBlock) ([][]byte, error) {
	return packets(env, route, reply, rand.Reader)
}

func hopsOf(route []Relay) []onion.Hop {
	hops := make([]onion.Hop, len(route))
	for i, r := range route {
		hops[i] = onion.Hop{Node: r.FP, Key: r.Key, Epoch: r.Epoch}
	}
	return hops
}

// Reply builds the reply block for a route: back along its relays but
// the exit, to the entry node, which hands the reply to the client
// waiting for id.
func Reply(route []Relay, entry Relay, id [onion.ReplyIDSize]byte) (*onion.ReplyBlock, error) {
	var back []Relay
	for i := len(route) - 2; i >= 0; i-- {
		back = append(back, route[i])
	}
	back = append(back, entry)
	return onion.NewReply(hopsOf(back), id, rand.Reader)
}

func packets(env gossip.Envelope, route []Relay, reply *onion.ReplyBlock, rnd io.Reader) ([][]byte, error) {
	msg, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("onion route: %w", err)
	}
	frags, err := onion.Fragments(msg, reply, rnd)
	if err != nil {
		return nil, err
	}
	hops := hopsOf(route)
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

// Conn is the entry node as a Sender uses it (client.Client).
type Conn interface {
	SendOnion(ctx context.Context, first identity.Fingerprint, pkt, replyID []byte, wait time.Duration) (bool, error)
}

// Sender carries envelopes by onion routes from one client through its
// entry node, trying another route when the exit's reply does not come.
type Sender struct {
	Cache *Cache
	// Entry is the client's node: never a relay of its routes, and the
	// end of the replies' return routes.
	Entry identity.Fingerprint
	// Hops is the route length; 0: DefaultHops.
	Hops int
	// Wait is how long an attempt waits for the exit's reply; 0: 15 s.
	Wait time.Duration
	// Attempts is how many routes are tried; 0: 3.
	Attempts int
	// Rand picks routes; nil: a fresh one.
	Rand *mrand.Rand
	// Clock, if not nil, paces the packets: each waits for a tick of it
	// (client cover traffic, see Clock).
	Clock *Clock
}

// Result is how an envelope went.
type Result struct {
	Route []identity.Fingerprint // the relays of the route that worked, or of the last tried
	// Acked: the exit replied that it stored the envelope. False with a
	// nil error: sent, with no way to know (the entry node does not
	// relay, so no reply could come back).
	Acked    bool
	Attempts int
}

func (s *Sender) tick(ctx context.Context) error {
	if s.Clock == nil {
		return nil
	}
	return s.Clock.Wait(ctx)
}

// ErrNotAcked is Send's error when no route's exit replied.
var ErrNotAcked = errors.New("no onion route's exit said it stored the message")

// Send carries env: it picks a route, sends its packets (the first one,
// with the reply block, last) and waits for the reply; without one in
// time it tries another route without the relays of the one that failed.
// The same envelope may so reach the mesh twice; stores keep it once.
func (s *Sender) Send(ctx context.Context, c Conn, env gossip.Envelope) (Result, error) {
	hops, wait, attempts := s.Hops, s.Wait, s.Attempts
	if hops == 0 {
		hops = DefaultHops
	}
	if wait == 0 {
		wait = 15 * time.Second
	}
	if attempts == 0 {
		attempts = 3
	}
	relays := s.Cache.Usable(time.Now())
	var entry *Relay
	for i := range relays {
		if relays[i].FP == s.Entry {
			entry = &relays[i]
		}
	}
	exclude := []identity.Fingerprint{s.Entry}
	var res Result
	var last error = ErrNotAcked
	for res.Attempts < attempts {
		rt, err := Pick(relays, hops, exclude, s.Rand)
		if err != nil {
			if res.Attempts == 0 {
				return res, err
			}
			return res, fmt.Errorf("%w (%d routes tried; %v)", last, res.Attempts, err)
		}
		res.Attempts++
		res.Route = res.Route[:0]
		for _, r := range rt {
			res.Route = append(res.Route, r.FP)
		}
		var id [onion.ReplyIDSize]byte
		rand.Read(id[:])
		var reply *onion.ReplyBlock
		if entry != nil {
			if reply, err = Reply(rt, *entry, id); err != nil {
				return res, err
			}
		}
		pkts, err := Packets(env, rt, reply)
		if err != nil {
			return res, err
		}
		for _, p := range pkts[1:] {
			if err := s.tick(ctx); err != nil {
				return res, err
			}
			if _, err := c.SendOnion(ctx, rt[0].FP, p, nil, 0); err != nil {
				return res, err
			}
		}
		if err := s.tick(ctx); err != nil {
			return res, err
		}
		if reply == nil {
			_, err := c.SendOnion(ctx, rt[0].FP, pkts[0], nil, 0)
			return res, err
		}
		acked, err := c.SendOnion(ctx, rt[0].FP, pkts[0], id[:], wait)
		if err != nil {
			return res, err
		}
		if acked {
			res.Acked = true
			return res, nil
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		// Some relay of the route dropped it, or is down: not again.
		exclude = append(exclude, res.Route...)
		last = ErrNotAcked
	}
	return res, last
}
