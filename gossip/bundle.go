package gossip

import (
	"encoding/binary"
	"fmt"

	"github.com/quicproquo/qpq/schemas"
)

// MaxBundle bounds a SignedBundle (keys and signature are ~1.3 KB).
const MaxBundle = 4096

// NewBundleEnvelope wraps a user's SignedBundle for the mesh: destination
// is the user's fingerprint, the payload a 4-byte length, the bundle and
// zero padding to a whole block.
func NewBundleEnvelope(userFP [32]byte, signed []byte, ttlSeconds uint32, hops uint8) (Envelope, error) {
	return NewSignedEnvelope(schemas.Envelope_Kind_bundle, userFP, signed, ttlSeconds, hops)
}

// NewSignedEnvelope wraps a self-signed record (a user's bundle, a node's
// descriptor) addressed to its owner's fingerprint: a 4-byte length, the
// record and zero padding to a whole block.
func NewSignedEnvelope(kind schemas.Envelope_Kind, owner [32]byte, signed []byte, ttlSeconds uint32, hops uint8) (Envelope, error) {
	if len(signed) == 0 || len(signed) > MaxBundle {
		return Envelope{}, fmt.Errorf("signed record is %d bytes, want 1..%d", len(signed), MaxBundle)
	}
	n := 4 + len(signed)
	payload := make([]byte, (n+PadBlock-1)/PadBlock*PadBlock)
	binary.BigEndian.PutUint32(payload, uint32(len(signed)))
	copy(payload[4:], signed)
	e := Envelope{Kind: kind, Destination: append([]byte(nil), owner[:]...), Payload: payload, TTLSeconds: ttlSeconds, HopLimit: hops}
	e.ID = ComputeID(e.Kind, e.Destination, nil, e.Payload)
	return e, nil
}

// BundleBytes returns the SignedBundle inside a bundle envelope.
func BundleBytes(e Envelope) ([]byte, error) {
	if e.Kind != schemas.Envelope_Kind_bundle {
		return nil, fmt.Errorf("%w: not a bundle envelope", ErrMalformed)
	}
	return SignedBytes(e)
}

// SignedBytes returns the record inside a bundle or descriptor envelope.
func SignedBytes(e Envelope) ([]byte, error) {
	if len(e.Payload) < 4 {
		return nil, fmt.Errorf("%w: payload too short for a signed record", ErrMalformed)
	}
	n := binary.BigEndian.Uint32(e.Payload)
	if n == 0 || n > MaxBundle || int(n) > len(e.Payload)-4 {
		return nil, fmt.Errorf("%w: bundle length %d does not fit the payload", ErrMalformed, n)
	}
	return e.Payload[4 : 4+n], nil
}
