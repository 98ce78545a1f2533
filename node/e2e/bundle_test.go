package e2e

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"testing"
	"time"

	"capnproto.org/go/capnp/v3"

	"github.com/quicproquo/qpq/schemas"
)

func TestBundleRoundTrip(t *testing.T) {
	u := NewUser()
	b, err := u.SignedBundle(7, 30*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxBundleSize {
		t.Fatalf("bundle is %d bytes, over MaxBundleSize", len(b))
	}
	got, err := VerifyBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Identity, u.PublicKey()) || !bytes.Equal(got.KEMKey, u.KEMPublicKey()) {
		t.Fatal("keys differ")
	}
	if got.Sequence != 7 || got.Lifetime != 30*24*time.Hour || got.Fingerprint != u.Fingerprint() {
		t.Fatalf("got seq %d lifetime %v fp %v", got.Sequence, got.Lifetime, got.Fingerprint)
	}
	t.Logf("signed bundle: %d bytes", len(b))
}

func TestBundleLifetimeRange(t *testing.T) {
	u := NewUser()
	for _, d := range []time.Duration{0, -time.Second, 999 * time.Millisecond, (1 << 32) * time.Second} {
		if _, err := u.SignedBundle(1, d); err == nil {
			t.Errorf("lifetime %v accepted", d)
		}
	}
	if _, err := u.SignedBundle(1, (1<<32-1)*time.Second); err != nil {
		t.Error(err)
	}
}

// rawBundle builds a SignedBundle from parts, signing inner with key when
// sig is nil.
func rawBundle(t testing.TB, idKey, kemKey []byte, signer ed25519.PrivateKey, sig []byte) []byte {
	t.Helper()
	inner, err := encodeMessage(func(seg *capnp.Segment) error {
		b, err := schemas.NewRootUserKeyBundle(seg)
		if err != nil {
			return err
		}
		if idKey != nil {
			b.SetIdentityKey(idKey)
		}
		if kemKey != nil {
			b.SetKemKey(kemKey)
		}
		b.SetSequence(1)
		b.SetLifetimeSeconds(60)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if sig == nil {
		sig = ed25519.Sign(signer, bundleSigInput(inner))
	}
	return signedBundleOf(t, inner, sig)
}

func signedBundleOf(t testing.TB, inner, sig []byte) []byte {
	t.Helper()
	out, err := encodeMessage(func(seg *capnp.Segment) error {
		s, err := schemas.NewRootSignedBundle(seg)
		if err != nil {
			return err
		}
		if inner != nil {
			s.SetBundle(inner)
		}
		if sig != nil {
			s.SetSignature(sig)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestVerifyBundleRejects(t *testing.T) {
	u, other := testUsers()
	good, _ := u.SignedBundle(1, time.Hour)
	msg, _ := schemas.Unmarshal(good)
	sb, _ := schemas.ReadRootSignedBundle(msg)
	inner, _ := sb.Bundle()
	sig, _ := sb.Signature()

	badSig := bytes.Clone(sig)
	badSig[5] ^= 1
	innerFlip := bytes.Clone(inner)
	innerFlip[len(innerFlip)-1] ^= 1 // inside the KEM key
	// An ML-KEM key whose first coefficient is not reduced mod q.
	badKEM := bytes.Clone(u.kemPub)
	badKEM[0], badKEM[1] = 0xff, 0xff

	cases := []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, ErrBadBundle},
		{"garbage", []byte("definitely not capnp"), ErrBadBundle},
		{"oversized", make([]byte, MaxBundleSize+1), ErrBadBundle},
		{"truncated", good[:len(good)-10], ErrBadBundle},
		{"no signature", signedBundleOf(t, inner, nil), ErrBadBundle},
		{"short signature", signedBundleOf(t, inner, sig[:63]), ErrBadBundle},
		{"no bundle", signedBundleOf(t, nil, sig), ErrBadBundle},
		{"inner garbage", signedBundleOf(t, []byte("xxxxxxxxxxxxxxxxxxxx"), sig), ErrBadBundle},
		{"bad signature", signedBundleOf(t, inner, badSig), ErrBadSignature},
		{"signature of another bundle", signedBundleOf(t, innerFlip, sig), ErrBadSignature},
		{"signed by someone else", rawBundle(t, u.PublicKey(), u.kemPub, other.sign, nil), ErrBadSignature},
		{"short identity key", rawBundle(t, u.PublicKey()[:31], u.kemPub, u.sign, nil), ErrBadBundle},
		{"no identity key", rawBundle(t, nil, u.kemPub, u.sign, nil), ErrBadBundle},
		{"short KEM key", rawBundle(t, u.PublicKey(), u.kemPub[:1215], u.sign, nil), ErrBadBundle},
		{"X25519-only KEM key", rawBundle(t, u.PublicKey(), u.kemPub[:32], u.sign, nil), ErrBadBundle},
		{"unreduced KEM key", rawBundle(t, u.PublicKey(), badKEM, u.sign, nil), ErrBadBundle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := VerifyBundle(tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyBundleIsAboutItsOwnKey(t *testing.T) {
	// A valid bundle of someone else verifies, but its fingerprint says
	// whose it is: callers must compare it.
	u, other := testUsers()
	b, _ := other.SignedBundle(1, time.Hour)
	got, err := VerifyBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint == u.Fingerprint() {
		t.Fatal("fingerprint of another user's bundle matches")
	}
}
