package onion

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"
)

// relay is a relay's onion key and fingerprint.
type relay struct {
	fp  identity.Fingerprint
	key *ecdh.PrivateKey
}

func newRelays(t testing.TB, n int) []relay {
	t.Helper()
	rs := make([]relay, n)
	for i := range rs {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		rand.Read(rs[i].fp[:])
		rs[i].key = k
	}
	return rs
}

func routeOf(rs []relay) []Hop {
	route := make([]Hop, len(rs))
	for i, r := range rs {
		route[i] = Hop{Node: r.fp, Key: r.key.PublicKey(), Epoch: uint32(100 + i)}
		route[i].Data[0] = byte(i + 1)
	}
	return route
}

// walk peels pkt at each relay in turn, as the mesh would, and returns
// the exit's view and every packet seen on the way.
func walk(t *testing.T, rs []relay, pkt []byte) (*Peeled, [][]byte) {
	t.Helper()
	seen := [][]byte{pkt}
	for i, r := range rs {
		if ep, err := Epoch(pkt); err != nil || ep != uint32(100+i) {
			t.Fatalf("relay %d: epoch %d, %v; want %d", i, ep, err, 100+i)
		}
		p, err := Peel(pkt, r.key)
		if err != nil {
			t.Fatalf("relay %d of %d: %v", i, len(rs), err)
		}
		if p.Data[0] != byte(i+1) {
			t.Fatalf("relay %d read the data of hop %d", i, p.Data[0]-1)
		}
		if i == len(rs)-1 {
			if p.Action != Exit {
				t.Fatalf("the last relay was told to %v", p.Action)
			}
			return p, seen
		}
		if p.Action != Forward || p.Next != rs[i+1].fp || p.NextEpoch != uint32(100+i+1) {
			t.Fatalf("relay %d: %v to %x epoch %d; want forward to relay %d", i, p.Action, p.Next[:4], p.NextEpoch, i+1)
		}
		pkt = p.Packet
		seen = append(seen, pkt)
	}
	t.Fatal("no exit")
	return nil, nil
}

// Routes of 1 to 5 relays with payloads of 0 to PayloadSize bytes: each
// relay peels one layer and learns only the next relay, the exit gets the
// payload, and every packet on the wire has the one size.
func TestRouteDeliversThePayload(t *testing.T) {
	for n := 1; n <= MaxHops; n++ {
		for _, size := range []int{0, 256, PayloadSize} {
			rs := newRelays(t, n)
			payload := make([]byte, size)
			rand.Read(payload)
			pkt, err := Build(routeOf(rs), payload, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			exit, seen := walk(t, rs, pkt)
			if !bytes.Equal(exit.Payload[:size], payload) || !bytes.Equal(exit.Payload[size:], make([]byte, PayloadSize-size)) {
				t.Fatalf("%d relays, %d bytes: the exit got another payload", n, size)
			}
			for i, p := range seen {
				if len(p) != Size {
					t.Fatalf("%d relays: packet %d is %d bytes, want %d", n, i, len(p), Size)
				}
			}
			if Size%CellSize != 0 || Size/CellSize != CellsPerPacket {
				t.Fatalf("a packet is not %d whole cells", CellsPerPacket)
			}
		}
	}
}

// What a relay sees says nothing of where it is: the ephemeral key, the
// routing section and the payload differ at each hop, and a relay's
// routing section after its own slot is keystream, never the zeros or
// the sender's plain slots.
func TestHopsSeeUnrelatedBytes(t *testing.T) {
	rs := newRelays(t, 3)
	pkt, err := Build(routeOf(rs), []byte("hello"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, seen := walk(t, rs, pkt)
	for i := 1; i < len(seen); i++ {
		a, b := seen[i-1], seen[i]
		for _, part := range []struct {
			name     string
			from, to int
		}{{"ephemeral key", offAlpha, offRouting}, {"routing", offRouting, offMAC}, {"payload", headerSize, Size}} {
			if bytes.Equal(a[part.from:part.to], b[part.from:part.to]) {
				t.Errorf("hop %d: the %s is unchanged", i, part.name)
			}
		}
	}
	if bytes.Contains(seen[len(seen)-1], []byte("hello")) {
		t.Error("the payload is in clear before the exit")
	}
}

// One flipped bit at any position of a packet is caught by the relay
// that receives it, on the first hop and on a later one.
func TestTamperingIsCaughtAtTheNextRelay(t *testing.T) {
	rs := newRelays(t, 3)
	pkt, err := Build(routeOf(rs), []byte("payload"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Peel(pkt, rs[0].key)
	if err != nil {
		t.Fatal(err)
	}
	for hop, in := range [][]byte{pkt, p.Packet} {
		key := rs[hop].key
		step := 1
		if testing.Short() {
			step = 7
		}
		for pos := 0; pos < Size; pos += step {
			bad := append([]byte(nil), in...)
			bad[pos] ^= 1 << (pos % 8)
			if _, err := Peel(bad, key); err == nil {
				t.Fatalf("hop %d: a flipped bit at byte %d was not caught", hop, pos)
			} else if pos >= offAlpha && !errors.Is(err, ErrMAC) && !errors.Is(err, ErrKey) {
				t.Fatalf("hop %d, byte %d: %v, want a MAC or key error", hop, pos, err)
			}
		}
	}
}

// A packet is refused under another key, its replay tag is the same when
// the same packet comes again and differs between packets.
func TestWrongKeyAndReplayTag(t *testing.T) {
	rs := newRelays(t, 2)
	other := newRelays(t, 1)[0]
	pkt, err := Build(routeOf(rs), nil, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Peel(pkt, other.key); !errors.Is(err, ErrMAC) {
		t.Fatalf("peeled under another relay's key: %v", err)
	}
	a, _ := Peel(pkt, rs[0].key)
	b, _ := Peel(pkt, rs[0].key)
	pkt2, _ := Build(routeOf(rs), nil, rand.Reader)
	c, _ := Peel(pkt2, rs[0].key)
	if a.Tag != b.Tag {
		t.Error("the same packet gave two replay tags")
	}
	if a.Tag == c.Tag {
		t.Error("two packets share a replay tag")
	}
}

func TestBadInput(t *testing.T) {
	rs := newRelays(t, 1)
	if _, err := Build(nil, nil, rand.Reader); !errors.Is(err, ErrRoute) {
		t.Errorf("empty route: %v", err)
	}
	if _, err := Build(routeOf(newRelays(t, MaxHops+1)), nil, rand.Reader); !errors.Is(err, ErrRoute) {
		t.Errorf("route of %d: %v", MaxHops+1, err)
	}
	if _, err := Build(routeOf(rs), make([]byte, PayloadSize+1), rand.Reader); !errors.Is(err, ErrRoute) {
		t.Errorf("payload too long: %v", err)
	}
	if _, err := Build([]Hop{{}}, nil, rand.Reader); !errors.Is(err, ErrRoute) {
		t.Errorf("hop without key: %v", err)
	}
	if _, err := Peel(make([]byte, Size-1), rs[0].key); !errors.Is(err, ErrSize) {
		t.Errorf("short packet: %v", err)
	}
	pkt, _ := Build(routeOf(rs), nil, rand.Reader)
	pkt[0] = 9
	if _, err := Peel(pkt, rs[0].key); !errors.Is(err, ErrVersion) {
		t.Errorf("unknown version: %v", err)
	}
	zero := make([]byte, Size)
	zero[0] = Version
	if _, err := Peel(zero, rs[0].key); !errors.Is(err, ErrKey) {
		t.Errorf("all-zero ephemeral key: %v", err)
	}
}

func FuzzPeel(f *testing.F) {
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	var fp identity.Fingerprint
	good, _ := Build([]Hop{{Node: fp, Key: k.PublicKey()}}, []byte("seed"), rand.Reader)
	f.Add(good)
	f.Add(make([]byte, Size))
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		p, err := Peel(pkt, k)
		if err != nil {
			return
		}
		// Only the sender's packet passes the MAC.
		if !bytes.Equal(pkt, good) {
			t.Fatalf("a packet that is not the sender's passed the MAC: %v", p.Action)
		}
	})
}

func BenchmarkBuild3(b *testing.B) {
	route := routeOf(newRelays(b, 3))
	payload := make([]byte, 2000)
	for b.Loop() {
		if _, err := Build(route, payload, rand.Reader); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPeel(b *testing.B) {
	rs := newRelays(b, 3)
	pkt, _ := Build(routeOf(rs), make([]byte, 2000), rand.Reader)
	b.SetBytes(Size)
	for b.Loop() {
		if _, err := Peel(pkt, rs[0].key); err != nil {
			b.Fatal(err)
		}
	}
}

// A packet is also a whole number of 256-byte blocks, so it can travel
// as an envelope's payload.
func TestPacketIsWholeBlocks(t *testing.T) {
	if Size%gossip.PadBlock != 0 {
		t.Fatalf("a packet of %d bytes is not a whole number of %d-byte blocks", Size, gossip.PadBlock)
	}
}
