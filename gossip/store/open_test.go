package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

func TestOpenCreatesPrivateFile(t *testing.T) {
	s := openTest(t, Options{})
	fi, err := os.Stat(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	if s.Path() != s.path {
		t.Fatalf("Path() = %q", s.Path())
	}
}

func TestOpenRefusesCorruptFiles(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.db")
	s, err := Open(good, Options{Clock: newClock()})
	if err != nil {
		t.Fatal(err)
	}
	for range 50 {
		if _, err := s.Put(gossiptest.DM(nil, nil, 60, 4), "a"); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	img, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	db, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("etcd")); return err })
	db.Close()

	cases := map[string][]byte{
		"garbage":      bytes.Repeat([]byte("not a database "), 1000),
		"truncated":    img[:64<<10], // its pages reach past 64 KiB
		"meta smashed": append(bytes.Repeat([]byte{0xa5}, 8192), img[8192:]...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(path, Options{})
			if err == nil {
				s.Close()
				t.Fatal("opened a corrupt file")
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q: want ErrCorrupt naming the path", err)
			}
		})
	}
	t.Run("foreign bbolt", func(t *testing.T) {
		_, err := Open(foreign, Options{})
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), foreign) || !strings.Contains(err.Error(), "not a qpq store") {
			t.Fatalf("error %q", err)
		}
	})
	t.Run("missing directory", func(t *testing.T) {
		path := filepath.Join(dir, "no", "such", "store.db")
		_, err := Open(path, Options{})
		if err == nil || !strings.Contains(err.Error(), path) || !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %q", err)
		}
	})
}

func TestOpenLockedBySecondOpener(t *testing.T) {
	s := openTest(t, Options{})
	start := time.Now()
	_, err := Open(s.path, Options{LockTimeout: 50 * time.Millisecond})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), s.path) || !strings.Contains(err.Error(), "another node") {
		t.Fatalf("second open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second open took %v", d)
	}
	s.mustPut(gossiptest.DM(nil, nil, 60, 1), "a") // the first is unharmed
}

func TestOptionsValidation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	_, err := Open(path, Options{MaxBytes: -1, MaxPerMailbox: -2, MaxTTL: time.Millisecond, LockTimeout: -1})
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{path, "MaxBytes", "MaxPerMailbox", "MaxTTL", "LockTimeout"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("bad options still created the file")
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	s := openTest(t, Options{})
	e := gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(e, "a")
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Store.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := s.Put(gossiptest.DM(nil, nil, 60, 1), "a"); !errors.Is(err, ErrClosed) {
		t.Fatalf("put after close: %v", err)
	}
	if _, _, err := s.Get(e.ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v", err)
	}
	if _, err := s.Delete(e.ID); !errors.Is(err, ErrClosed) {
		t.Fatalf("delete after close: %v", err)
	}
	if _, _, err := s.Purge(); !errors.Is(err, ErrClosed) {
		t.Fatalf("purge after close: %v", err)
	}
	if s.Has(e.ID) {
		t.Fatal("Has after close")
	}
}

func TestFileHoldsNoSource(t *testing.T) {
	s := openTest(t, Options{})
	const source = "peer-3fz7qmarkerSOURCEmarker"
	for range 20 {
		s.mustPut(gossiptest.DM(nil, nil, 3600, 2), source)
	}
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(s.path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte(source)) || bytes.Contains(b, []byte("SOURCEmarker")) {
		t.Fatal("the store file holds the source name")
	}
}
