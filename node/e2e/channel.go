package e2e

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sealed channel payload (DESIGN "Broadcast channels"), the same for inner
// versions 1 and 2:
//
//	nonce (24, random) || XChaCha20-Poly1305 ciphertext || tag (16)
//
// The AEAD key is HKDF-SHA256(ChannelKey, info channelKeyLabel); the
// additional data is the channel id. The plaintext is the inner layout
// (inner.go) without a receipt secret, zero-padded so the whole payload is
// a multiple of 256 bytes. The sender signs channelSigInput, so
// members know who wrote each message (key holders can read, not forge
// each other).
const (
	chOverhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead
	// chMinPayload is the smallest sealed channel message (one block, in
	// either version).
	chMinPayload = channelHeaderLenV1 + chOverhead + (padBlock-(channelHeaderLenV1+chOverhead)%padBlock)%padBlock
)

// ChannelKey is a broadcast channel's 32-byte symmetric key, shared out
// of band. Whoever holds it can read and post.
type ChannelKey [32]byte

// NewChannelKey returns a random channel key.
func NewChannelKey() ChannelKey {
	var k ChannelKey
	rand.Read(k[:]) // never fails since Go 1.24
	return k
}

// ID returns the channel id envelopes are addressed to:
// SHA-256(channelIDLabel || key). It reveals nothing about the key.
func (k ChannelKey) ID() [32]byte {
	h := sha256.New()
	h.Write([]byte(channelIDLabel))
	h.Write(k[:])
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// Equal compares two keys in constant time.
func (k ChannelKey) Equal(o ChannelKey) bool { return subtle.ConstantTimeCompare(k[:], o[:]) == 1 }

// ChannelPayloadSize returns the length of the sealed payload SealChannel
// and SealChannelWith make for a body of n bytes.
func ChannelPayloadSize(n int) int {
	return paddedLen(channelHeaderLen+n, chOverhead) + chOverhead
}

func (k ChannelKey) aead() ([]byte, error) {
	key, err := hkdf.Key(sha256.New, k[:], nil, channelKeyLabel, chacha20poly1305.KeySize)
	if err != nil {
		return nil, err
	}
	return key, nil
}

// SealChannel encrypts and signs body for a channel. A body over
// 16 KiB (gossip.MaxBody) returns ErrBodyTooLarge. It is SealChannelWith
// with a zero Meta: sequence and TTL unknown (0).
func SealChannel(from *User, key ChannelKey, body []byte, sentAt time.Time) ([]byte, error) {
	return SealChannelWith(from, key, body, sentAt, Meta{})
}

// SealChannelWith is SealChannel that also seals, signed, the sender's
// sequence number in this channel and the envelope's TTL (m), in the
// version-2 layout. The caller keeps one counter per channel, starting at
// 1. Other key holders can read but not change them.
func SealChannelWith(from *User, key ChannelKey, body []byte, sentAt time.Time, m Meta) ([]byte, error) {
	if err := checkBody(body); err != nil {
		return nil, err
	}
	id := key.ID()
	f := innerFields{version: innerVersion, from: from.PublicKey(), sentAt: sentAt.UnixMilli(),
		seq: m.Seq, ttl: m.ttlSeconds(), body: body}
	sig := ed25519.Sign(from.sign, channelSigInput(id, f))
	pt := encodeInner(f, sig, paddedLen(channelHeaderLen+len(body), chOverhead))
	defer clear(pt)

	k, err := key.aead()
	if err != nil {
		return nil, fmt.Errorf("seal channel message: %w", err)
	}
	defer clear(k)
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, fmt.Errorf("seal channel message: %w", err)
	}
	out := make([]byte, chacha20poly1305.NonceSizeX, chacha20poly1305.NonceSizeX+len(pt)+chacha20poly1305.Overhead)
	rand.Read(out)
	return aead.Seal(out, out, pt, id[:]), nil
}

// OpenChannel decrypts and verifies a channel message. It returns
// ErrMalformed, ErrCannotOpen (wrong key or tampered), ErrBadPadding or
// ErrBadSignature, and never panics. Opened.ReceiptSecret and ReceiptTag
// are zero.
func OpenChannel(key ChannelKey, payload []byte) (Opened, error) {
	if len(payload)%padBlock != 0 || len(payload) < chMinPayload || len(payload) > maxPayload {
		return Opened{}, fmt.Errorf("%w: payload is %d bytes, want a multiple of %d in %d..%d",
			ErrMalformed, len(payload), padBlock, chMinPayload, maxPayload)
	}
	k, err := key.aead()
	if err != nil {
		return Opened{}, fmt.Errorf("open channel message: %w", err)
	}
	defer clear(k)
	aead, err := chacha20poly1305.NewX(k)
	if err != nil {
		return Opened{}, fmt.Errorf("open channel message: %w", err)
	}
	id := key.ID()
	nonce, ct := payload[:chacha20poly1305.NonceSizeX], payload[chacha20poly1305.NonceSizeX:]
	pt, err := aead.Open(nil, nonce, ct, id[:])
	if err != nil {
		return Opened{}, ErrCannotOpen
	}
	defer clear(pt)
	f, sig, err := decodeInner(pt, false)
	if err != nil {
		return Opened{}, err
	}
	if !ed25519.Verify(f.from, channelSigInput(id, f), sig) {
		return Opened{}, fmt.Errorf("%w: channel message sender signature does not verify", ErrBadSignature)
	}
	return f.opened(), nil
}

// channelSigInput is what a channel message's sender signs. Version 1:
// channelSigLabel || channel id (32) || send time (8, Unix ms, big endian)
// || body length (4, big endian) || body. Version 2: channelSigLabelV2 ||
// channel id || send time || sequence (8, big endian) || TTL seconds (4,
// big endian) || body length || body.
func channelSigInput(id [32]byte, f innerFields) []byte {
	b := make([]byte, 0, len(channelSigLabelV2)+32+8+metaLen+4+len(f.body))
	if f.version >= innerVersion2 {
		b = append(b, channelSigLabelV2...)
	} else {
		b = append(b, channelSigLabel...)
	}
	b = append(b, id[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(f.sentAt))
	if f.version >= innerVersion2 {
		b = binary.BigEndian.AppendUint64(b, f.seq)
		b = binary.BigEndian.AppendUint32(b, f.ttl)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.body)))
	return append(b, f.body...)
}
