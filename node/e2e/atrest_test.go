package e2e

import (
	"path/filepath"
	"testing"
)

// The at-rest key must be the same after the key file is saved and loaded
// again (or the outbox written before could not be read), differ per
// purpose and per user.
func TestAtRestKeyStableAcrossKeyFileAndDistinct(t *testing.T) {
	u := NewUser()
	path := filepath.Join(t.TempDir(), "user.key")
	if err := SaveUser(path, u, nil); err != nil {
		t.Fatal(err)
	}
	again, err := LoadUser(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if u.AtRestKey("outbox") != again.AtRestKey("outbox") {
		t.Fatal("at-rest key changed across save and load")
	}
	if u.AtRestKey("outbox") == u.AtRestKey("history") {
		t.Fatal("two purposes share one key")
	}
	if u.AtRestKey("outbox") == NewUser().AtRestKey("outbox") {
		t.Fatal("two users share one key")
	}
	var zero [32]byte
	if u.AtRestKey("") == zero {
		t.Fatal("zero key")
	}
}
