package atrest

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealOpenBoundToKeyAndSlot(t *testing.T) {
	k := New([32]byte{1})
	pt := []byte("meet at the water tower")
	s := k.Seal([]byte("entries/1"), pt)
	if bytes.Contains(s, pt) {
		t.Fatal("plaintext visible in the sealed value")
	}
	got, err := k.Open([]byte("entries/1"), s)
	if err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := k.Open([]byte("entries/2"), s); !errors.Is(err, ErrCannotOpen) {
		t.Fatalf("other slot: %v", err)
	}
	if _, err := New([32]byte{2}).Open([]byte("entries/1"), s); !errors.Is(err, ErrCannotOpen) {
		t.Fatalf("other key: %v", err)
	}
	for _, bad := range [][]byte{nil, s[:Overhead-1], append([]byte{9}, s[1:]...)} {
		if _, err := k.Open([]byte("entries/1"), bad); !errors.Is(err, ErrCannotOpen) {
			t.Fatalf("malformed %x: %v", bad, err)
		}
	}
	if bytes.Equal(k.Name("tag", []byte("a")), k.Name("tags", []byte("a"))) {
		t.Fatal("labels not separated")
	}
}
