package schemas_test

import (
	"testing"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schemas"
)

// walk reads every field of every schema type from msg, the way a node
// reads what a peer sent. It must never panic, whatever msg holds.
func walk(msg *capnp.Message) {
	if h, err := schemas.ReadRootHello(msg); err == nil {
		h.Version()
		h.MinVersion()
		h.Software()
		h.Domain()
	}
	if h, err := schemas.ReadRootHealth(msg); err == nil {
		h.UptimeSeconds()
		h.Links()
	}
	if e, err := schemas.ReadRootEnvelope(msg); err == nil {
		e.Id()
		_ = e.Kind().String()
		e.Destination()
		e.TtlSeconds()
		e.HopLimit()
		e.ReceiptTag()
		e.Payload()
	}
	if d, err := schemas.ReadRootNodeDescriptor(msg); err == nil {
		d.IdentityKey()
		d.OnionKey()
		if l, err := d.Addresses(); err == nil {
			for i := 0; i < l.Len() && i < 64; i++ {
				l.At(i)
			}
		}
		d.Domain()
		d.Sequence()
		d.LifetimeSeconds()
	}
	if s, err := schemas.ReadRootSignedDescriptor(msg); err == nil {
		s.Signature()
		if inner, err := s.Descriptor(); err == nil && len(inner) < 1<<16 {
			if m, err := schemas.Unmarshal(inner); err == nil {
				schemas.ReadRootNodeDescriptor(m)
			}
		}
	}
	if b, err := schemas.ReadRootUserKeyBundle(msg); err == nil {
		b.IdentityKey()
		b.KemKey()
		b.Sequence()
		b.LifetimeSeconds()
	}
	if r, err := schemas.ReadRootHopRaise(msg); err == nil {
		walkRaise(r)
	}
	if p, err := schemas.ReadRootMeshPeer_raise_Params(msg); err == nil {
		if l, err := p.Raises(); err == nil {
			for i := 0; i < l.Len() && i < 64; i++ {
				walkRaise(l.At(i))
			}
		}
	}
	if s, err := schemas.ReadRootSignedBundle(msg); err == nil {
		s.Signature()
		if inner, err := s.Bundle(); err == nil && len(inner) < 1<<16 {
			if m, err := schemas.Unmarshal(inner); err == nil {
				schemas.ReadRootUserKeyBundle(m)
			}
		}
	}
}

func walkRaise(r schemas.HopRaise) {
	r.Id()
	r.HopLimit()
}

// seedRaise is a raise call's parameters: two entries, as a peer sends.
func seedRaise(tb testing.TB) []byte {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		tb.Fatal(err)
	}
	p, err := schemas.NewRootMeshPeer_raise_Params(seg)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := p.NewRaises(2)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range l.Len() {
		id := make([]byte, 32)
		id[0] = byte(i + 1)
		l.At(i).SetId(id)
		l.At(i).SetHopLimit(uint8(3 + i))
	}
	b, err := msg.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestRaiseRoundTrip(t *testing.T) {
	msg, err := schemas.Unmarshal(seedRaise(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := schemas.ReadRootMeshPeer_raise_Params(msg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := p.Raises()
	if err != nil || l.Len() != 2 {
		t.Fatalf("raises: %d entries, err %v", l.Len(), err)
	}
	id, _ := l.At(1).Id()
	if len(id) != 32 || id[0] != 2 || l.At(1).HopLimit() != 4 {
		t.Fatalf("raise round trip: id %x, hop limit %d", id, l.At(1).HopLimit())
	}
}

func seedDescriptor(tb testing.TB) []byte {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		tb.Fatal(err)
	}
	d, err := schemas.NewRootNodeDescriptor(seg)
	if err != nil {
		tb.Fatal(err)
	}
	d.SetIdentityKey(make([]byte, 32))
	d.SetOnionKey(make([]byte, 32))
	addrs, _ := d.NewAddresses(2)
	addrs.Set(0, "192.0.2.1:7443")
	addrs.Set(1, "[2001:db8::1]:7443")
	d.SetDomain("qpq")
	d.SetSequence(7)
	d.SetLifetimeSeconds(3600)
	b, err := msg.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestDescriptorRoundTrip(t *testing.T) {
	msg, err := capnp.Unmarshal(seedDescriptor(t))
	if err != nil {
		t.Fatal(err)
	}
	d, err := schemas.ReadRootNodeDescriptor(msg)
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := d.Addresses()
	a1, _ := addrs.At(1)
	dom, _ := d.Domain()
	if addrs.Len() != 2 || a1 != "[2001:db8::1]:7443" || dom != "qpq" || d.Sequence() != 7 {
		t.Fatalf("descriptor round trip: %d addrs, %q, %q, seq %d", addrs.Len(), a1, dom, d.Sequence())
	}
}

// FuzzDecodeMessages feeds arbitrary bytes to the message decoder and then
// reads every schema type from the result.
func FuzzDecodeMessages(f *testing.F) {
	f.Add(seedDescriptor(f))
	f.Add(seedRaise(f))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0})
	f.Add([]byte{1, 0, 0, 0, 255, 255, 255, 255, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := schemas.Unmarshal(b)
		if err != nil {
			return
		}
		walk(msg)
	})
}
