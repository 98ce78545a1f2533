package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"math"
	"testing"
	"time"
)

// TestSealDMWithMeta: the sequence and TTL come out as sealed, signed.
func TestSealDMWithMeta(t *testing.T) {
	alice, bob := testUsers()
	for _, m := range []Meta{{Seq: 1, TTL: 7 * 24 * time.Hour}, {Seq: math.MaxUint64, TTL: time.Second}, {}} {
		s, err := SealDMWith(alice, bob.Bundle(), []byte("hi bob"), testTime, m)
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Payload) != DMPayloadSize(6) {
			t.Fatalf("payload %d bytes, want %d", len(s.Payload), DMPayloadSize(6))
		}
		o, err := OpenDM(bob, s.Payload)
		if err != nil {
			t.Fatal(err)
		}
		if o.Seq != m.Seq || o.TTL != m.TTL || o.Version != 2 || string(o.Body) != "hi bob" || o.From != alice.Fingerprint() {
			t.Fatalf("opened seq %d ttl %v version %d, want %+v", o.Seq, o.TTL, o.Version, m)
		}
	}
	// SealDM: version 2, sequence and TTL unknown.
	s, _ := SealDM(alice, bob.Bundle(), nil, testTime)
	if o, err := OpenDM(bob, s.Payload); err != nil || o.Seq != 0 || o.TTL != 0 || o.Version != 2 {
		t.Fatalf("SealDM opened to seq %d ttl %v version %d: %v", o.Seq, o.TTL, o.Version, err)
	}
}

func TestSealChannelWithMeta(t *testing.T) {
	alice, _ := testUsers()
	key := ChannelKey{3}
	p, err := SealChannelWith(alice, key, []byte("hi all"), testTime, Meta{Seq: 42, TTL: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	o, err := OpenChannel(key, p)
	if err != nil || o.Seq != 42 || o.TTL != 6*time.Hour || o.Version != 2 || string(o.Body) != "hi all" {
		t.Fatalf("opened seq %d ttl %v version %d: %v", o.Seq, o.TTL, o.Version, err)
	}
	if _, err := SealChannelWith(alice, key, make([]byte, maxBody+1), testTime, Meta{Seq: 1}); !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("oversized body: %v", err)
	}
}

func TestMetaTTLSeconds(t *testing.T) {
	for _, c := range []struct {
		in   time.Duration
		want uint32
	}{
		{0, 0}, {-time.Hour, 0}, {999 * time.Millisecond, 0}, {1900 * time.Millisecond, 1},
		{time.Hour, 3600}, {math.MaxUint32 * time.Second, math.MaxUint32}, {math.MaxInt64, math.MaxUint32},
	} {
		if got := (Meta{TTL: c.in}).ttlSeconds(); got != c.want {
			t.Errorf("TTL %v kept as %d s, want %d", c.in, got, c.want)
		}
	}
}

// v1DM hand-builds a version-1 DM plaintext from alice to bob, signed as
// earlier builds signed it.
func v1DM(body []byte) []byte {
	alice, bob := testUsers()
	k := [32]byte{9}
	f := innerFields{version: innerVersion1, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &k, body: body}
	return encodeInner(f, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), f)), paddedLen(dmHeaderLenV1+len(body), dmOverhead))
}

// TestVersion1StillOpens: payloads in the version-1 layout open, with
// sequence and TTL unknown; the smallest one (1280 bytes) is accepted.
func TestVersion1StillOpens(t *testing.T) {
	alice, bob := testUsers()
	for _, body := range [][]byte{nil, []byte("old"), bytes.Repeat([]byte{7}, 1000)} {
		p := sealRaw(t, v1DM(body))
		o, err := OpenDM(bob, p)
		if err != nil {
			t.Fatalf("%d-byte v1 DM: %v", len(body), err)
		}
		if o.Version != 1 || o.Seq != 0 || o.TTL != 0 || !bytes.Equal(o.Body, body) || o.From != alice.Fingerprint() || !o.SentAt.Equal(testTime) {
			t.Fatalf("v1 DM opened to %+v", o)
		}
	}
	if n := len(sealRaw(t, v1DM(nil))); n != 1280 {
		t.Fatalf("smallest v1 DM is %d bytes", n)
	}
	key := ChannelKey{4}
	f := innerFields{version: innerVersion1, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), body: []byte("old news")}
	pt := encodeInner(f, ed25519.Sign(alice.sign, channelSigInput(key.ID(), f)), paddedLen(channelHeaderLenV1+8, chOverhead))
	o, err := OpenChannel(key, sealChannelRaw(t, key, pt))
	if err != nil || o.Version != 1 || o.Seq != 0 || string(o.Body) != "old news" {
		t.Fatalf("v1 channel message: %+v, %v", o, err)
	}
}

// TestVersionBoundToSignature: the signature input names the version, so
// a signature made for one layout never verifies in the other, and the
// sequence and TTL cannot be changed by anyone without the sender's key.
func TestVersionBoundToSignature(t *testing.T) {
	alice, bob := testUsers()
	k := [32]byte{9}
	body := []byte("hello")
	v2 := innerFields{version: innerVersion2, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), receipt: &k, seq: 5, ttl: 60, body: body}
	v1 := v2
	v1.version, v1.seq, v1.ttl = innerVersion1, 0, 0
	size := paddedLen(dmHeaderLen+len(body), dmOverhead)
	cases := map[string][]byte{
		// A v2 layout carrying a signature over the v1 input (what a
		// relay could try to pass off: it holds no such signature, but
		// the sender signed the same fields for version 1 once).
		"v2 with a v1 signature": encodeInner(v2, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), v1)), size),
		"v1 with a v2 signature": encodeInner(v1, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), v2)), size),
		"v2 with seq 0 signed for seq 5": func() []byte {
			f := v2
			f.seq = 0
			return encodeInner(f, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), v2)), size)
		}(),
		"v2 with another TTL": func() []byte {
			f := v2
			f.ttl = 3600
			return encodeInner(f, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), v2)), size)
		}(),
	}
	for name, pt := range cases {
		if _, err := OpenDM(bob, sealRaw(t, pt)); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := OpenDM(bob, sealRaw(t, encodeInner(v2, ed25519.Sign(alice.sign, dmSigInput(bob.Fingerprint(), v2)), size))); err != nil {
		t.Fatalf("control case: %v", err)
	}

	// The same for channels: another key holder changes the number.
	key := ChannelKey{8}
	good, _ := SealChannelWith(alice, key, body, testTime, Meta{Seq: 5, TTL: time.Minute})
	f := innerFields{version: innerVersion2, from: alice.PublicKey(), sentAt: testTime.UnixMilli(), seq: 5, ttl: 60, body: body}
	sig := ed25519.Sign(alice.sign, channelSigInput(key.ID(), f))
	f.seq = 6
	forged := sealChannelRaw(t, key, encodeInner(f, sig, len(good)-chOverhead))
	if _, err := OpenChannel(key, forged); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("channel sequence changed: %v", err)
	}
	f.version, f.seq, f.ttl = innerVersion1, 0, 0
	asV1 := sealChannelRaw(t, key, encodeInner(f, sig, len(good)-chOverhead))
	if _, err := OpenChannel(key, asV1); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("v2 channel signature in a v1 layout: %v", err)
	}
}

// TestDecodeInnerShortV2: a version-2 header one byte short is malformed.
func TestDecodeInnerShortV2(t *testing.T) {
	for _, withReceipt := range []bool{true, false} {
		hdr := headerLen(innerVersion2, withReceipt)
		pt := make([]byte, hdr)
		pt[0] = innerVersion2
		for n := 1; n < hdr; n++ {
			if _, _, err := decodeInner(pt[:n], withReceipt); !errors.Is(err, ErrMalformed) {
				t.Fatalf("receipt %v, %d bytes: %v", withReceipt, n, err)
			}
		}
		if _, _, err := decodeInner(pt, withReceipt); err != nil {
			t.Fatalf("receipt %v: full header: %v", withReceipt, err)
		}
	}
}
