package e2e

import (
	"bytes"
	"crypto/ed25519"
	stdhpke "crypto/hpke"
	"crypto/rand"
	"testing"

	circlhpke "github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem/xwing"
)

// The first builds sealed DMs with circl's HPKE (KEM_XWING, HKDF-SHA256,
// ChaCha20-Poly1305); later ones use crypto/hpke's MLKEM768X25519. Both
// must be the same construction, or old and new clients cannot message
// each other. circl is only a test dependency here.

var circlSuite = circlhpke.NewSuite(circlhpke.KEM_XWING, circlhpke.KDF_HKDF_SHA256, circlhpke.AEAD_ChaCha20Poly1305)

// crossSeeds are the X-Wing seeds the cross tests use: fixed and random.
func crossSeeds() [][]byte {
	seeds := [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xff}, 32), bytes.Repeat([]byte{4}, 32)}
	for range 3 {
		s := make([]byte, 32)
		rand.Read(s)
		seeds = append(seeds, s)
	}
	return seeds
}

// TestCrossKeyFormats: the 32-byte seed a key file stores is the private
// key of both libraries, and both derive the same 1216-byte public key.
func TestCrossKeyFormats(t *testing.T) {
	kem := stdhpke.MLKEM768X25519()
	if kem.ID() != uint16(circlhpke.KEM_XWING) {
		t.Fatalf("KEM id %#x, circl's %#x", kem.ID(), uint16(circlhpke.KEM_XWING))
	}
	for _, seed := range crossSeeds() {
		csk, cpk := xwing.DeriveKeyPairPacked(seed)
		if !bytes.Equal(csk, seed) {
			t.Fatalf("circl packs the private key as %x, not the seed", csk)
		}
		sk, err := kem.NewPrivateKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := sk.Bytes(); err != nil || !bytes.Equal(b, seed) {
			t.Fatalf("crypto/hpke private key bytes %x, %v; want the seed", b, err)
		}
		spk := sk.PublicKey().Bytes()
		if len(spk) != KEMPublicKeySize || !bytes.Equal(spk, cpk) {
			t.Fatalf("public keys differ for seed %x", seed)
		}
		if _, err := kem.NewPublicKey(cpk); err != nil {
			t.Fatalf("crypto/hpke refuses circl's public key: %v", err)
		}
		u := userFromSeeds(bytes.Repeat([]byte{9}, 32), seed)
		if !bytes.Equal(u.KEMPublicKey(), cpk) {
			t.Fatal("User derives another KEM key than circl")
		}
	}
}

// TestCrossSeal seals with one library and opens with the other, both
// ways, with the DM info and plaintext sizes SealDM uses, plus additional
// data and a second message in the same context to pin argument order and
// nonce sequence.
func TestCrossSeal(t *testing.T) {
	alice, bob := testUsers()
	info := dmInfo(bob.Fingerprint())
	kem := stdhpke.MLKEM768X25519()
	kdf, aead := stdhpke.HKDFSHA256(), stdhpke.ChaCha20Poly1305()
	for _, seed := range crossSeeds() {
		csk, cpk := xwing.DeriveKeyPair(seed)
		ssk, err := kem.NewPrivateKey(seed)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{0, 3, 4, 1000, maxBody} {
			pt := make([]byte, paddedLen(dmHeaderLen+n, dmOverhead))
			rand.Read(pt)
			for _, aad := range [][]byte{nil, []byte("aad")} {
				// circl seals, crypto/hpke opens.
				snd, err := circlSuite.NewSender(cpk, info)
				if err != nil {
					t.Fatal(err)
				}
				enc, sealer, err := snd.Setup(rand.Reader)
				if err != nil {
					t.Fatal(err)
				}
				ct1, _ := sealer.Seal(pt, aad)
				ct2, _ := sealer.Seal(pt[:n], nil)
				if len(enc)+len(ct1) != len(pt)+dmOverhead || len(enc) != dmEncLen {
					t.Fatalf("circl enc %d + ct %d for %d bytes", len(enc), len(ct1), len(pt))
				}
				r, err := stdhpke.NewRecipient(enc, ssk, kdf, aead, info)
				if err != nil {
					t.Fatal(err)
				}
				got1, err := r.Open(aad, ct1)
				if err != nil || !bytes.Equal(got1, pt) {
					t.Fatalf("crypto/hpke cannot open circl's message (%d bytes, aad %q): %v", len(pt), aad, err)
				}
				got2, err := r.Open(nil, ct2)
				if err != nil || !bytes.Equal(got2, pt[:n]) {
					t.Fatalf("crypto/hpke cannot open circl's second message: %v", err)
				}

				// crypto/hpke seals, circl opens.
				cpkBytes, _ := cpk.MarshalBinary()
				spk, err := kem.NewPublicKey(cpkBytes)
				if err != nil {
					t.Fatal(err)
				}
				enc, s, err := stdhpke.NewSender(spk, kdf, aead, info)
				if err != nil {
					t.Fatal(err)
				}
				ct1, _ = s.Seal(aad, pt)
				ct2, _ = s.Seal(nil, pt[:n])
				rcv, err := circlSuite.NewReceiver(csk, info)
				if err != nil {
					t.Fatal(err)
				}
				opener, err := rcv.Setup(enc)
				if err != nil {
					t.Fatal(err)
				}
				got1, err = opener.Open(ct1, aad)
				if err != nil || !bytes.Equal(got1, pt) {
					t.Fatalf("circl cannot open crypto/hpke's message (%d bytes, aad %q): %v", len(pt), aad, err)
				}
				got2, err = opener.Open(ct2, nil)
				if err != nil || !bytes.Equal(got2, pt[:n]) {
					t.Fatalf("circl cannot open crypto/hpke's second message: %v", err)
				}
				// Another info (another recipient fingerprint) does not open.
				r, err = stdhpke.NewRecipient(enc, ssk, kdf, aead, dmInfo(alice.Fingerprint()))
				if err == nil {
					if _, err := r.Open(aad, ct1); err == nil {
						t.Fatal("opened under another info")
					}
				}
			}
		}
	}
}

// TestCrossDM: a DM SealDM makes opens with circl's HPKE and the key file
// seed (what an older build would do), and one sealed with circl opens
// with OpenDM.
func TestCrossDM(t *testing.T) {
	alice, bob := testUsers()
	csk, cpk := xwing.DeriveKeyPair(bob.kemSeed[:])
	info := dmInfo(bob.Fingerprint())
	for _, n := range []int{0, 3, 4, 1000, maxBody} {
		body := goldenBody(n)
		s, err := SealDM(alice, bob.Bundle(), body, testTime)
		if err != nil {
			t.Fatal(err)
		}
		rcv, err := circlSuite.NewReceiver(csk, info)
		if err != nil {
			t.Fatal(err)
		}
		opener, err := rcv.Setup(s.Payload[:dmEncLen])
		if err != nil {
			t.Fatal(err)
		}
		pt, err := opener.Open(s.Payload[dmEncLen:], nil)
		if err != nil {
			t.Fatalf("circl cannot open SealDM's %d-byte DM: %v", n, err)
		}
		f, _, err := decodeInner(pt, true)
		if err != nil || !bytes.Equal(f.body, body) || *f.receipt != s.ReceiptSecret {
			t.Fatalf("circl-opened DM decodes to %v", err)
		}

		// The other way: circl seals a DM's plaintext, OpenDM opens it.
		fields := innerFields{version: innerVersion, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &s.ReceiptSecret, body: body}
		plain := encodeInner(fields, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), fields)), paddedLen(dmHeaderLen+n, dmOverhead))
		snd, err := circlSuite.NewSender(cpk, info)
		if err != nil {
			t.Fatal(err)
		}
		enc, sealer, err := snd.Setup(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		ct, err := sealer.Seal(plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		o, err := OpenDM(bob, append(enc, ct...))
		if err != nil || !bytes.Equal(o.Body, body) || o.From != alice.Fingerprint() || o.ReceiptSecret != s.ReceiptSecret {
			t.Fatalf("OpenDM of circl's %d-byte DM: %v", n, err)
		}
	}
}
