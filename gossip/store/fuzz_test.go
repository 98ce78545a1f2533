package store

import (
	"bytes"
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

// FuzzApply decodes a sequence of ops from its input (puts of new and
// repeated envelopes from a few sources into a few mailboxes, receipt
// tag deletions, deletions by id, refused ops) under tight quotas, and
// applies it as one batch on one store and one by one on another: the
// results and figures must be the same, and both files must pass the
// store's checks (at cleanup).
func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7})
	f.Add([]byte{0, 0x25, 5, 0, 4, 0, 0x43, 6, 1, 7, 0x88, 0x99})
	f.Add(bytes.Repeat([]byte{0x11, 0x32, 0x53, 0x74}, 16))
	size := recordSize(f, gossiptest.DM(nil, nil, 60, 1))
	o := Options{MaxBytes: 16*size + 3, MaxReceiptBytes: 1, MaxBundleBytes: 1, MaxDescriptorBytes: 1,
		MaxPerSource: 8 * size, MaxPerMailbox: 6 * size, MaxPerMailboxSource: 3 * size}
	dests := [][]byte{gossiptest.Random(gossip.DestLen), gossiptest.Random(gossip.DestLen), gossiptest.Random(gossip.DestLen)}
	sources := []string{"a", "b", "c", "d"}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 2*64 {
			in = in[:2*64]
		}
		var put []gossip.Envelope
		var ops []Op
		pick := func(b byte) gossip.Envelope { return put[int(b>>3)%len(put)] }
		for len(in) > 0 {
			b := in[0]
			in = in[1:]
			switch k := b % 8; {
			case k < 4 || len(put) == 0:
				e := gossiptest.DM(dests[int(b>>3)%len(dests)], nil, 3600, 1)
				put = append(put, e)
				ops = append(ops, putOp(e, sources[int(b>>5)%len(sources)]))
			case k == 4:
				ops = append(ops, putOp(pick(b), sources[int(b>>6)%len(sources)]))
			case k == 5:
				ops = append(ops, Op{DeleteTag: pick(b).ReceiptTag})
			case k == 6:
				ops = append(ops, deleteOp(pick(b).ID))
			default:
				ops = append(ops, putOp(gossiptest.DM(nil, nil, 0, 1), "a")) // refused: no TTL
			}
		}
		batch, single := openFast(t, o), openFast(t, o)
		applyBothWays(t, batch, single, ops)
		compareStats(t, batch.Stats(), single.Stats())
	})
}
