// Package descriptor makes and checks signed node descriptors: what a node
// says about itself (keys, addresses, mesh domain), gossiped across links
// so that nodes learn of nodes beyond one hop (peer exchange).
package descriptor

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"errors"
	"fmt"
	"regexp"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/mesh/link"
	"github.com/quicproquo/qpq/schemas"
)

// signLabel separates descriptor signatures from every other signature.
const signLabel = "qpq node descriptor v1\x00"

// Limits a received descriptor must respect.
const (
	MaxSize     = 4096
	MaxAddrs    = 8
	MaxLifetime = 7 * 24 * time.Hour
)

// ErrBad is returned for a descriptor that is malformed, forged or out of
// bounds; the message says which.
var ErrBad = errors.New("bad node descriptor")

var domainRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// IslandRE is what an island name may be: like a mesh domain.
var IslandRE = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

// MarkIsland returns the descriptor signed, received from a bridge of the
// island named island, with that island set on it; a descriptor already
// marked keeps the island it has. The signed part is untouched, so the
// result verifies as the descriptor did. The mark is deterministic: two
// bridges that carry the same descriptor from the same island make the
// same bytes, hence one envelope id.
func MarkIsland(signed []byte, island string) ([]byte, error) {
	if !IslandRE.MatchString(island) {
		return nil, fmt.Errorf("%w: island %q, want 1-32 of a-z, 0-9 and -", ErrBad, island)
	}
	d, err := Verify(signed)
	if err != nil {
		return nil, err
	}
	if d.Island != "" {
		return signed, nil
	}
	msg, err := schemas.Unmarshal(signed)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBad, err)
	}
	s, err := schemas.ReadRootSignedDescriptor(msg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBad, err)
	}
	inner, _ := s.Descriptor()
	sig, _ := s.Signature()
	return encode(func(seg *capnp.Segment) error {
		out, err := schemas.NewRootSignedDescriptor(seg)
		if err != nil {
			return err
		}
		if err := out.SetDescriptor(inner); err != nil {
			return err
		}
		if err := out.SetSignature(sig); err != nil {
			return err
		}
		return out.SetIsland(island)
	})
}

// Descriptor is a verified node descriptor.
type Descriptor struct {
	FP       identity.Fingerprint
	Identity ed25519.PublicKey
	Onion    []byte
	Addrs    []string
	Domain   string
	Seq      uint64
	Lifetime time.Duration
	// OnionEpoch is the epoch of Onion; OnionVersion the onion packet
	// version the node relays (0: none, an older node).
	OnionEpoch   uint32
	OnionVersion uint8
	// Island is the mesh island a bridge says the descriptor came from
	// (MarkIsland); empty for a descriptor of this island. It is outside
	// the signature: the bridge that carried it in sets it.
	Island string
}

// Onion is the onion key a descriptor publishes, and what the node does
// with packets for it.
type Onion struct {
	Key     *ecdh.PublicKey
	Epoch   uint32
	Version uint8 // the onion packet version relayed; 0: none
}

// Sign makes the node's SignedDescriptor with its long-term onion key and
// no onion relaying (tests, tools).
func Sign(id *identity.Node, addrs []string, domain string, seq uint64, lifetime time.Duration) ([]byte, error) {
	return SignOnion(id, Onion{Key: id.Onion.PublicKey()}, addrs, domain, seq, lifetime)
}

// SignOnion makes the node's SignedDescriptor publishing the onion key on.
func SignOnion(id *identity.Node, on Onion, addrs []string, domain string, seq uint64, lifetime time.Duration) ([]byte, error) {
	if on.Key == nil || on.Key.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("%w: no X25519 onion key", ErrBad)
	}
	if len(addrs) == 0 || len(addrs) > MaxAddrs {
		return nil, fmt.Errorf("%w: %d addresses, want 1..%d", ErrBad, len(addrs), MaxAddrs)
	}
	inner, err := encode(func(seg *capnp.Segment) error {
		d, err := schemas.NewRootNodeDescriptor(seg)
		if err != nil {
			return err
		}
		d.SetIdentityKey(id.Public())
		d.SetOnionKey(on.Key.Bytes())
		d.SetOnionEpoch(on.Epoch)
		d.SetOnionVersion(on.Version)
		l, err := d.NewAddresses(int32(len(addrs)))
		if err != nil {
			return err
		}
		for i, a := range addrs {
			l.Set(i, a)
		}
		d.SetDomain(domain)
		d.SetSequence(seq)
		d.SetLifetimeSeconds(uint32(lifetime / time.Second))
		return nil
	})
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(id.Key, append([]byte(signLabel), inner...))
	return encode(func(seg *capnp.Segment) error {
		s, err := schemas.NewRootSignedDescriptor(seg)
		if err != nil {
			return err
		}
		if err := s.SetDescriptor(inner); err != nil {
			return err
		}
		return s.SetSignature(sig)
	})
}

func encode(fill func(*capnp.Segment) error) ([]byte, error) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	if err := fill(seg); err != nil {
		return nil, err
	}
	return msg.Marshal()
}

// Verify checks a SignedDescriptor from the network: structure, bounds
// and signature.
func Verify(b []byte) (Descriptor, error) {
	if len(b) > MaxSize {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, at most %d", ErrBad, len(b), MaxSize)
	}
	msg, err := schemas.Unmarshal(b)
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	s, err := schemas.ReadRootSignedDescriptor(msg)
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	inner, err := s.Descriptor()
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	sig, err := s.Signature()
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Descriptor{}, fmt.Errorf("%w: signature missing or not %d bytes", ErrBad, ed25519.SignatureSize)
	}
	im, err := schemas.Unmarshal(inner)
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	d, err := schemas.ReadRootNodeDescriptor(im)
	if err != nil {
		return Descriptor{}, fmt.Errorf("%w: %v", ErrBad, err)
	}
	var out Descriptor
	idk, err := d.IdentityKey()
	if err != nil || len(idk) != ed25519.PublicKeySize {
		return Descriptor{}, fmt.Errorf("%w: identity key missing or not %d bytes", ErrBad, ed25519.PublicKeySize)
	}
	out.Identity = append(ed25519.PublicKey(nil), idk...)
	if !ed25519.Verify(out.Identity, append([]byte(signLabel), inner...), sig) {
		return Descriptor{}, fmt.Errorf("%w: signature does not verify", ErrBad)
	}
	out.FP = identity.FingerprintOf(out.Identity)
	on, err := d.OnionKey()
	if err != nil || len(on) != 32 {
		return Descriptor{}, fmt.Errorf("%w: onion key missing or not 32 bytes", ErrBad)
	}
	out.Onion = append([]byte(nil), on...)
	out.OnionEpoch, out.OnionVersion = d.OnionEpoch(), d.OnionVersion()
	addrs, err := d.Addresses()
	if err != nil || addrs.Len() == 0 || addrs.Len() > MaxAddrs {
		return Descriptor{}, fmt.Errorf("%w: want 1..%d addresses", ErrBad, MaxAddrs)
	}
	for i := 0; i < addrs.Len(); i++ {
		a, err := addrs.At(i)
		if err != nil {
			return Descriptor{}, fmt.Errorf("%w: address %d: %v", ErrBad, i, err)
		}
		if err := link.CheckHostPort(a); err != nil {
			return Descriptor{}, fmt.Errorf("%w: address %d: %v", ErrBad, i, err)
		}
		out.Addrs = append(out.Addrs, a)
	}
	if out.Domain, err = d.Domain(); err != nil || !domainRE.MatchString(out.Domain) {
		return Descriptor{}, fmt.Errorf("%w: domain %q", ErrBad, out.Domain)
	}
	island, err := s.Island()
	if err != nil || (island != "" && !IslandRE.MatchString(island)) {
		return Descriptor{}, fmt.Errorf("%w: island %q, want 1-32 of a-z, 0-9 and -", ErrBad, island)
	}
	out.Island = island
	out.Seq = d.Sequence()
	out.Lifetime = time.Duration(d.LifetimeSeconds()) * time.Second
	if out.Lifetime <= 0 || out.Lifetime > MaxLifetime {
		return Descriptor{}, fmt.Errorf("%w: lifetime %v, want up to %v", ErrBad, out.Lifetime, MaxLifetime)
	}
	return out, nil
}
