// Package atrest seals the user's own files at rest (the outbox, the
// history) under a key from e2e.(*User).AtRestKey: XChaCha20-Poly1305
// with a random nonce per value, and additional data naming the slot a
// value belongs in, so a sealed value moved to another record or file does
// not open there.
//
// Layout of a sealed value (add, never change): version byte 1 || nonce
// (24) || ciphertext || tag (16).
package atrest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// version is the first byte of every sealed value.
const version = 1

// Overhead is how many bytes Seal adds to a plaintext.
const Overhead = 1 + chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// ErrCannotOpen is returned by Open for a value sealed under another key
// or slot, truncated, or tampered with.
var ErrCannotOpen = errors.New("cannot decrypt (another identity's file, or damaged)")

// Key seals and opens values; make it with New. It is safe for concurrent
// use.
type Key struct {
	key [32]byte
}

// New returns the Key for a 32-byte at-rest key.
func New(k [32]byte) *Key { return &Key{key: k} }

// Seal encrypts plaintext for slot (for example a bucket name and a record
// key): only Open with the same Key and slot returns it.
func (k *Key) Seal(slot, plaintext []byte) []byte {
	a, _ := chacha20poly1305.NewX(k.key[:]) // fails only for a key that is not 32 bytes
	out := make([]byte, 1+chacha20poly1305.NonceSizeX, Overhead+len(plaintext))
	out[0] = version
	rand.Read(out[1:]) // never fails since Go 1.24
	return a.Seal(out, out[1:1+chacha20poly1305.NonceSizeX], plaintext, slot)
}

// Open decrypts a value sealed by Seal for slot.
func (k *Key) Open(slot, sealed []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w: %d bytes is too short", ErrCannotOpen, len(sealed))
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("%w: unknown version %d", ErrCannotOpen, sealed[0])
	}
	a, _ := chacha20poly1305.NewX(k.key[:])
	pt, err := a.Open(nil, sealed[1:1+chacha20poly1305.NonceSizeX], sealed[1+chacha20poly1305.NonceSizeX:], slot)
	if err != nil {
		return nil, ErrCannotOpen
	}
	return pt, nil
}

// Name returns a keyed hash of name for use as a record key, so an index
// (receipt tags, recipients, conversations) does not show its contents
// to someone reading the file without the key.
func (k *Key) Name(label string, name []byte) []byte {
	m := hmac.New(sha256.New, k.key[:])
	m.Write([]byte(label))
	m.Write([]byte{0})
	m.Write(name)
	return m.Sum(nil)
}
