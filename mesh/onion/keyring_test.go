package onion

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
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

// A packet is peeled once: again, it is a replay; a keyring kept in
// memory only starts with a new key, so a restart does not honour the
// old one at all.
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

// Keys kept in a file survive a restart with their replay caches: the
// same key is current and a replay is still refused. When the caches are
// gone (a reboot wiped the store), the key is not honoured again and a
// new one, the next epoch, is current.
func TestKeyringRestarts(t *testing.T) {
	file := filepath.Join(t.TempDir(), "onion.keys")
	cache := newMemCache()
	var now time.Duration
	clock := func() time.Duration { return now }
	k, err := NewKeyring(KeyringOptions{File: file, Cache: cache, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	e0, _ := k.Current()
	pkt := keyringPacket(t, k)
	if _, err := k.Peel(pkt); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	now = time.Minute
	k, err = NewKeyring(KeyringOptions{File: file, Cache: cache, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := k.Current(); e != e0 {
		t.Fatalf("epoch %d after a restart, was %d", e, e0)
	}
	if _, err := k.Peel(pkt); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed after a restart: %v", err)
	}
	if _, err := k.Peel(keyringPacket(t, k)); err != nil {
		t.Fatalf("a new packet after a restart: %v", err)
	}
	// The store is wiped: no caches.
	k, err = NewKeyring(KeyringOptions{File: file, Cache: newMemCache(), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Peel(pkt); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("replayed after the caches were lost: %v", err)
	}
	if e, _ := k.Current(); e == e0 {
		t.Fatal("the key whose cache was lost is still current")
	}
	// A damaged key file is not fatal: its lines are skipped.
	os.WriteFile(file, []byte("garbage\n"), 0o600)
	if _, err := NewKeyring(KeyringOptions{File: file, Cache: newMemCache(), Now: clock}); err != nil {
		t.Fatalf("damaged key file: %v", err)
	}
}

// Keys rotate after their period; a retired key is honoured for the
// overlap, then refused and its cache dropped; a cache that fills
// rotates the key early.
func TestKeyringRotates(t *testing.T) {
	var now time.Duration
	cache := newMemCache()
	k, err := NewKeyring(KeyringOptions{Period: time.Hour, Overlap: 10 * time.Minute, MaxTags: 3, Cache: cache, Now: func() time.Duration { return now }})
	if err != nil {
		t.Fatal(err)
	}
	e0, pub0 := k.Current()
	old := keyringPacket(t, k)
	stale, _ := Build([]Hop{{Key: pub0, Epoch: e0}}, nil, rand.Reader)
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
	now += 10 * time.Minute
	if rotated, _ := k.Tick(); rotated {
		t.Fatal("rotated again before the period")
	}
	if _, err := k.Peel(stale); !errors.Is(err, ErrUnknownEpoch) {
		t.Fatalf("a packet under a key past its overlap: %v", err)
	}
	if keys, _ := cache.ReplayKeys(); len(keys) != 1 {
		t.Fatalf("%d replay caches after the old key went, want 1", len(keys))
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
	if s := k.Stats(); s.Keys != 2 || s.Rotations != 3 {
		t.Fatalf("stats %+v, want 2 keys and 3 rotations (the first key, the period, the full cache)", s)
	}
}
