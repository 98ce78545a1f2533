package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// FuzzOpenDM feeds arbitrary payloads to OpenDM for a fixed recipient:
// it must never panic, and whatever opens must carry a valid signature.
// Seeds cover both inner layouts. Sealing is random, so the fuzzer mostly
// exercises the length checks and HPKE; the inner decoder itself is
// fuzzed directly too, on the same input.
func FuzzOpenDM(f *testing.F) {
	alice, bob := testUsers()
	for _, n := range []int{0, 5, 300} {
		s, _ := SealDMWith(alice, bob.Bundle(), make([]byte, n), testTime, Meta{Seq: uint64(n) + 1, TTL: time.Hour})
		f.Add(s.Payload)
	}
	f.Add(sealRawF(bob, v1DM([]byte("v1"))))
	f.Add(v1DM([]byte("v1 plaintext")))
	f.Add(goodInner([]byte("v2 plaintext"), dmHeaderLen+12))
	f.Add(make([]byte, 1280))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, payload []byte) {
		o, err := OpenDM(bob, payload)
		if err == nil {
			checkOpened(t, o)
			if o.ReceiptTag != ReceiptTagOf(o.ReceiptSecret) {
				t.Fatal("opened DM's receipt tag does not match its secret")
			}
		}
		for _, withReceipt := range []bool{true, false} {
			if fl, sig, err := decodeInner(payload, withReceipt); err == nil {
				if len(sig) != ed25519.SignatureSize || len(fl.from) != ed25519.PublicKeySize || len(fl.body) > maxBody ||
					(fl.version == innerVersion1 && (fl.seq != 0 || fl.ttl != 0)) {
					t.Fatalf("decodeInner accepted an inconsistent layout: %+v", fl)
				}
			}
		}
	})
}

// checkOpened checks what any opened message must satisfy.
func checkOpened(t *testing.T, o Opened) {
	t.Helper()
	if len(o.FromKey) != 32 || (o.Version != 1 && o.Version != 2) || (o.Version == 1 && (o.Seq != 0 || o.TTL != 0)) ||
		o.TTL < 0 || o.TTL%time.Second != 0 {
		t.Fatalf("opened message is inconsistent: version %d seq %d ttl %v", o.Version, o.Seq, o.TTL)
	}
}

// sealRawF is sealRaw for fuzz seeds.
func sealRawF(to *User, pt []byte) []byte {
	p, _ := hpkeSeal(to.kemPub, to.Fingerprint(), pt)
	return p
}

// FuzzOpenChannel does the same for channel messages.
func FuzzOpenChannel(f *testing.F) {
	alice, _ := testUsers()
	key := ChannelKey{5}
	p, _ := SealChannel(alice, key, []byte("seed"), testTime)
	f.Add(p)
	p, _ = SealChannelWith(alice, key, []byte("seed"), testTime, Meta{Seq: 9, TTL: 6 * time.Hour})
	f.Add(p)
	f.Add(make([]byte, 256))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if o, err := OpenChannel(key, payload); err == nil {
			checkOpened(t, o)
		}
	})
}

// FuzzVerifyBundle: arbitrary bytes never panic; whatever verifies has
// keys of the right sizes and a matching fingerprint.
func FuzzVerifyBundle(f *testing.F) {
	alice, bob := testUsers()
	for _, u := range []*User{alice, bob} {
		b, _ := u.SignedBundle(3, time.Hour)
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := VerifyBundle(b)
		if err != nil {
			return
		}
		if len(got.Identity) != 32 || len(got.KEMKey) != KEMPublicKeySize {
			t.Fatal("verified bundle has bad key sizes")
		}
		if got.Fingerprint != identity.FingerprintOf(got.Identity) {
			t.Fatal("fingerprint does not match identity")
		}
	})
}

// FuzzParseShare: never panics; what parses formats back and re-parses to
// the same name and key.
func FuzzParseShare(f *testing.F) {
	s, _ := FormatShare("general", ChannelKey{1})
	f.Add(s)
	f.Add("qpqch1:a:b:c")
	f.Add("QPQCH1:Café:" + s[len("qpqch1:general:"):])
	f.Fuzz(func(t *testing.T, s string) {
		name, key, err := ParseShare(s)
		if err != nil {
			if !errors.Is(err, ErrBadShare) {
				t.Fatalf("error %v does not wrap ErrBadShare", err)
			}
			return
		}
		again, err := FormatShare(name, key)
		if err != nil {
			t.Fatalf("parsed name %q does not format: %v", name, err)
		}
		n2, k2, err := ParseShare(again)
		if err != nil || n2 != name || k2 != key {
			t.Fatalf("round trip of %q: %v", again, err)
		}
	})
}

// FuzzLoadUser writes arbitrary file bytes and loads them: never a panic.
// The same bytes also go straight to the decoder with a passphrase, with
// Argon2id parameters from the file capped low so the fuzzer stays fast
// (the real cap is tested elsewhere), and to the header parser that
// IsEncrypted and ReadFingerprint use (files are slow here: one write and
// one load per input).
func FuzzLoadUser(f *testing.F) {
	alice, _ := testUsers()
	plain, _ := encodeKeyFile(alice, nil, cheapKDF)
	enc, _ := encodeKeyFile(alice, []byte("pw"), cheapKDF)
	f.Add(plain)
	f.Add(enc)
	f.Add([]byte(keyFileMagic))
	dir := f.TempDir()
	low := kdfParams{passes: 2, memoryKiB: 256, threads: 2}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "user.key")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		u, err := LoadUser(path, nil)
		if err == nil && !bytes.Equal(u.PublicKey(), data[10:42]) {
			t.Fatal("loaded a user whose key differs from the header")
		}
		parseHeader(data)
		if len(data) <= maxKeyFile {
			decodeKeyFile(data, []byte("pw"), low)
		}
	})
}
