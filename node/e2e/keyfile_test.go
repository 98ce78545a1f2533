package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/quicproquo/qpq/mesh/identity"
)

func TestKeyFilePlainRoundTrip(t *testing.T) {
	u := NewUser()
	path := filepath.Join(t.TempDir(), "home", "user.key")
	if err := SaveUser(path, u, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %04o, want 0600", st.Mode().Perm())
	}
	if enc, err := IsEncrypted(path); err != nil || enc {
		t.Fatalf("IsEncrypted = %v, %v; want false", enc, err)
	}
	got, err := LoadUser(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !samePublic(u, got) || !bytes.Equal(u.sign, got.sign) || u.kemSeed != got.kemSeed {
		t.Fatal("loaded user differs")
	}
	// A passphrase given for an unencrypted file is ignored.
	if _, err := LoadUser(path, []byte("x")); err != nil {
		t.Fatal(err)
	}
	fp, err := ReadFingerprint(path)
	if err != nil || fp != u.Fingerprint() {
		t.Fatalf("ReadFingerprint = %v, %v", fp, err)
	}
	assertNoTempFiles(t, filepath.Dir(path))
}

func TestKeyFileEncryptedRoundTrip(t *testing.T) {
	u := NewUser()
	dir := t.TempDir()
	path := filepath.Join(dir, "user.key")
	pass := []byte("correct horse battery staple")
	if err := saveUser(path, u, pass, cheapKDF); err != nil {
		t.Fatal(err)
	}
	if enc, err := IsEncrypted(path); err != nil || !enc {
		t.Fatalf("IsEncrypted = %v, %v; want true", enc, err)
	}
	data, _ := os.ReadFile(path)
	if bytes.Contains(data, u.sign.Seed()) || bytes.Contains(data, u.kemSeed[:]) {
		t.Fatal("secret seed in the clear in an encrypted file")
	}
	got, err := LoadUser(path, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !samePublic(u, got) {
		t.Fatal("loaded user differs")
	}
	if _, err := LoadUser(path, nil); !errors.Is(err, ErrPassphraseNeeded) {
		t.Fatalf("no passphrase: %v, want ErrPassphraseNeeded", err)
	}
	if fp, err := ReadFingerprint(path); err != nil || fp != u.Fingerprint() {
		t.Fatalf("ReadFingerprint = %v, %v", fp, err)
	}
	assertNoTempFiles(t, dir)
}

func TestKeyFileWrongPassphraseChangesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "user.key")
	if err := saveUser(path, NewUser(), []byte("right"), cheapKDF); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	st0, _ := os.Stat(path)
	_, err := LoadUser(path, []byte("wrong"))
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("got %v, want ErrWrongPassphrase", err)
	}
	after, _ := os.ReadFile(path)
	st1, _ := os.Stat(path)
	if !bytes.Equal(before, after) || st0.Mode() != st1.Mode() || !st0.ModTime().Equal(st1.ModTime()) {
		t.Fatal("a wrong passphrase changed the key file")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("dir holds %d entries after a failed load, want 1", len(entries))
	}
}

// TestSaveUserDefaultParams runs the real Argon2id parameters once.
func TestSaveUserDefaultParams(t *testing.T) {
	u := NewUser()
	path := filepath.Join(t.TempDir(), "user.key")
	pass := []byte("pw")
	if err := SaveUser(path, u, pass); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	h := data[keyFileHeaderLen:]
	if p, m, th := binary.BigEndian.Uint32(h[0:]), binary.BigEndian.Uint32(h[4:]), h[8]; p != 3 || m != 32<<10 || th != 1 {
		t.Fatalf("stored params passes=%d memory=%dKiB threads=%d, want 3, 32768, 1", p, m, th)
	}
	got, err := LoadUser(path, pass)
	if err != nil {
		t.Fatal(err)
	}
	if !samePublic(u, got) {
		t.Fatal("loaded user differs")
	}
}

func TestKeyFileSaltAndNonceFresh(t *testing.T) {
	u := NewUser()
	a, _ := encodeKeyFile(u, []byte("p"), cheapKDF)
	b, _ := encodeKeyFile(u, []byte("p"), cheapKDF)
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions of one key file are identical")
	}
}

func TestLoadUserRefusesOpenMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user.key")
	if err := SaveUser(path, NewUser(), nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadUser(path, nil); !errors.Is(err, identity.ErrKeyFileMode) {
		t.Fatalf("got %v, want ErrKeyFileMode", err)
	}
}

func TestLoadUserMissingAndNotRegular(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadUser(filepath.Join(dir, "nope"), nil); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := LoadUser(dir, nil); !errors.Is(err, ErrCorruptKeyFile) {
		t.Fatalf("directory: %v", err)
	}
}

func TestKeyFileCorruption(t *testing.T) {
	u := NewUser()
	for _, tc := range []struct {
		name string
		pass []byte
	}{{"plain", nil}, {"encrypted", []byte("pw")}} {
		t.Run(tc.name, func(t *testing.T) {
			good, err := encodeKeyFile(u, tc.pass, cheapKDF)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := decodeKeyFile(good, tc.pass, fileLimits()); err != nil {
				t.Fatal(err)
			}
			for n := 0; n < len(good); n++ {
				if _, err := decodeKeyFile(good[:n], tc.pass, fileLimits()); !errors.Is(err, ErrCorruptKeyFile) {
					t.Fatalf("truncated to %d: %v, want ErrCorruptKeyFile", n, err)
				}
			}
			for i := range good {
				bad := bytes.Clone(good)
				bad[i] ^= 0x10
				if _, err := decodeKeyFile(bad, tc.pass, fileLimits()); !errors.Is(err, ErrCorruptKeyFile) {
					t.Fatalf("byte %d flipped: %v, want ErrCorruptKeyFile", i, err)
				}
			}
			long := append(bytes.Clone(good), make([]byte, maxKeyFile)...)
			path := filepath.Join(t.TempDir(), "user.key")
			if err := os.WriteFile(path, long, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadUser(path, tc.pass); !errors.Is(err, ErrCorruptKeyFile) {
				t.Fatalf("oversized file: %v", err)
			}
		})
	}
}

// resum rewrites the trailing checksum after a test edits a file.
func resum(b []byte) []byte { return appendSum(b[:len(b)-32]) }

func TestKeyFileRejectsBadStructure(t *testing.T) {
	u := NewUser()
	plain, _ := encodeKeyFile(u, nil, cheapKDF)
	enc, _ := encodeKeyFile(u, []byte("pw"), cheapKDF)
	other := NewUser()

	edit := func(b []byte, f func([]byte) []byte) []byte { return resum(f(bytes.Clone(b))) }
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"version 2", edit(plain, func(b []byte) []byte { b[8] = 2; return b }), ErrCorruptKeyFile},
		{"protection 7", edit(plain, func(b []byte) []byte { b[9] = 7; return b }), ErrCorruptKeyFile},
		{"public key of another user", edit(plain, func(b []byte) []byte { copy(b[10:], other.PublicKey()); return b }), ErrCorruptKeyFile},
		{"seed record short", edit(plain, func(b []byte) []byte { b[keyFileHeaderLen+2] = 31; return b }), ErrCorruptKeyFile},
		{"missing KEM record", edit(plain, func(b []byte) []byte {
			return append(b[:keyFileHeaderLen+35], make([]byte, 32)...)
		}), ErrCorruptKeyFile},
		{"repeated record", edit(plain, func(b []byte) []byte {
			recs := bytes.Clone(b[keyFileHeaderLen : keyFileHeaderLen+70])
			return append(append(b[:len(b)-32], recs[:35]...), make([]byte, 32)...)
		}), ErrCorruptKeyFile},
		{"passes 0", edit(enc, func(b []byte) []byte { binary.BigEndian.PutUint32(b[42:], 0); return b }), ErrCorruptKeyFile},
		{"memory 4 GiB", edit(enc, func(b []byte) []byte { binary.BigEndian.PutUint32(b[46:], 1<<22); return b }), ErrCorruptKeyFile},
		{"threads 0", edit(enc, func(b []byte) []byte { b[50] = 0; return b }), ErrCorruptKeyFile},
		{"params changed", edit(enc, func(b []byte) []byte { binary.BigEndian.PutUint32(b[42:], 2); return b }), ErrWrongPassphrase},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeKeyFile(tc.data, []byte("pw"), fileLimits())
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyFileKeepsUnknownRecords(t *testing.T) {
	u := NewUser()
	u.extra = []byte{200, 0, 3, 'a', 'b', 'c'}
	path := filepath.Join(t.TempDir(), "user.key")
	if err := saveUser(path, u, []byte("pw"), cheapKDF); err != nil {
		t.Fatal(err)
	}
	got, err := LoadUser(path, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.extra, u.extra) {
		t.Fatalf("extra records %x, want %x", got.extra, u.extra)
	}
	// Re-saving (a passphrase change) keeps them too.
	if err := saveUser(path, got, nil, cheapKDF); err != nil {
		t.Fatal(err)
	}
	again, err := LoadUser(path, nil)
	if err != nil || !bytes.Equal(again.extra, u.extra) || !samePublic(u, again) {
		t.Fatalf("after re-save: %v, extra %x", err, again.extra)
	}
}

func TestIsEncryptedCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "user.key")
	os.WriteFile(path, []byte("not a key file at all, not even close......"), 0o600)
	if _, err := IsEncrypted(path); !errors.Is(err, ErrCorruptKeyFile) {
		t.Fatalf("got %v", err)
	}
	if _, err := ReadFingerprint(path); !errors.Is(err, ErrCorruptKeyFile) {
		t.Fatalf("got %v", err)
	}
}

func assertNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() != "user.key" {
			t.Errorf("stray file %s left in %s", e.Name(), dir)
		}
	}
}
