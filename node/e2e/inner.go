package e2e

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Inner (decrypted) layout shared by DMs and channel messages. Add, never
// change: a new layout gets a new version byte. This build writes version 2
// and reads versions 1 and 2.
//
//	size     version 1                   version 2
//	1        version, 1                  version, 2
//	32       sender's Ed25519 public key (its fingerprint names the sender)
//	8        send time, Unix milliseconds, big endian (two's complement)
//	32       receipt secret k (DMs only; absent in channel messages)
//	8        -                           sequence, big endian (Meta.Seq; 0 = unknown)
//	4        -                           TTL the sender gave, seconds, big endian
//	64       Ed25519 signature by the sender (see dmSigInput, channelSigInput)
//	4        body length n, big endian
//	n        body
//	...      zero bytes, so the whole sealed payload is a multiple of 256
//
// Version 2 signs the sequence and the TTL too (under its own labels,
// dmSigLabelV2 and channelSigLabelV2), so neither a relay nor another
// holder of a channel key can change them; version 1 keeps its signature
// input unchanged so payloads sealed by earlier builds still open.
const (
	innerVersion1 = 1
	innerVersion2 = 2
	innerVersion  = innerVersion2 // what SealDM and SealChannel write
)

// Signature labels of version 2. They live here rather than beside the
// version-1 labels in user.go; SignPurpose inputs start with their own
// prefix, so no purpose signature can collide with them either way.
const (
	dmSigLabelV2      = "qpq dm v2\x00"          // sender signature input prefix for a version-2 DM
	channelSigLabelV2 = "qpq channel msg v2\x00" // the same for a version-2 channel message
)

// Wire limits, equal to gossip.PadBlock, gossip.MaxBody and
// gossip.MaxPayload (an external test checks). They are repeated here so
// that gossip and the node may import this package, to check bundles,
// without an import cycle.
const (
	padBlock   = 256            // every sealed payload is a whole number of these
	maxBody    = 16 << 10       // the largest body SealDM and SealChannel accept
	maxPayload = maxBody + 4096 // the largest sealed payload a relay accepts
)

// metaLen is what version 2 adds to the header: sequence and TTL.
const metaLen = 8 + 4

// Sizes of the inner header before the body: version 1, and version 2
// (what this build writes).
const (
	dmHeaderLenV1      = 1 + ed25519.PublicKeySize + 8 + 32 + ed25519.SignatureSize + 4
	channelHeaderLenV1 = 1 + ed25519.PublicKeySize + 8 + ed25519.SignatureSize + 4
	dmHeaderLen        = dmHeaderLenV1 + metaLen
	channelHeaderLen   = channelHeaderLenV1 + metaLen
)

// Meta is what a version-2 message carries beside its body, signed by the
// sender: SealDMWith and SealChannelWith take it, Opened returns it.
type Meta struct {
	// Seq numbers the sender's messages in one conversation (a DM
	// recipient, or a channel), counting from 1, so the reader can tell a
	// message has not arrived (package node/gaps). 0 means unknown. Each
	// number is used for one message only: a resend sends the same
	// sealed payload again (readers take one number with two send times
	// for a restarted count).
	Seq uint64
	// TTL is the time to live the sender gave the envelope. It is kept in
	// whole seconds (truncated), at most math.MaxUint32; a negative TTL
	// is kept as 0, unknown.
	TTL time.Duration
}

// ttlSeconds is m.TTL as the layout stores it.
func (m Meta) ttlSeconds() uint32 {
	s := m.TTL / time.Second
	switch {
	case s <= 0:
		return 0
	case s > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(s)
}

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
	// Seq is the sender's sequence number for this conversation (Meta.Seq),
	// signed by the sender. 0 when unknown: a version-1 payload, or a
	// sender that does not count (SealDM, SealChannel).
	Seq uint64
	// TTL is the time to live the sender gave, in whole seconds, signed by
	// the sender. 0 when unknown (version 1, or not given).
	TTL time.Duration
	// Version is the inner layout version the payload used (1 or 2).
	Version int
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
	version byte // innerVersion1 or innerVersion2
	from    ed25519.PublicKey
	sentAt  int64 // Unix milliseconds
	receipt *[32]byte
	seq     uint64 // version 2 only
	ttl     uint32 // seconds, version 2 only
	body    []byte
}

// headerLen is the header length of a layout version; withReceipt selects
// the DM layout.
func headerLen(version byte, withReceipt bool) int {
	n := channelHeaderLenV1
	if withReceipt {
		n = dmHeaderLenV1
	}
	if version >= innerVersion2 {
		n += metaLen
	}
	return n
}

// encodeInner lays out f and its signature sig in a plaintext of length
// size (at least header plus body; the rest stays zero padding).
func encodeInner(f innerFields, sig []byte, size int) []byte {
	pt := make([]byte, size)
	pt[0] = f.version
	off := 1
	off += copy(pt[off:], f.from)
	binary.BigEndian.PutUint64(pt[off:], uint64(f.sentAt))
	off += 8
	if f.receipt != nil {
		off += copy(pt[off:], f.receipt[:])
	}
	if f.version >= innerVersion2 {
		binary.BigEndian.PutUint64(pt[off:], f.seq)
		off += 8
		binary.BigEndian.PutUint32(pt[off:], f.ttl)
		off += 4
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
	if len(pt) < 1 {
		return f, nil, fmt.Errorf("%w: empty plaintext", ErrMalformed)
	}
	f.version = pt[0]
	if f.version != innerVersion1 && f.version != innerVersion2 {
		return f, nil, fmt.Errorf("%w: format version %d unknown to this build (it reads %d and %d)",
			ErrMalformed, pt[0], innerVersion1, innerVersion2)
	}
	hdr := headerLen(f.version, withReceipt)
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
	if f.version >= innerVersion2 {
		f.seq = binary.BigEndian.Uint64(pt[off:])
		off += 8
		f.ttl = binary.BigEndian.Uint32(pt[off:])
		off += 4
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
		Seq:     f.seq,
		TTL:     time.Duration(f.ttl) * time.Second,
		Version: int(f.version),
	}
	o.From = identity.FingerprintOf(o.FromKey)
	if f.receipt != nil {
		o.ReceiptSecret = *f.receipt
		o.ReceiptTag = ReceiptTagOf(o.ReceiptSecret)
	}
	return o
}
