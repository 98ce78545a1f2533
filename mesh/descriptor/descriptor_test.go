package descriptor

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

func TestSignVerifyRoundTrip(t *testing.T) {
	id, _ := identity.NewNode()
	b, err := Sign(id, []string{"10.0.0.1:7443", "[2001:db8::1]:7443"}, "qpq", 5, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Verify(b)
	if err != nil {
		t.Fatal(err)
	}
	if d.FP != id.Fingerprint() || d.Seq != 5 || d.Domain != "qpq" || len(d.Addrs) != 2 || d.Lifetime != time.Hour {
		t.Fatalf("got %+v", d)
	}
}

func TestForgedAndTruncatedRefused(t *testing.T) {
	id, _ := identity.NewNode()
	b, _ := Sign(id, []string{"10.0.0.1:7443"}, "qpq", 1, time.Hour)
	for i := 0; i < len(b); i += 7 {
		if _, err := Verify(b[:i]); !errors.Is(err, ErrBad) {
			t.Fatalf("truncated to %d bytes: %v", i, err)
		}
	}
	for i := 0; i < len(b); i++ {
		c := append([]byte(nil), b...)
		c[i] ^= 0x01
		d, err := Verify(c)
		if err == nil && d.FP == id.Fingerprint() && d.Seq == 1 && d.Addrs[0] == "10.0.0.1:7443" {
			// A flip in padding or an unused pointer bit can leave the
			// signed bytes intact; anything else must fail.
			continue
		}
		if err == nil {
			t.Fatalf("byte %d flipped: accepted a changed descriptor %+v", i, d)
		}
	}
	if _, err := Sign(id, nil, "qpq", 1, time.Hour); err == nil {
		t.Fatal("a descriptor without addresses was made")
	}
}

func FuzzVerify(f *testing.F) {
	id, _ := identity.NewNode()
	b, _ := Sign(id, []string{"10.0.0.1:7443"}, "qpq", 1, time.Hour)
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Verify(b)
		if err == nil && (len(d.Addrs) == 0 || d.FP.IsZero()) {
			t.Fatalf("accepted an incomplete descriptor %+v", d)
		}
	})
}

// A relaying node's descriptor carries its current onion key, the key's
// epoch and the packet version it relays; a descriptor without them (an
// older node's) reads as version 0, never picked as a relay.
func TestOnionKeyAndEpoch(t *testing.T) {
	id, _ := identity.NewNode()
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	b, err := SignOnion(id, Onion{Key: k.PublicKey(), Epoch: 77, Version: 1}, []string{"10.0.0.1:7443"}, "qpq", 1, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Verify(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(d.Onion, k.PublicKey().Bytes()) || d.OnionEpoch != 77 || d.OnionVersion != 1 {
		t.Fatalf("onion key %x epoch %d version %d", d.Onion[:4], d.OnionEpoch, d.OnionVersion)
	}
	old, _ := Sign(id, []string{"10.0.0.1:7443"}, "qpq", 2, time.Hour)
	if d, _ := Verify(old); d.OnionVersion != 0 {
		t.Fatalf("a descriptor without onion relaying reads as version %d", d.OnionVersion)
	}
	if _, err := SignOnion(id, Onion{}, []string{"10.0.0.1:7443"}, "qpq", 1, time.Hour); !errors.Is(err, ErrBad) {
		t.Fatalf("no onion key: %v", err)
	}
}

func TestMarkIslandKeepsTheSignatureAndIsDeterministic(t *testing.T) {
	id, _ := identity.NewNode()
	b, _ := Sign(id, []string{"10.0.0.1:7443"}, "qpq", 3, time.Hour)
	m, err := MarkIsland(b, "north")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Verify(m)
	if err != nil {
		t.Fatalf("marked descriptor does not verify: %v", err)
	}
	if d.FP != id.Fingerprint() || d.Seq != 3 || d.Island != "north" || d.Addrs[0] != "10.0.0.1:7443" {
		t.Fatalf("marked: %+v", d)
	}
	if plain, _ := Verify(b); plain.Island != "" {
		t.Fatalf("unmarked descriptor has island %q", plain.Island)
	}
	again, _ := MarkIsland(b, "north")
	if !bytes.Equal(m, again) {
		t.Fatal("two marks of one descriptor differ: two bridges would make two envelopes")
	}
	// A descriptor already marked keeps its first island.
	if twice, err := MarkIsland(m, "south"); err != nil || !bytes.Equal(twice, m) {
		t.Fatalf("re-marked: %v", err)
	}
	for _, bad := range []string{"", "North", "a b", "x\x00", string(bytes.Repeat([]byte("a"), 33))} {
		if _, err := MarkIsland(b, bad); !errors.Is(err, ErrBad) {
			t.Fatalf("island %q: %v", bad, err)
		}
	}
	if _, err := MarkIsland(b[:len(b)-3], "north"); !errors.Is(err, ErrBad) {
		t.Fatalf("truncated descriptor marked: %v", err)
	}
}
