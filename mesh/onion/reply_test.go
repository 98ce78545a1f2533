package onion

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

// A message sent with a reply block: the exit reassembles it and finds
// the block; the reply it makes travels the return route, each relay
// peeling one layer, and the last hop (the sender's entry) is told to
// deliver it for the reply id. A reply is a packet like any other.
func TestReplyTravelsBack(t *testing.T) {
	fwd := newRelays(t, 3)
	back := newRelays(t, 3) // the last one is the sender's entry node
	var id [ReplyIDSize]byte
	rand.Read(id[:])
	reply, err := NewReply(routeOf(back), id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 2*FragmentData+10)
	rand.Read(msg)
	parts, err := Fragments(msg, reply, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	r := NewReassembler(ReassemblyOptions{})
	var got []byte
	var block *ReplyBlock
	for _, p := range parts {
		pkt, err := Build(routeOf(fwd), p, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		exit, _ := walk(t, fwd, pkt)
		m, b, err := r.Add("x", exit.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if m != nil {
			got, block = m, b
		}
	}
	if !bytes.Equal(got, msg) || block == nil {
		t.Fatalf("the exit got %d bytes and reply block %v", len(got), block != nil)
	}
	if block.First != back[0].fp {
		t.Fatal("the reply goes to another first relay")
	}
	pkt := block.Packet()
	if len(pkt) != Size {
		t.Fatalf("a reply of %d bytes", len(pkt))
	}
	for i, relay := range back {
		p, err := Peel(pkt, relay.key)
		if err != nil {
			t.Fatalf("reply at relay %d: %v", i, err)
		}
		if i < len(back)-1 {
			if p.Action != Forward || p.Next != back[i+1].fp {
				t.Fatalf("reply at relay %d: %v to %x", i, p.Action, p.Next[:4])
			}
			pkt = p.Packet
			continue
		}
		if p.Action != Deliver || !bytes.Equal(p.Data[:ReplyIDSize], id[:]) {
			t.Fatalf("the entry was told %v with data %x, want deliver for %x", p.Action, p.Data[:ReplyIDSize], id)
		}
	}
	// A tampered reply is caught like any packet.
	bad := block.Packet()
	bad[Size-1] ^= 1
	if _, err := Peel(bad, back[0].key); !errors.Is(err, ErrMAC) {
		t.Fatalf("a tampered reply: %v", err)
	}
	if _, err := ParseReplyBlock(block.Marshal()[:ReplyBlockSize-1]); !errors.Is(err, ErrReplyBlock) {
		t.Fatalf("a short reply block: %v", err)
	}
}

// FuzzParseReplyBlock: a block from the network (inside a reassembled
// message) is taken or refused whole; one that is taken marshals back to
// the same bytes and makes a packet of the one size.
func FuzzParseReplyBlock(f *testing.F) {
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	var fp identity.Fingerprint
	good, _ := NewReply([]Hop{{Node: fp, Key: k.PublicKey()}}, [ReplyIDSize]byte{1}, rand.Reader)
	f.Add(good.Marshal())
	f.Add(make([]byte, ReplyBlockSize))
	f.Add([]byte{Version})
	f.Fuzz(func(t *testing.T, p []byte) {
		b, err := ParseReplyBlock(p)
		if err != nil {
			if !errors.Is(err, ErrReplyBlock) {
				t.Fatalf("refused without ErrReplyBlock: %v", err)
			}
			return
		}
		if !bytes.Equal(b.Marshal(), p) {
			t.Fatal("a parsed block does not marshal back to its bytes")
		}
		if n := len(b.Packet()); n != Size {
			t.Fatalf("its reply packet is %d bytes, want %d", n, Size)
		}
	})
}

// A cover payload says drop to the exit, and carries its reply block
// when it has one; a message's fragment is never cover.
func TestCoverPayload(t *testing.T) {
	back := newRelays(t, 2)
	var id [ReplyIDSize]byte
	reply, err := NewReply(routeOf(back), id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := CoverPayload(reply)
	if len(p) != PayloadSize || !IsCover(p) {
		t.Fatal("a cover payload is not cover")
	}
	if got := CoverReply(p); got == nil || !bytes.Equal(got.Marshal(), reply.Marshal()) {
		t.Fatal("the cover's reply block did not come back")
	}
	if CoverReply(CoverPayload(nil)) != nil {
		t.Error("a cover payload without a reply has one")
	}
	frags, _ := Fragments([]byte("hello"), reply, rand.Reader)
	if IsCover(frags[0]) {
		t.Error("a message's fragment reads as cover")
	}
}
