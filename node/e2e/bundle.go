package e2e

import (
	"crypto/ed25519"
	"fmt"
	"math"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"
)

// MaxBundleSize bounds an encoded SignedBundle VerifyBundle accepts; a
// real one is about 1.4 KB.
const MaxBundleSize = 4 << 10

// Bundle is a verified user key bundle.
type Bundle struct {
	Identity    ed25519.PublicKey // Ed25519 identity key, 32 bytes
	KEMKey      []byte            // X-Wing public key, KEMPublicKeySize bytes
	Sequence    uint64            // a higher sequence replaces a lower one
	Lifetime    time.Duration     // remaining lifetime as published, whole seconds
	Fingerprint identity.Fingerprint
	// ReadsInner is the newest inner layout version the owner's client
	// opens, as its bundle says: SealDMWith writes no newer one. Bundles
	// of older clients do not say, and read as 1; so does 0 here.
	ReadsInner int
}

// SignedBundle returns the user's key bundle as an encoded
// schemas.SignedBundle: the UserKeyBundle as a single-segment message and
// an Ed25519 signature over bundleSigLabel || those bytes. lifetime is
// rounded down to whole seconds and must be between 1 s and 2^32-1 s.
func (u *User) SignedBundle(seq uint64, lifetime time.Duration) ([]byte, error) {
	secs := lifetime / time.Second
	if secs < 1 || secs > math.MaxUint32 {
		return nil, fmt.Errorf("bundle lifetime %v out of range 1s..%ds", lifetime, uint64(math.MaxUint32))
	}
	inner, err := encodeMessage(func(seg *capnp.Segment) error {
		b, err := schemas.NewRootUserKeyBundle(seg)
		if err != nil {
			return err
		}
		if err := b.SetIdentityKey(u.PublicKey()); err != nil {
			return err
		}
		if err := b.SetKemKey(u.kemPub); err != nil {
			return err
		}
		b.SetSequence(seq)
		b.SetLifetimeSeconds(uint32(secs))
		b.SetReadsInner(innerVersion)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("encode bundle: %w", err)
	}
	sig := ed25519.Sign(u.sign, bundleSigInput(inner))
	out, err := encodeMessage(func(seg *capnp.Segment) error {
		s, err := schemas.NewRootSignedBundle(seg)
		if err != nil {
			return err
		}
		if err := s.SetBundle(inner); err != nil {
			return err
		}
		return s.SetSignature(sig)
	})
	if err != nil {
		return nil, fmt.Errorf("encode signed bundle: %w", err)
	}
	return out, nil
}

// VerifyBundle decodes an encoded schemas.SignedBundle from anyone (a node,
// the mesh) and checks its structure, key sizes and encodings, and
// signature. It returns ErrBadBundle or ErrBadSignature (wrapped) and
// never panics. It does not say whose bundle it wanted: callers compare
// Bundle.Fingerprint with the fingerprint they asked for.
func VerifyBundle(b []byte) (Bundle, error) {
	if len(b) > MaxBundleSize {
		return Bundle{}, fmt.Errorf("%w: %d bytes, over the %d limit", ErrBadBundle, len(b), MaxBundleSize)
	}
	msg, err := schemas.Unmarshal(b)
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	sb, err := schemas.ReadRootSignedBundle(msg)
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: %v", ErrBadBundle, err)
	}
	inner, err := sb.Bundle()
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: bundle field: %v", ErrBadBundle, err)
	}
	sig, err := sb.Signature()
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: signature field: %v", ErrBadBundle, err)
	}
	if len(sig) != ed25519.SignatureSize {
		return Bundle{}, fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadBundle, len(sig), ed25519.SignatureSize)
	}
	imsg, err := schemas.Unmarshal(inner)
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: inner bundle: %v", ErrBadBundle, err)
	}
	if n := imsg.NumSegments(); n != 1 {
		return Bundle{}, fmt.Errorf("%w: inner bundle has %d segments, want 1", ErrBadBundle, n)
	}
	ukb, err := schemas.ReadRootUserKeyBundle(imsg)
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: inner bundle: %v", ErrBadBundle, err)
	}
	idKey, err := ukb.IdentityKey()
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: identityKey: %v", ErrBadBundle, err)
	}
	if len(idKey) != ed25519.PublicKeySize {
		return Bundle{}, fmt.Errorf("%w: identityKey is %d bytes, want %d", ErrBadBundle, len(idKey), ed25519.PublicKeySize)
	}
	kemKey, err := ukb.KemKey()
	if err != nil {
		return Bundle{}, fmt.Errorf("%w: kemKey: %v", ErrBadBundle, err)
	}
	if len(kemKey) != KEMPublicKeySize {
		return Bundle{}, fmt.Errorf("%w: kemKey is %d bytes, want %d", ErrBadBundle, len(kemKey), KEMPublicKeySize)
	}
	if !ed25519.Verify(ed25519.PublicKey(idKey), bundleSigInput(inner), sig) {
		return Bundle{}, fmt.Errorf("%w: bundle not signed by its identity key", ErrBadSignature)
	}
	// Only now spend time on the KEM key: the ML-KEM encapsulation key
	// check rejects encodings that are not reduced mod q.
	if _, err := dmKEM.NewPublicKey(kemKey); err != nil {
		return Bundle{}, fmt.Errorf("%w: kemKey: %v", ErrBadBundle, err)
	}
	id := append(ed25519.PublicKey(nil), idKey...)
	reads := int(ukb.ReadsInner())
	if reads == 0 { // an older client's bundle: it opens version 1 only
		reads = innerVersion1
	}
	return Bundle{
		ReadsInner:  reads,
		Identity:    id,
		KEMKey:      append([]byte(nil), kemKey...),
		Sequence:    ukb.Sequence(),
		Lifetime:    time.Duration(ukb.LifetimeSeconds()) * time.Second,
		Fingerprint: identity.FingerprintOf(id),
	}, nil
}

// Bundle returns the user's own keys in the form VerifyBundle returns
// (for sealing to oneself and for tests).
func (u *User) Bundle() Bundle {
	return Bundle{
		Identity:    u.PublicKey(),
		KEMKey:      u.KEMPublicKey(),
		Fingerprint: u.fp,
		ReadsInner:  innerVersion,
	}
}

func bundleSigInput(inner []byte) []byte {
	b := make([]byte, 0, len(bundleSigLabel)+len(inner))
	b = append(b, bundleSigLabel...)
	return append(b, inner...)
}

// encodeMessage builds a single-segment message with fill and marshals it.
func encodeMessage(fill func(*capnp.Segment) error) ([]byte, error) {
	msg, seg, err := capnp.NewMessage(capnp.SingleSegment(nil))
	if err != nil {
		return nil, err
	}
	if err := fill(seg); err != nil {
		return nil, err
	}
	return msg.Marshal()
}
