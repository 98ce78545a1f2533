package store

import (
	"errors"
	"path/filepath"
	"testing"
)

// A replay cache survives the store's reopening, says whether a tag is
// new, and once dropped is gone: a key without one cannot record tags.
func TestReplayCachePersists(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, tag := []byte("key-1"), []byte("tag-1")
	if _, err := s.ReplayAdd(key, tag); !errors.Is(err, ErrNoReplayCache) {
		t.Fatalf("add before create: %v", err)
	}
	if err := s.ReplayCreate(key); err != nil {
		t.Fatal(err)
	}
	if fresh, err := s.ReplayAdd(key, tag); err != nil || !fresh {
		t.Fatalf("first add: %v %v", fresh, err)
	}
	if fresh, err := s.ReplayAdd(key, tag); err != nil || fresh {
		t.Fatalf("second add: %v %v", fresh, err)
	}
	s.Close()
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ok, n, err := s.ReplayCount(key); !ok || n != 1 || err != nil {
		t.Fatalf("after reopening: exists %v, %d tags, %v", ok, n, err)
	}
	if fresh, _ := s.ReplayAdd(key, tag); fresh {
		t.Fatal("a tag recorded before the reopening is new again")
	}
	if keys, _ := s.ReplayKeys(); len(keys) != 1 || string(keys[0]) != "key-1" {
		t.Fatalf("keys %q", keys)
	}
	if err := s.ReplayDrop(key); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := s.ReplayCount(key); ok {
		t.Fatal("dropped cache still there")
	}
	if _, err := s.ReplayAdd(key, make([]byte, MaxReplayTag+1)); err == nil {
		t.Fatal("an overlong tag was taken")
	}
}
