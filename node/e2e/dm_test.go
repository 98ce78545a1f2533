package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

var testTime = time.Date(2026, 3, 14, 15, 9, 26, 535_000_000, time.UTC)

func TestDMRoundTrip(t *testing.T) {
	alice, bob := testUsers()
	bundleBytes, _ := bob.SignedBundle(1, time.Hour)
	bobBundle, err := VerifyBundle(bundleBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, body := range [][]byte{nil, []byte("hi"), bytes.Repeat([]byte("x"), maxBody)} {
		s, err := SealDM(alice, bobBundle, body, testTime.Add(123*time.Microsecond))
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Payload)%padBlock != 0 || len(s.Payload) > maxPayload {
			t.Fatalf("payload %d bytes", len(s.Payload))
		}
		if s.ReceiptTag != ReceiptTagOf(s.ReceiptSecret) || s.ReceiptSecret == [32]byte{} {
			t.Fatal("receipt tag/secret")
		}
		o, err := OpenDM(bob, s.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if o.From != alice.Fingerprint() || !bytes.Equal(o.FromKey, alice.PublicKey()) {
			t.Fatal("wrong sender")
		}
		if !bytes.Equal(o.Body, body) || !o.SentAt.Equal(testTime) {
			t.Fatalf("body %d bytes, sent %v", len(o.Body), o.SentAt)
		}
		if o.ReceiptSecret != s.ReceiptSecret || o.ReceiptTag != s.ReceiptTag {
			t.Fatal("receipt differs")
		}
		// Relays see no plaintext and no sender.
		if len(body) > 8 && bytes.Contains(s.Payload, body[:8]) {
			t.Fatal("plaintext visible")
		}
		fp := alice.Fingerprint()
		if bytes.Contains(s.Payload, alice.PublicKey()) || bytes.Contains(s.Payload, fp[:]) {
			t.Fatal("sender visible")
		}
	}
}

func TestDMToSelfAndFreshness(t *testing.T) {
	alice, _ := testUsers()
	a, _ := SealDM(alice, alice.Bundle(), []byte("note"), testTime)
	b, _ := SealDM(alice, alice.Bundle(), []byte("note"), testTime)
	if bytes.Equal(a.Payload, b.Payload) || a.ReceiptSecret == b.ReceiptSecret {
		t.Fatal("two seals of one message are identical")
	}
	if _, err := OpenDM(alice, a.Payload); err != nil {
		t.Fatal(err)
	}
}

func TestDMPayloadSizes(t *testing.T) {
	alice, bob := testUsers()
	seen := map[int]bool{}
	for n := 0; n <= maxBody; n += 1 + n/7 {
		seen[n] = true
	}
	for _, n := range []int{1, 2, 3, 4, 115, 116, 117, 255, 256, 257, 371, 372, 373, maxBody - 1, maxBody} {
		seen[n] = true
	}
	for n := range seen {
		want := DMPayloadSize(n)
		if want%padBlock != 0 || want > maxPayload || want-n < dmHeaderLen+dmOverhead || want-n >= dmHeaderLen+dmOverhead+padBlock {
			t.Fatalf("DMPayloadSize(%d) = %d", n, want)
		}
		s, err := SealDM(alice, bob.Bundle(), make([]byte, n), testTime)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Payload) != want {
			t.Fatalf("body %d: payload %d bytes, want %d", n, len(s.Payload), want)
		}
	}
	// Two body sizes in one 256 band give equal lengths.
	for _, pair := range [][2]int{{0, 3}, {10, 200}, {300, 500}, {maxBody - 8, maxBody}} {
		a, _ := SealDM(alice, bob.Bundle(), make([]byte, pair[0]), testTime)
		b, _ := SealDM(alice, bob.Bundle(), make([]byte, pair[1]), testTime)
		if len(a.Payload) != len(b.Payload) {
			t.Fatalf("bodies %v: %d and %d bytes", pair, len(a.Payload), len(b.Payload))
		}
	}
	if DMPayloadSize(maxBody) > maxPayload {
		t.Fatal("largest DM does not fit maxPayload")
	}
}

func TestDMBodyTooLarge(t *testing.T) {
	alice, bob := testUsers()
	_, err := SealDM(alice, bob.Bundle(), make([]byte, maxBody+1), testTime)
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("got %v", err)
	}
	if !strings.Contains(err.Error(), "16385") || !strings.Contains(err.Error(), "16384") {
		t.Fatalf("error does not name both sizes: %v", err)
	}
}

func TestSealDMBadBundle(t *testing.T) {
	alice, bob := testUsers()
	b := bob.Bundle()
	for name, mod := range map[string]func(*Bundle){
		"short KEM key":        func(b *Bundle) { b.KEMKey = b.KEMKey[:100] },
		"no identity":          func(b *Bundle) { b.Identity = nil },
		"fingerprint mismatch": func(b *Bundle) { b.Fingerprint = alice.Fingerprint() },
		"unreduced KEM key":    func(b *Bundle) { b.KEMKey = bytes.Clone(b.KEMKey); b.KEMKey[0], b.KEMKey[1] = 0xff, 0xff },
		// A small-order X25519 point makes the X25519 shared secret zero;
		// crypto/hpke refuses it (circl sealed anyway).
		"zero X25519 point": func(b *Bundle) { b.KEMKey = bytes.Clone(b.KEMKey); clear(b.KEMKey[KEMPublicKeySize-32:]) },
	} {
		bb := b
		mod(&bb)
		if _, err := SealDM(alice, bb, nil, testTime); !errors.Is(err, ErrBadBundle) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// sealRaw seals an arbitrary plaintext to bob, for malformed-inner tests.
func sealRaw(t *testing.T, pt []byte) []byte {
	t.Helper()
	_, bob := testUsers()
	p, err := hpkeSeal(bob.kemPub, bob.Fingerprint(), pt)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// goodInner returns a correctly signed DM plaintext from alice to bob,
// padded to size, and its fields.
func goodInner(body []byte, size int) []byte {
	alice, bob := testUsers()
	k := [32]byte{9}
	f := innerFields{version: innerVersion, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &k, body: body}
	return encodeInner(f, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), f)), size)
}

func TestOpenDMRejects(t *testing.T) {
	alice, bob := testUsers()
	carol := NewUser()
	good, _ := SealDM(alice, bob.Bundle(), []byte("hello bob"), testTime)
	size := DMPayloadSize(9) - dmOverhead
	if _, err := OpenDM(bob, sealRaw(t, goodInner([]byte("hello bob"), size))); err != nil {
		t.Fatalf("hand-built control case: %v", err)
	}

	tampered := func(i int) []byte { p := bytes.Clone(good.Payload); p[i] ^= 1; return p }
	mutate := func(f func(pt []byte)) []byte {
		pt := goodInner([]byte("hello bob"), size)
		f(pt)
		return sealRaw(t, pt)
	}
	// A forged sender: carol claims to be alice (alice's key inside) but
	// can only sign with her own key.
	forged := func() []byte {
		k := [32]byte{9}
		f := innerFields{version: innerVersion, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &k, body: []byte("pay carol")}
		return sealRaw(t, encodeInner(f, ed25519.Sign(carol.sign, dmSigInput(bob.Fingerprint(), f)), size))
	}()
	// Signed for carol, then re-sealed to bob: the recipient is signed.
	redirected := func() []byte {
		k := [32]byte{9}
		f := innerFields{version: innerVersion, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &k, body: []byte("hello bob")}
		return sealRaw(t, encodeInner(f, ed25519.Sign(alice.sign, dmSigInput(carol.Fingerprint(), f)), size))
	}()

	cases := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"empty", nil, ErrMalformed},
		{"not a multiple of 256", good.Payload[:len(good.Payload)-1], ErrMalformed},
		{"too short", make([]byte, 1024), ErrMalformed},
		{"too long", make([]byte, maxPayload+padBlock), ErrMalformed},
		{"zeros", make([]byte, 1280), ErrCannotOpen},
		{"tampered KEM ciphertext", tampered(10), ErrCannotOpen},
		{"tampered AEAD ciphertext", tampered(dmEncLen + 5), ErrCannotOpen},
		{"tampered tag", tampered(len(good.Payload) - 1), ErrCannotOpen},
		{"truncated by a block", good.Payload[:len(good.Payload)-padBlock], ErrCannotOpen},
		{"forged sender", forged, ErrBadSignature},
		{"signed for another recipient", redirected, ErrBadSignature},
		{"send time changed", mutate(func(pt []byte) { pt[33+7] ^= 1 }), ErrBadSignature},
		{"receipt secret changed", mutate(func(pt []byte) { pt[41] ^= 1 }), ErrBadSignature},
		{"body changed", mutate(func(pt []byte) { pt[dmHeaderLen] ^= 1 }), ErrBadSignature},
		{"nonzero padding", mutate(func(pt []byte) { pt[len(pt)-1] = 1 }), ErrBadPadding},
		{"sequence changed", mutate(func(pt []byte) { pt[dmHeaderLenV1-4-64+7] ^= 1 }), ErrBadSignature},
		{"TTL changed", mutate(func(pt []byte) { pt[dmHeaderLen-4-64-1] ^= 1 }), ErrBadSignature},
		{"version 3", mutate(func(pt []byte) { pt[0] = 3 }), ErrMalformed},
		{"read as version 1", mutate(func(pt []byte) { pt[0] = 1 }), ErrMalformed},
		{"body length past end", mutate(func(pt []byte) { pt[dmHeaderLen-2] = 0xff }), ErrMalformed},
		{"body length over MaxBody", mutate(func(pt []byte) { pt[dmHeaderLen-4] = 0x7f }), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OpenDM(bob, tc.payload)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("wrong recipient", func(t *testing.T) {
		if _, err := OpenDM(carol, good.Payload); !errors.Is(err, ErrCannotOpen) {
			t.Fatalf("got %v", err)
		}
		// Same KEM key, other identity: the info binds the fingerprint.
		impostor := userFromSeeds(bytes.Repeat([]byte{7}, 32), bob.kemSeed[:])
		if _, err := OpenDM(impostor, good.Payload); !errors.Is(err, ErrCannotOpen) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestDecodeInnerShort(t *testing.T) {
	pt := goodInner(nil, dmHeaderLen)
	for n := 0; n < len(pt); n++ {
		if _, _, err := decodeInner(pt[:n], true); !errors.Is(err, ErrMalformed) {
			t.Fatalf("%d bytes: %v", n, err)
		}
	}
	if _, _, err := decodeInner(pt, true); err != nil {
		t.Fatal(err)
	}
}

func TestReceipts(t *testing.T) {
	alice, bob := testUsers()
	s, _ := SealDM(alice, bob.Bundle(), []byte("x"), testTime)
	o, _ := OpenDM(bob, s.Payload)
	if !CheckReceipt(o.ReceiptSecret, s.ReceiptTag) {
		t.Fatal("receipt does not match")
	}
	forged := o.ReceiptSecret
	forged[0] ^= 1
	if CheckReceipt(forged, s.ReceiptTag) || CheckReceipt(s.ReceiptTag, s.ReceiptTag) {
		t.Fatal("forged receipt accepted")
	}
}

func TestSignPurpose(t *testing.T) {
	alice, bob := testUsers()
	sig, err := alice.SignPurpose("qpq client auth v1", []byte("challenge"))
	if err != nil {
		t.Fatal(err)
	}
	if !VerifyPurpose(alice.PublicKey(), "qpq client auth v1", []byte("challenge"), sig) {
		t.Fatal("does not verify")
	}
	if VerifyPurpose(alice.PublicKey(), "qpq other v1", []byte("challenge"), sig) ||
		VerifyPurpose(bob.PublicKey(), "qpq client auth v1", []byte("challenge"), sig) ||
		VerifyPurpose(alice.PublicKey()[:31], "qpq client auth v1", []byte("challenge"), sig) {
		t.Fatal("verifies for another label or key")
	}
	for _, l := range []string{"", "a\x00b", "qpq user bundle v1", "qpq dm v1", "qpq channel msg v1"} {
		if _, err := alice.SignPurpose(l, nil); !errors.Is(err, ErrBadLabel) {
			t.Errorf("label %q: %v", l, err)
		}
	}
}
