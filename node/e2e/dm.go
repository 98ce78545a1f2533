package e2e

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Sealed DM payload (DESIGN "Privacy"), the same for inner versions 1 and 2:
//
//	enc (1120 bytes: ML-KEM-768 ciphertext, X25519 point) || ChaCha20-Poly1305 ciphertext || tag (16)
//
// HPKE base mode, X-Wing, HKDF-SHA256, ChaCha20-Poly1305; info is
// dmInfoLabel || recipient fingerprint, no additional data. The plaintext
// is the inner layout (inner.go) with the receipt secret, zero-padded so
// the whole payload is a multiple of 256 bytes. The sender's
// signature input is dmSigInput. Nothing outside the ciphertext names the
// sender, and nothing outside it shows the inner version.
const (
	dmEncLen   = mlkem.CiphertextSize768 + 32
	dmTagLen   = 16 // ChaCha20-Poly1305
	dmOverhead = dmEncLen + dmTagLen
	// dmMinPayload is the smallest sealed DM: an empty body in the
	// version-1 layout (this build's version 2 needs one block more).
	dmMinPayload = dmHeaderLenV1 + dmOverhead + (padBlock-(dmHeaderLenV1+dmOverhead)%padBlock)%padBlock
)

// Sealed is a DM ready to put in an envelope.
type Sealed struct {
	Payload []byte // the envelope payload, a multiple of 256 bytes
	// ReceiptTag goes in the envelope's receiptTag field.
	ReceiptTag [32]byte
	// ReceiptSecret is k, with ReceiptTag = ReceiptTagOf(k). The recipient
	// learns it by opening the DM; the sender may keep it to recognise the
	// receipt.
	ReceiptSecret [32]byte
}

// DMPayloadSize returns the length of the sealed payload SealDM and
// SealDMWith make for a body of n bytes.
func DMPayloadSize(n int) int { return paddedLen(dmHeaderLen+n, dmOverhead) + dmOverhead }

// SealDM seals body from one user to another (sealed sender): only the
// holder of to's KEM key can open it, and only then learns who sent it.
// sentAt is kept to the millisecond. A body over 16 KiB (gossip.MaxBody) returns
// ErrBodyTooLarge; a Bundle with bad keys returns ErrBadBundle. It is
// SealDMWith with a zero Meta: a version-2 payload whose sequence and TTL
// are unknown (0), so the reader detects no gaps around it.
func SealDM(from *User, to Bundle, body []byte, sentAt time.Time) (Sealed, error) {
	return SealDMWith(from, to, body, sentAt, Meta{})
}

// SealDMWith is SealDM that also seals, signed, the sender's sequence
// number for this recipient and the envelope's TTL (m), in the version-2
// layout. The caller keeps one counter per recipient and gives each new
// message the next number, starting at 1; a resend reuses the sealed
// payload (and so its number).
//
// A recipient whose bundle does not say it reads version 2 (an older
// client, to.ReadsInner < 2) gets version 1 without m, which every build
// opens: mixed versions keep talking, without gap detection. Both layouts
// pad to the same size, so the envelope does not tell them apart.
func SealDMWith(from *User, to Bundle, body []byte, sentAt time.Time, m Meta) (Sealed, error) {
	if err := checkBody(body); err != nil {
		return Sealed{}, err
	}
	fp, err := recipientFingerprint(to)
	if err != nil {
		return Sealed{}, err
	}
	var s Sealed
	rand.Read(s.ReceiptSecret[:])
	s.ReceiptTag = ReceiptTagOf(s.ReceiptSecret)

	f := innerFields{version: innerVersion, from: from.PublicKey(), sentAt: sentAt.UnixMilli(), receipt: &s.ReceiptSecret,
		seq: m.Seq, ttl: m.ttlSeconds(), body: body}
	if to.ReadsInner < innerVersion2 {
		f.version, f.seq, f.ttl = innerVersion1, 0, 0
	}
	sig := ed25519.Sign(from.sign, dmSigInput(fp, f))
	pt := encodeInner(f, sig, paddedLen(dmHeaderLen+len(body), dmOverhead))
	s.Payload, err = hpkeSeal(to.KEMKey, fp, pt)
	clear(pt)
	if err != nil {
		return Sealed{}, err
	}
	return s, nil
}

// recipientFingerprint checks to's keys and returns the fingerprint the
// DM is bound to.
func recipientFingerprint(to Bundle) (identity.Fingerprint, error) {
	if len(to.Identity) != ed25519.PublicKeySize {
		return identity.Fingerprint{}, fmt.Errorf("%w: recipient identity key is %d bytes, want %d", ErrBadBundle, len(to.Identity), ed25519.PublicKeySize)
	}
	if len(to.KEMKey) != KEMPublicKeySize {
		return identity.Fingerprint{}, fmt.Errorf("%w: recipient KEM key is %d bytes, want %d", ErrBadBundle, len(to.KEMKey), KEMPublicKeySize)
	}
	fp := identity.FingerprintOf(to.Identity)
	if !to.Fingerprint.IsZero() && !to.Fingerprint.Equal(fp) {
		return identity.Fingerprint{}, fmt.Errorf("%w: Fingerprint does not match Identity", ErrBadBundle)
	}
	return fp, nil
}

// hpkeSeal encrypts a padded plaintext to a KEM key bound to fp.
func hpkeSeal(kemKey []byte, fp identity.Fingerprint, pt []byte) ([]byte, error) {
	pk, err := dmKEM.NewPublicKey(kemKey)
	if err != nil {
		return nil, fmt.Errorf("%w: recipient KEM key: %v", ErrBadBundle, err)
	}
	enc, sender, err := hpke.NewSender(pk, dmKDF, dmAEAD, dmInfo(fp))
	if err != nil {
		// Encapsulation fails only for an X25519 point of small order,
		// which no honest bundle holds.
		return nil, fmt.Errorf("%w: recipient KEM key: %v", ErrBadBundle, err)
	}
	ct, err := sender.Seal(nil, pt)
	if err != nil {
		return nil, fmt.Errorf("seal DM: %w", err)
	}
	out := make([]byte, 0, len(enc)+len(ct))
	return append(append(out, enc...), ct...), nil
}

// OpenDM decrypts and verifies a sealed DM addressed to u. It returns
// ErrMalformed for an impossible length or inner structure, ErrCannotOpen
// when the payload is not for u or was tampered with, ErrBadPadding, and
// ErrBadSignature when the sender's signature does not verify (a forged
// sender). It never panics, whatever payload holds.
func OpenDM(u *User, payload []byte) (Opened, error) {
	if len(payload)%padBlock != 0 || len(payload) < dmMinPayload || len(payload) > maxPayload {
		return Opened{}, fmt.Errorf("%w: payload is %d bytes, want a multiple of %d in %d..%d",
			ErrMalformed, len(payload), padBlock, dmMinPayload, maxPayload)
	}
	r, err := hpke.NewRecipient(payload[:dmEncLen], u.kemPriv, dmKDF, dmAEAD, dmInfo(u.fp))
	if err != nil {
		return Opened{}, fmt.Errorf("%w: %v", ErrCannotOpen, err)
	}
	pt, err := r.Open(nil, payload[dmEncLen:])
	if err != nil {
		return Opened{}, ErrCannotOpen
	}
	defer clear(pt)
	f, sig, err := decodeInner(pt, true)
	if err != nil {
		return Opened{}, err
	}
	if !ed25519.Verify(f.from, dmSigInput(u.fp, f), sig) {
		return Opened{}, fmt.Errorf("%w: DM sender signature does not verify", ErrBadSignature)
	}
	return f.opened(), nil
}

func dmInfo(fp identity.Fingerprint) []byte {
	b := make([]byte, 0, len(dmInfoLabel)+len(fp))
	b = append(b, dmInfoLabel...)
	return append(b, fp[:]...)
}

// dmSigInput is what a DM's sender signs. Version 1:
// dmSigLabel || recipient fingerprint (32) || send time (8, Unix ms, big
// endian) || receipt secret (32) || body length (4, big endian) || body.
// Version 2: dmSigLabelV2 || recipient fingerprint || send time || receipt
// secret || sequence (8, big endian) || TTL seconds (4, big endian) ||
// body length || body. The labels differ, so a signature made for one
// version never verifies for the other.
func dmSigInput(to identity.Fingerprint, f innerFields) []byte {
	b := make([]byte, 0, len(dmSigLabelV2)+32+8+32+metaLen+4+len(f.body))
	if f.version >= innerVersion2 {
		b = append(b, dmSigLabelV2...)
	} else {
		b = append(b, dmSigLabel...)
	}
	b = append(b, to[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(f.sentAt))
	b = append(b, f.receipt[:]...)
	if f.version >= innerVersion2 {
		b = binary.BigEndian.AppendUint64(b, f.seq)
		b = binary.BigEndian.AppendUint32(b, f.ttl)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.body)))
	return append(b, f.body...)
}

// ReceiptTagOf returns the receipt tag for secret k: SHA-256 over
// receiptLabel and k. It is what a DM's envelope carries and what a
// receipt revealing k matches.
func ReceiptTagOf(secret [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(receiptLabel))
	h.Write(secret[:])
	var t [32]byte
	h.Sum(t[:0])
	return t
}

// CheckReceipt reports, in constant time, whether secret is the receipt
// secret for tag.
func CheckReceipt(secret, tag [32]byte) bool {
	t := ReceiptTagOf(secret)
	return subtle.ConstantTimeCompare(t[:], tag[:]) == 1
}
