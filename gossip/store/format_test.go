package store

import (
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// TestReceiptsCompactAndFormatOneRead: a receipt takes a compact record
// (60 bytes, not about 400) and reads back as the same envelope; a file
// an older build wrote (format 1) opens and is marked format 2.
func TestReceiptsCompactAndFormatOneRead(t *testing.T) {
	s := openTest(t, Options{})
	r := gossiptest.Receipt(t)
	s.mustPut(r, "client local")
	if st := s.Stats(); st.ReceiptBytes != recHeaderLen+1+gossip.SecretLen {
		t.Fatalf("a receipt takes %d bytes", st.ReceiptBytes)
	}
	got, ok, err := s.Get(r.ID)
	if err != nil || !ok || got.ID != r.ID || string(got.Payload) != string(r.Payload) ||
		string(got.Destination) != string(r.Destination) || got.HopLimit != r.HopLimit {
		t.Fatalf("receipt read back as %+v (%v %v)", got, ok, err)
	}
	e := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(e, "link a")
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	format := func(set []byte) (v []byte) {
		db, err := bolt.Open(s.path, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		db.Update(func(tx *bolt.Tx) error {
			m := tx.Bucket(bucketMeta)
			if set != nil {
				return m.Put(metaFormat, set)
			}
			v = clone(m.Get(metaFormat))
			return nil
		})
		return v
	}
	format([]byte{0, 0, 0, 1})
	s.Store = nil
	s.reopen()
	s.assertHeld(e, r)
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	if v := format(nil); string(v) != string([]byte{0, 0, 0, 2}) {
		t.Fatalf("format after open: %x", v)
	}
	s.Store = nil
	s.reopen()
}
