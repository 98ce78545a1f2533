package identity

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestLoadNodeNeverCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if _, err := LoadNode(dir); !errors.Is(err, ErrNoNodeIdentity) {
		t.Fatalf("LoadNode of a missing dir: %v, want ErrNoNodeIdentity", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("LoadNode created the dir: %v", err)
	}
	made, _, err := LoadOrCreateNode(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadNode(dir)
	if err != nil || got.Fingerprint() != made.Fingerprint() {
		t.Fatalf("LoadNode after create: %v, %v", got, err)
	}
	if err := os.Chmod(filepath.Join(dir, NodeKeyFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadNode(dir); !errors.Is(err, ErrKeyFileMode) {
		t.Fatalf("LoadNode of a readable key: %v, want ErrKeyFileMode", err)
	}
}
