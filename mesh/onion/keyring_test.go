package onion

import (
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// keyringPacket is a packet for a one-relay route to k's current key.
func keyringPacket(t *testing.T, k *Keyring) []byte {
	t.Helper()
	epoch, pub := k.Current()
	pkt, err := Build([]Hop{{Key: pub, Epoch: epoch}}, []byte("x"), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pkt
}

// A packet is peeled once: again, it is a replay; a new keyring (a
// restart) does not hold the key at all.
func TestKeyringRefusesReplays(t *testing.T) {
	k, err := NewKeyring(KeyringOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pkt := keyringPacket(t, k)
	if _, err := k.Peel(pkt); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Peel(pkt); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed: %v", err)
	}
	restarted, _ := NewKeyring(KeyringOptions{})
	if _, err := restarted.Peel(pkt); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("replayed after a restart: %v", err)
	}
}

// Keys rotate after their period; a retired key is honoured for the
// overlap, then refused; a cache that fills rotates the key early.
func TestKeyringRotates(t *testing.T) {
	var now time.Duration
	k, err := NewKeyring(KeyringOptions{Period: time.Hour, Overlap: 10 * time.Minute, MaxTags: 3, Now: func() time.Duration { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e0, _ := k.Current()
	old := keyringPacket(t, k)
	now = time.Hour
	if rotated, err := k.Tick(); err != nil || !rotated {
		t.Fatalf("no rotation after the period: %v %v", rotated, err)
	}
	if e1, _ := k.Current(); e1 != e0+1 {
		t.Fatalf("epoch %d after %d", e1, e0)
	}
	if _, err := k.Peel(old); err != nil {
		t.Fatalf("a packet under the retired key within the overlap: %v", err)
	}
	// Another packet under the first key, for after its overlap.
	stale := func() []byte {
		k.mu.Lock()
		pub, ep := k.keys[len(k.keys)-1].priv.PublicKey(), k.keys[len(k.keys)-1].epoch
		k.mu.Unlock()
		pkt, _ := Build([]Hop{{Key: pub, Epoch: ep}}, nil, rand.Reader)
		return pkt
	}()
	now += 10 * time.Minute
	if rotated, _ := k.Tick(); rotated {
		t.Fatal("rotated again before the period")
	}
	if _, err := k.Peel(stale); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("a packet under a key past its overlap: %v", err)
	}
	// Three packets fill the cache of MaxTags 3: the key rotates early.
	for range 3 {
		if _, err := k.Peel(keyringPacket(t, k)); err != nil {
			t.Fatal(err)
		}
	}
	e2, _ := k.Current()
	if rotated, _ := k.Tick(); !rotated {
		t.Fatal("a full cache did not rotate the key")
	}
	if e3, _ := k.Current(); e3 != e2+1 {
		t.Fatalf("epoch %d after %d", e3, e2)
	}
	if s := k.Stats(); s.Keys != 2 || s.Rotations != 2 {
		t.Fatalf("stats %+v, want 2 keys and 2 rotations", s)
	}
}
