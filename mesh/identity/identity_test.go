package identity

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFingerprintForms(t *testing.T) {
	pub := ed25519.PublicKey(make([]byte, 32))
	fp := FingerprintOf(pub)
	s := fp.String()
	if len(s) != FingerprintLen || strings.ToLower(s) != s || strings.Contains(s, "=") {
		t.Fatalf("fingerprint %q: want %d lowercase base32 characters without padding", s, FingerprintLen)
	}
	short := fp.Short()
	groups := strings.Split(short, "-")
	if len(groups) != 7 || strings.Join(groups, "") != s[:ShortCodeLen] {
		t.Fatalf("short code %q: want 7 groups of 4 from %q", short, s[:ShortCodeLen])
	}
	for _, g := range groups {
		if len(g) != 4 {
			t.Fatalf("short code %q has a group of %d", short, len(g))
		}
	}
	// A different key gives a different fingerprint; the label matters.
	other := FingerprintOf(ed25519.PublicKey(append(make([]byte, 31), 1)))
	if other.Equal(fp) {
		t.Fatal("two keys share a fingerprint")
	}
}

func TestParseFingerprint(t *testing.T) {
	fp := FingerprintOf(ed25519.PublicKey(make([]byte, 32)))
	for _, in := range []string{fp.String(), strings.ToUpper(fp.String())} {
		got, err := ParseFingerprint(in)
		if err != nil || got != fp {
			t.Fatalf("parse %q: %v", in, err)
		}
	}
	// Too short, too long, outside the alphabet, and a final character
	// whose 4 padding bits are not zero ('b' is 1): a second spelling of a
	// key must not parse.
	for _, in := range []string{"", fp.String()[:51], fp.String() + "a", fp.String()[:51] + "1", fp.String()[:51] + "!", fp.String()[:51] + "b"} {
		if _, err := ParseFingerprint(in); !errors.Is(err, ErrBadFingerprint) {
			t.Errorf("parse %q: got %v, want ErrBadFingerprint", in, err)
		}
	}
}

func TestNodeIdentityCreatedOnceWithMode0600(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, created, err := LoadOrCreateNode(dir)
	if err != nil || !created {
		t.Fatalf("first start: created=%v err=%v", created, err)
	}
	for _, f := range []string{NodeKeyFile, OnionKeyFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
	b, created, err := LoadOrCreateNode(dir)
	if err != nil || created {
		t.Fatalf("second start: created=%v err=%v", created, err)
	}
	if a.Fingerprint() != b.Fingerprint() || !a.Onion.Equal(b.Onion) {
		t.Fatal("identity changed across restarts")
	}
}

func TestNodeRefusesReadableKeyFile(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadOrCreateNode(dir); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, NodeKeyFile)
	os.Chmod(path, 0o644)
	_, _, err := LoadOrCreateNode(dir)
	if !errors.Is(err, ErrKeyFileMode) {
		t.Fatalf("mode 0644: got %v, want ErrKeyFileMode", err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("error %q should name the file and the fix", err)
	}
}

func TestNodeRejectsGarbageKeyFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, NodeKeyFile), []byte("not a key"), 0o600)
	_, _, err := LoadOrCreateNode(dir)
	if err == nil || !strings.Contains(err.Error(), NodeKeyFile) {
		t.Fatalf("garbage key file: %v", err)
	}
	// The bad file is left alone for the operator to inspect: never
	// silently replaced by a new identity.
	b, _ := os.ReadFile(filepath.Join(dir, NodeKeyFile))
	if string(b) != "not a key" {
		t.Fatal("garbage key file was overwritten")
	}
}

func FuzzParseFingerprint(f *testing.F) {
	f.Add(FingerprintOf(ed25519.PublicKey(make([]byte, 32))).String())
	f.Add("")
	f.Add(strings.Repeat("a", 52))
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := ParseFingerprint(s)
		if err != nil {
			return
		}
		if fp.String() != strings.ToLower(s) {
			t.Fatalf("accepted %q but prints %q", s, fp.String())
		}
	})
}
