// Package identity holds the keys that say who a node or a user is: the
// Ed25519 identity key, the fingerprint derived from it, its short code for
// reading aloud, and the node's key files on disk.
package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
)

// fingerprintLabel separates fingerprint hashes from every other use of
// SHA-256 over a public key. Changing it changes every identity: never do.
const fingerprintLabel = "quicproquo fingerprint v1\x00"

// FingerprintLen is the length of a fingerprint's text form: 256 bits in
// base32 without padding.
const FingerprintLen = 52

// ShortCodeLen is how many fingerprint characters the short code shows
// (140 bits), in 7 groups of 4.
const ShortCodeLen = 28

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Fingerprint names a node or a user: SHA-256 over a domain label and the
// Ed25519 identity public key. Its zero value names nobody.
type Fingerprint [32]byte

// ErrBadFingerprint is returned by ParseFingerprint for text that is not a
// full fingerprint.
var ErrBadFingerprint = errors.New("not a fingerprint")

// FingerprintOf returns the fingerprint of an Ed25519 public key.
func FingerprintOf(pub ed25519.PublicKey) Fingerprint {
	h := sha256.New()
	h.Write([]byte(fingerprintLabel))
	h.Write(pub)
	var fp Fingerprint
	h.Sum(fp[:0])
	return fp
}

// String returns the 52-character lowercase base32 form.
func (f Fingerprint) String() string { return b32.EncodeToString(f[:]) }

// Short returns the short code: the first 28 characters in 7 groups of 4
// joined by '-', for reading aloud.
func (f Fingerprint) Short() string {
	s := f.String()[:ShortCodeLen]
	var b strings.Builder
	for i := 0; i < ShortCodeLen; i += 4 {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i : i+4])
	}
	return b.String()
}

// IsZero reports whether f is the zero value.
func (f Fingerprint) IsZero() bool { return f == Fingerprint{} }

// Equal compares in constant time.
func (f Fingerprint) Equal(o Fingerprint) bool {
	return subtle.ConstantTimeCompare(f[:], o[:]) == 1
}

// Less orders fingerprints bytewise; it decides which of two simultaneous
// connections between a pair of nodes survives.
func (f Fingerprint) Less(o Fingerprint) bool {
	for i := range f {
		if f[i] != o[i] {
			return f[i] < o[i]
		}
	}
	return false
}

// MarshalText implements encoding.TextMarshaler.
func (f Fingerprint) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	p, err := ParseFingerprint(string(b))
	if err != nil {
		return err
	}
	*f = p
	return nil
}

// ParseFingerprint parses the full 52-character form. Upper case is
// accepted (people copy from QR readers); prefixes are not: resolving a
// prefix is only safe among a user's own contacts.
func ParseFingerprint(s string) (Fingerprint, error) {
	var fp Fingerprint
	if len(s) != FingerprintLen {
		return fp, fmt.Errorf("%w: %d characters, want %d", ErrBadFingerprint, len(s), FingerprintLen)
	}
	s = strings.ToLower(s)
	n, err := b32.Decode(fp[:], []byte(s))
	if err != nil {
		return Fingerprint{}, fmt.Errorf("%w: %v", ErrBadFingerprint, err)
	}
	if n != len(fp) {
		return Fingerprint{}, fmt.Errorf("%w: decodes to %d bytes", ErrBadFingerprint, n)
	}
	// 52 characters carry 260 bits: the last 4 must be zero, or two
	// spellings would name one key.
	if fp.String() != s {
		return Fingerprint{}, fmt.Errorf("%w: non-canonical final character", ErrBadFingerprint)
	}
	return fp, nil
}
