// Package e2e is the client side of qpq's end-to-end cryptography: the
// user identity and its key file, the signed key bundle a user publishes,
// sealed-sender direct messages (HPKE with the X-Wing post-quantum hybrid
// KEM), broadcast channel messages under a shared key, and channel share
// strings. Nodes relay what this package produces without being able to
// read it; a node never needs this package to decrypt anything.
//
// Every format here (key file, bundle signature input, sealed layouts,
// share string) is versioned: add, never change. A new layout gets a new
// version number or label; old ones keep being read.
package e2e

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Domain-separation labels. Each signature, hash and key derivation in
// this package starts with its own label, so a value made for one purpose
// can never be taken for another. Changing one breaks every existing key
// file, bundle or message of that kind: never do; add a new one instead.
const (
	bundleSigLabel   = "qpq user bundle v1\x00"    // SignedBundle.signature input prefix (schema)
	dmInfoLabel      = "qpq dm hpke v1\x00"        // HPKE info prefix, followed by the recipient fingerprint
	dmSigLabel       = "qpq dm v1\x00"             // sender signature input prefix for a DM
	receiptLabel     = "qpq receipt v1\x00"        // ReceiptTag = SHA-256(receiptLabel || k)
	channelIDLabel   = "qpq channel id v1\x00"     // ChannelKey.ID = SHA-256(channelIDLabel || key)
	channelKeyLabel  = "qpq channel aead v1"       // HKDF info deriving the AEAD key from a ChannelKey
	channelSigLabel  = "qpq channel msg v1\x00"    // sender signature input prefix for a channel message
	shareSumLabel    = "qpq channel share v1\x00"  // share string checksum prefix
	keyFileSumLabel  = "qpq user key file v1\x00"  // checksum prefix of an unencrypted key file
	purposeSigPrefix = "qpq purpose signature v1:" // SignPurpose input prefix, then the caller's label
)

// Key sizes.
const (
	// KEMPublicKeySize is the size of an X-Wing public key: the ML-KEM-768
	// encapsulation key, then the X25519 point.
	KEMPublicKeySize = mlkem.EncapsulationKeySize768 + 32
	// seedSize is the size of the Ed25519 and X-Wing private seeds.
	seedSize = 32
)

// The one HPKE suite DMs use (DESIGN "Privacy"): X-Wing (KEM id 0x647a),
// HKDF-SHA256, ChaCha20-Poly1305. The first builds used circl's
// hpke.KEM_XWING, the same construction (hpke_cross_test.go checks both
// ways; testdata/golden holds what they made).
var (
	dmKEM  = hpke.MLKEM768X25519()
	dmKDF  = hpke.HKDFSHA256()
	dmAEAD = hpke.ChaCha20Poly1305()
)

// User is a user's identity: the long-term Ed25519 key whose fingerprint
// names the user, and the X-Wing KEM key that DMs are sealed to. It holds
// secret keys; never log or print it. A User never changes once made, so
// it is safe for concurrent use.
type User struct {
	sign    ed25519.PrivateKey
	kemSeed [seedSize]byte
	kemPriv hpke.PrivateKey
	kemPub  []byte // KEMPublicKeySize bytes
	fp      identity.Fingerprint
	extra   []byte // key file records this build does not know, kept for re-saving
}

// NewUser returns a fresh identity with random keys.
func NewUser() *User {
	var edSeed, kemSeed [seedSize]byte
	rand.Read(edSeed[:]) // never fails since Go 1.24
	rand.Read(kemSeed[:])
	return userFromSeeds(edSeed[:], kemSeed[:])
}

// userFromSeeds derives both key pairs from their 32-byte seeds, the only
// secret material a key file stores. The X-Wing seed is the private key
// itself (SHAKE256 expands it into the ML-KEM-768 and X25519 keys).
func userFromSeeds(edSeed, kemSeed []byte) *User {
	u := &User{sign: ed25519.NewKeyFromSeed(edSeed)}
	copy(u.kemSeed[:], kemSeed)
	priv, err := dmKEM.NewPrivateKey(u.kemSeed[:])
	if err != nil {
		// It fails only for a seed that is not 32 bytes.
		panic(fmt.Sprintf("e2e: X-Wing key from a %d-byte seed: %v", len(u.kemSeed), err))
	}
	u.kemPriv = priv
	u.kemPub = priv.PublicKey().Bytes()
	u.fp = identity.FingerprintOf(u.PublicKey())
	return u
}

// Fingerprint returns the user's fingerprint: identity.FingerprintOf the
// Ed25519 public key, the same scheme that names nodes.
func (u *User) Fingerprint() identity.Fingerprint { return u.fp }

// PublicKey returns the Ed25519 identity public key.
func (u *User) PublicKey() ed25519.PublicKey { return u.sign.Public().(ed25519.PublicKey) }

// KEMPublicKey returns a copy of the X-Wing public key (KEMPublicKeySize
// bytes) that DMs to this user are sealed to.
func (u *User) KEMPublicKey() []byte { return append([]byte(nil), u.kemPub...) }

// reservedLabels are the labels SignPurpose refuses, so that a purpose
// signature can never be mistaken for one this package makes. The inputs
// differ anyway (every SignPurpose input starts with purposeSigPrefix);
// refusing them keeps callers from inventing confusing names.
var reservedLabels = []string{bundleSigLabel, dmSigLabel, channelSigLabel}

// SignPurpose signs msg with the user's identity key for one purpose, such
// as answering a node's authentication challenge. The signed bytes are
// "qpq purpose signature v1:" || label || 0x00 || msg, so a signature made
// for one label never verifies for another, nor as a bundle, DM or channel
// signature. The label must be non-empty, hold no NUL byte and not name one
// of this package's own signatures; otherwise it returns ErrBadLabel.
func (u *User) SignPurpose(label string, msg []byte) ([]byte, error) {
	if err := checkLabel(label); err != nil {
		return nil, err
	}
	return ed25519.Sign(u.sign, purposeInput(label, msg)), nil
}

// VerifyPurpose checks a signature made by SignPurpose with the same label.
func VerifyPurpose(pub ed25519.PublicKey, label string, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || checkLabel(label) != nil {
		return false
	}
	return ed25519.Verify(pub, purposeInput(label, msg), sig)
}

func checkLabel(label string) error {
	if label == "" || strings.IndexByte(label, 0) >= 0 {
		return fmt.Errorf("%w: %q", ErrBadLabel, label)
	}
	for _, r := range reservedLabels {
		if label == strings.TrimSuffix(r, "\x00") {
			return fmt.Errorf("%w: %q is reserved", ErrBadLabel, label)
		}
	}
	return nil
}

func purposeInput(label string, msg []byte) []byte {
	b := make([]byte, 0, len(purposeSigPrefix)+len(label)+1+len(msg))
	b = append(b, purposeSigPrefix...)
	b = append(b, label...)
	b = append(b, 0)
	return append(b, msg...)
}

// atRestLabel starts the HKDF info of every at-rest key (AtRestKey).
const atRestLabel = "qpq at rest v1\x00"

// AtRestKey derives a 32-byte key for encrypting the user's own files at
// rest (the outbox, the history) for one purpose, such as "outbox": HKDF-
// SHA256 over the user's secret seeds with info atRestLabel || purpose.
// Whoever unlocks the key file (with its passphrase, when one is set)
// can read those files; nobody else can, and there is no second
// passphrase. Different purposes give independent keys.
func (u *User) AtRestKey(purpose string) [32]byte {
	secret := make([]byte, 0, 2*seedSize)
	secret = append(secret, u.sign.Seed()...)
	secret = append(secret, u.kemSeed[:]...)
	defer clear(secret)
	k, err := hkdf.Key(sha256.New, secret, nil, atRestLabel+purpose, 32)
	if err != nil {
		// HKDF-SHA256 fails only for an output over 255*32 bytes.
		panic(fmt.Sprintf("e2e: at-rest key: %v", err))
	}
	var out [32]byte
	copy(out[:], k)
	clear(k)
	return out
}
