package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

func TestChannelRoundTrip(t *testing.T) {
	alice, _ := testUsers()
	key := NewChannelKey()
	if key == NewChannelKey() {
		t.Fatal("two random keys equal")
	}
	for _, body := range [][]byte{nil, []byte("hello channel"), bytes.Repeat([]byte{0xAA}, maxBody)} {
		p, err := SealChannel(alice, key, body, testTime)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != ChannelPayloadSize(len(body)) || len(p)%padBlock != 0 || len(p) > maxPayload {
			t.Fatalf("payload %d bytes for body %d", len(p), len(body))
		}
		o, err := OpenChannel(key, p)
		if err != nil {
			t.Fatal(err)
		}
		if o.From != alice.Fingerprint() || !bytes.Equal(o.Body, body) || !o.SentAt.Equal(testTime) {
			t.Fatal("opened message differs")
		}
		if o.ReceiptSecret != ([32]byte{}) || o.ReceiptTag != ([32]byte{}) {
			t.Fatal("channel message has a receipt")
		}
	}
}

func TestChannelID(t *testing.T) {
	k := ChannelKey{1, 2, 3}
	id := k.ID()
	if id == [32]byte(k) || id != k.ID() || id == (ChannelKey{1, 2, 4}).ID() {
		t.Fatal("ID is not a stable, key-dependent hash")
	}
	if !k.Equal(ChannelKey{1, 2, 3}) || k.Equal(ChannelKey{}) {
		t.Fatal("Equal")
	}
}

func TestChannelPayloadSizes(t *testing.T) {
	alice, _ := testUsers()
	key := ChannelKey{7}
	for n := 0; n <= maxBody; n += 1 + n/5 {
		p, err := SealChannel(alice, key, make([]byte, n), testTime)
		if err != nil {
			t.Fatal(err)
		}
		if len(p)%padBlock != 0 || len(p) != ChannelPayloadSize(n) {
			t.Fatalf("body %d: payload %d", n, len(p))
		}
	}
	a, _ := SealChannel(alice, key, make([]byte, 0), testTime)
	b, _ := SealChannel(alice, key, make([]byte, 90), testTime)
	if len(a) != len(b) || len(a) != padBlock {
		t.Fatalf("bodies 0 and 90: %d and %d bytes", len(a), len(b))
	}
	if _, err := SealChannel(alice, key, make([]byte, maxBody+1), testTime); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
}

// sealChannelRaw encrypts an arbitrary plaintext under key.
func sealChannelRaw(t *testing.T, key ChannelKey, pt []byte) []byte {
	t.Helper()
	k, _ := key.aead()
	aead, _ := chacha20poly1305.NewX(k)
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	id := key.ID()
	return aead.Seal(nonce, nonce, pt, id[:])
}

func TestOpenChannelRejects(t *testing.T) {
	alice, bob := testUsers()
	key := ChannelKey{42}
	good, _ := SealChannel(alice, key, []byte("hi all"), testTime)
	size := len(good) - chOverhead
	inner := func(signer ed25519.PrivateKey, id [32]byte, f func(pt []byte)) []byte {
		fl := innerFields{version: innerVersion, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), body: []byte("hi all")}
		pt := encodeInner(fl, ed25519.Sign(signer, channelSigInput(id, fl)), size)
		if f != nil {
			f(pt)
		}
		return sealChannelRaw(t, key, pt)
	}
	if _, err := OpenChannel(key, inner(alice.sign, key.ID(), nil)); err != nil {
		t.Fatalf("hand-built control case: %v", err)
	}
	tampered := bytes.Clone(good)
	tampered[40] ^= 1
	cases := []struct {
		name    string
		key     ChannelKey
		payload []byte
		want    error
	}{
		{"empty", key, nil, ErrMalformed},
		{"not a multiple", key, good[:255], ErrMalformed},
		{"too long", key, make([]byte, maxPayload+padBlock), ErrMalformed},
		{"wrong key", ChannelKey{43}, good, ErrCannotOpen},
		{"tampered", key, tampered, ErrCannotOpen},
		{"forged sender", key, inner(bob.sign, key.ID(), nil), ErrBadSignature},
		{"signed for another channel", key, inner(alice.sign, ChannelKey{43}.ID(), nil), ErrBadSignature},
		{"nonzero padding", key, inner(alice.sign, key.ID(), func(pt []byte) { pt[len(pt)-1] = 9 }), ErrBadPadding},
		{"version 0", key, inner(alice.sign, key.ID(), func(pt []byte) { pt[0] = 0 }), ErrMalformed},
		{"body length past end", key, inner(alice.sign, key.ID(), func(pt []byte) { pt[channelHeaderLen-2] = 0xff }), ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := OpenChannel(tc.key, tc.payload); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
