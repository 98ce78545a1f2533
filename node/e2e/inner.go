package e2e

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Inner (decrypted) layout shared by DMs and channel messages, format
// version 1. Add, never change: a new layout gets a new version byte.
//
//	size
//	1    version, 1
//	32   sender's Ed25519 public key (its fingerprint names the sender)
//	8    send time, Unix milliseconds, big endian (two's complement)
//	32   receipt secret k (DMs only; absent in channel messages)
//	64   Ed25519 signature by the sender (see dmSigInput, channelSigInput)
//	4    body length n, big endian
//	n    body
//	...  zero bytes, so the whole sealed payload is a multiple of 256
const innerVersion = 1

// Wire limits, equal to gossip.PadBlock, gossip.MaxBody and
// gossip.MaxPayload (an external test checks). They are repeated here so
// that gossip and the node may import this package, to check bundles,
// without an import cycle.
const (
	padBlock   = 256            // every sealed payload is a whole number of these
	maxBody    = 16 << 10       // the largest body SealDM and SealChannel accept
	maxPayload = maxBody + 4096 // the largest sealed payload a relay accepts
)

// Sizes of the inner header before the body.
const (
	dmHeaderLen      = 1 + ed25519.PublicKeySize + 8 + 32 + ed25519.SignatureSize + 4
	channelHeaderLen = 1 + ed25519.PublicKeySize + 8 + ed25519.SignatureSize + 4
)

// Opened is a decrypted, verified DM or channel message.
type Opened struct {
	From    identity.Fingerprint // fingerprint of FromKey: who sent it
	FromKey ed25519.PublicKey    // the sender's Ed25519 identity key
	Body    []byte
	SentAt  time.Time // the sender's clock, millisecond precision; not trusted for ordering
	// ReceiptSecret is the secret k a DM carries; revealing it deletes the
	// DM's copies on every node. Zero for channel messages.
	ReceiptSecret [32]byte
	// ReceiptTag is ReceiptTagOf(ReceiptSecret), the tag the DM's envelope
	// carries. Zero for channel messages.
	ReceiptTag [32]byte
}

// checkBody refuses bodies over maxBody.
func checkBody(body []byte) error {
	if len(body) > maxBody {
		return fmt.Errorf("%w: body is %d bytes, the limit is %d", ErrBodyTooLarge, len(body), maxBody)
	}
	return nil
}

// paddedLen returns the plaintext length to seal for content bytes of
// header and body when sealing adds overhead bytes, so that the sealed
// payload is a whole number of padBlock.
func paddedLen(content, overhead int) int {
	total := content + overhead
	total = (total + padBlock - 1) / padBlock * padBlock
	return total - overhead
}

// innerFields is what the inner layout carries besides the signature.
type innerFields struct {
	from    ed25519.PublicKey
	sentAt  int64 // Unix milliseconds
	receipt *[32]byte
	body    []byte
}

// encodeInner lays out f and its signature sig in a plaintext of length
// size (at least header plus body; the rest stays zero padding).
func encodeInner(f innerFields, sig []byte, size int) []byte {
	pt := make([]byte, size)
	pt[0] = innerVersion
	off := 1
	off += copy(pt[off:], f.from)
	binary.BigEndian.PutUint64(pt[off:], uint64(f.sentAt))
	off += 8
	if f.receipt != nil {
		off += copy(pt[off:], f.receipt[:])
	}
	off += copy(pt[off:], sig)
	binary.BigEndian.PutUint32(pt[off:], uint32(len(f.body)))
	off += 4
	copy(pt[off:], f.body)
	return pt
}

// decodeInner parses a decrypted plaintext; withReceipt selects the DM
// layout. It checks the version, the body length and the padding, but not
// the signature, which it returns.
func decodeInner(pt []byte, withReceipt bool) (innerFields, []byte, error) {
	var f innerFields
	hdr := channelHeaderLen
	if withReceipt {
		hdr = dmHeaderLen
	}
	if len(pt) < 1 {
		return f, nil, fmt.Errorf("%w: empty plaintext", ErrMalformed)
	}
	if pt[0] != innerVersion {
		return f, nil, fmt.Errorf("%w: format version %d unknown to this build (it reads %d)", ErrMalformed, pt[0], innerVersion)
	}
	if len(pt) < hdr {
		return f, nil, fmt.Errorf("%w: plaintext is %d bytes, shorter than the %d-byte header", ErrMalformed, len(pt), hdr)
	}
	off := 1
	f.from = ed25519.PublicKey(pt[off : off+ed25519.PublicKeySize])
	off += ed25519.PublicKeySize
	f.sentAt = int64(binary.BigEndian.Uint64(pt[off:]))
	off += 8
	if withReceipt {
		f.receipt = (*[32]byte)(pt[off : off+32])
		off += 32
	}
	sig := pt[off : off+ed25519.SignatureSize]
	off += ed25519.SignatureSize
	n := binary.BigEndian.Uint32(pt[off:])
	off += 4
	if n > maxBody || int(n) > len(pt)-off {
		return f, nil, fmt.Errorf("%w: body length %d does not fit (%d bytes left, limit %d)", ErrMalformed, n, len(pt)-off, maxBody)
	}
	f.body = pt[off : off+int(n)]
	for _, c := range pt[off+int(n):] {
		if c != 0 {
			return f, nil, ErrBadPadding
		}
	}
	return f, sig, nil
}

// opened builds the result from verified fields, copying out of pt.
func (f innerFields) opened() Opened {
	o := Opened{
		FromKey: append(ed25519.PublicKey(nil), f.from...),
		Body:    append([]byte{}, f.body...),
		SentAt:  time.UnixMilli(f.sentAt),
	}
	o.From = identity.FingerprintOf(o.FromKey)
	if f.receipt != nil {
		o.ReceiptSecret = *f.receipt
		o.ReceiptTag = ReceiptTagOf(o.ReceiptSecret)
	}
	return o
}
