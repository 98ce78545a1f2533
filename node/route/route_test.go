package route

import (
	"crypto/ecdh"
	"crypto/rand"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/descriptor"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/onion"
	"github.com/quicproquo/qpq/schemas"
)

func signed(t *testing.T, id *identity.Node, version uint8, seq uint64) (descriptor.Descriptor, *ecdh.PrivateKey) {
	t.Helper()
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	b, err := descriptor.SignOnion(id, descriptor.Onion{Key: k.PublicKey(), Epoch: 9, Version: version}, []string{"127.0.0.1:1"}, "qpq", seq, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d, err := descriptor.Verify(b)
	if err != nil {
		t.Fatal(err)
	}
	return d, k
}

// The cache keeps relaying nodes only, a newer descriptor replaces an
// older one and keeps its first-seen time, and Pick never repeats a
// relay, never takes an excluded one and prefers the longest known.
func TestCacheAndPick(t *testing.T) {
	c := NewCache()
	t0 := time.Unix(1000, 0)
	var ids []*identity.Node
	for i := range 8 {
		id, _ := identity.NewNode()
		ids = append(ids, id)
		d, _ := signed(t, id, onion.Version, 1)
		c.Add([]descriptor.Descriptor{d}, t0.Add(time.Duration(i)*time.Hour))
	}
	old, _ := identity.NewNode()
	d, _ := signed(t, old, 0, 1)
	if n := c.Add([]descriptor.Descriptor{d}, t0); n != 0 || len(c.Relays()) != 8 {
		t.Fatalf("a node that does not relay was added (%d, %d relays)", n, len(c.Relays()))
	}
	newer, _ := signed(t, ids[0], onion.Version, 2)
	c.Add([]descriptor.Descriptor{newer}, t0.Add(100*time.Hour))
	for _, r := range c.Relays() {
		if r.FP == ids[0].Fingerprint() && (r.Seq != 2 || !r.FirstSeen.Equal(t0)) {
			t.Fatalf("the newer descriptor: seq %d first seen %v", r.Seq, r.FirstSeen)
		}
	}
	rnd := mrand.New(mrand.NewPCG(1, 2))
	entry := ids[1].Fingerprint()
	for range 200 {
		route, err := Pick(c.Relays(), 3, []identity.Fingerprint{entry}, rnd)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[identity.Fingerprint]bool{}
		for _, r := range route {
			if seen[r.FP] || r.FP == entry {
				t.Fatalf("route %v repeats a relay or takes the entry", route)
			}
			seen[r.FP] = true
			// Usable (the entry, first seen at 1 h, left out): 0, 2, 3,
			// 4, 5, 6 and 7 h; the pool is the oldest four.
			if r.FirstSeen.After(t0.Add(4 * time.Hour)) {
				t.Fatalf("picked a relay first seen %v, among the newest half", r.FirstSeen.Sub(t0))
			}
		}
	}
	if _, err := Pick(c.Relays()[:2], 3, nil, rnd); err == nil {
		t.Fatal("a route of 3 from 2 relays")
	}
}

// The packets of an envelope carry it through the route: peeled by each
// relay in turn, the exit reassembles the very envelope.
func TestPacketsCarryTheEnvelope(t *testing.T) {
	var route []Relay
	var keys []*ecdh.PrivateKey
	for range 3 {
		id, _ := identity.NewNode()
		d, k := signed(t, id, onion.Version, 1)
		r, err := FromDescriptor(d)
		if err != nil {
			t.Fatal(err)
		}
		route, keys = append(route, r), append(keys, k)
	}
	env := gossip.Envelope{Kind: schemas.Envelope_Kind_dm, Destination: make([]byte, 32), ReceiptTag: make([]byte, 32), Payload: make([]byte, 17920), TTLSeconds: 60, HopLimit: 8}
	rand.Read(env.Payload)
	env.ID = gossip.ComputeID(env.Kind, env.Destination, env.ReceiptTag, env.Payload)
	pkts, err := Packets(env, route, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := onion.NewReassembler(onion.ReassemblyOptions{})
	var got []byte
	for _, pkt := range pkts {
		for i, k := range keys {
			p, err := onion.Peel(pkt, k)
			if err != nil {
				t.Fatalf("relay %d: %v", i, err)
			}
			if i < len(keys)-1 {
				pkt = p.Packet
				continue
			}
			if m, _, err := r.Add("x", p.Payload); err != nil {
				t.Fatal(err)
			} else if m != nil {
				got = m
			}
		}
	}
	back, err := gossip.Unmarshal(got)
	if err != nil || back.ID != env.ID {
		t.Fatalf("the exit got %v, %v; want envelope %v (%d packets)", back.ID, err, env.ID, len(pkts))
	}
}

// The cache survives a save and a load with its first-seen times; a
// relay no node offered lately is kept but not used; damaged lines are
// skipped and counted.
func TestCacheSaveLoad(t *testing.T) {
	c := NewCache()
	t0 := time.Unix(1_000_000, 0)
	id, _ := identity.NewNode()
	d, _ := signed(t, id, onion.Version, 1)
	c.Add([]descriptor.Descriptor{d}, t0)
	c.Add([]descriptor.Descriptor{d}, t0.Add(time.Hour)) // offered again
	path := filepath.Join(t.TempDir(), "relays")
	if err := c.Save(path, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("relay-v1 garbage\n")
	f.Close()
	back, bad, err := Load(path)
	if err != nil || bad != 1 {
		t.Fatalf("load: %d bad, %v", bad, err)
	}
	rs := back.Relays()
	if len(rs) != 1 || rs[0].FP != id.Fingerprint() || !rs[0].FirstSeen.Equal(t0) || !rs[0].LastSeen.Equal(t0.Add(time.Hour)) || rs[0].Epoch != 9 {
		t.Fatalf("loaded %+v", rs)
	}
	if n := len(back.Usable(t0.Add(time.Hour + UsableFor))); n != 0 {
		t.Fatalf("%d relays usable %v after a node last offered them", n, UsableFor)
	}
	if _, _, err := Load(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Fatalf("a missing cache: %v", err)
	}
}
