package store

import (
	"os"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// FuzzOpen opens damaged store files: Open and every read and write on
// what it accepts return errors, never panic.
func FuzzOpen(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "seed.db")
	s, err := Open(path, Options{Clock: newClock()})
	if err != nil {
		f.Fatal(err)
	}
	dest := gossiptest.Random(gossip.DestLen)
	for range 3 {
		if _, err := s.Put(gossiptest.DM(dest, nil, 60, 1), "a"); err != nil {
			f.Fatal(err)
		}
	}
	s.Close()
	img, err := os.ReadFile(path)
	if err != nil {
		f.Fatal(err)
	}
	// Only the pages in use: the rest of the file is preallocated zeros.
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		f.Fatal(err)
	}
	var used int64
	db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil })
	db.Close()
	f.Add(img[:used])
	f.Add([]byte{})
	f.Add(make([]byte, 4096))

	f.Fuzz(func(t *testing.T, b []byte) {
		path := filepath.Join(t.TempDir(), "store.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(path, Options{Clock: newClock()})
		if err != nil {
			return
		}
		defer s.Close()
		s.Stats()
		s.Mailbox(dest, 0)
		s.IDs(func(id gossip.ID, _ schemas.Envelope_Kind) bool { s.Get(id); return true })
		s.Put(gossiptest.DM(dest, nil, 60, 1), "b")
		s.DeleteByReceiptTag(make([]byte, gossip.TagLen))
		s.Purge()
	})
}
