package store

import (
	"bytes"
	"crypto/rand"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// putReceipts stores n receipts with the given TTL and returns their
// secrets in the order put.
func putReceipts(ts *testStore, n int, ttl uint32) [][]byte {
	ts.t.Helper()
	var out [][]byte
	for range n {
		k := make([]byte, gossip.SecretLen)
		rand.Read(k)
		r, err := gossip.NewReceipt(k, ttl, 4)
		if err != nil {
			ts.t.Fatal(err)
		}
		ts.mustPut(r, "link x")
		out = append(out, k)
	}
	return out
}

// readAll follows the stream from cursor to its end, limit per call.
func readAll(ts *testStore, cursor uint64, limit int) ([][]byte, uint64) {
	ts.t.Helper()
	var all [][]byte
	for {
		got, next, err := ts.Receipts(cursor, limit)
		if err != nil {
			ts.t.Fatal(err)
		}
		cursor = next
		if len(got) == 0 {
			return all, cursor
		}
		all = append(all, got...)
	}
}

func wantSecrets(t *testing.T, what string, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d secrets, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%s: secret %d is %x, want %x", what, i, got[i][:4], want[i][:4])
		}
	}
}

// The stream gives receipts in arrival order, skips other kinds, expired
// and deleted receipts, resumes from its cursor across a reopen, and reads
// a cursor of another store from the oldest receipt held.
func TestReceiptStreamOrderCursorAndReopen(t *testing.T) {
	ts := openTest(t, Options{})
	short := putReceipts(ts, 1, 10)
	ts.mustPut(gossiptest.DM(nil, nil, 3600, 1), "client a")
	sent := putReceipts(ts, 4, 3600)
	r, _ := gossip.NewReceipt(sent[1], 0, 4)
	if ok, err := ts.Delete(r.ID); err != nil || !ok {
		t.Fatalf("delete a receipt: %v %v", ok, err)
	}
	kept := [][]byte{sent[0], sent[2], sent[3]}

	all, cursor := readAll(ts, 0, 2)
	wantSecrets(t, "from 0, two per call", all, append(append([][]byte{}, short...), kept...))
	ts.clock.Advance(11 * time.Second)
	all, _ = readAll(ts, 0, 100)
	wantSecrets(t, "after the first expired", all, kept)

	ts.reopen()
	more := putReceipts(ts, 2, 3600)
	all, _ = readAll(ts, cursor, 100)
	wantSecrets(t, "a cursor from before the reopen", all, more)

	other := openTest(t, Options{})
	putReceipts(other, 3, 3600)
	_, foreign := readAll(other, 0, 100)
	all, _ = readAll(ts, foreign, 100)
	wantSecrets(t, "another store's cursor", all, append(append([][]byte{}, kept...), more...))
}

// A file whose receipt index is missing or incomplete (an older build
// wrote it, or wrote to it since) gets it rebuilt at Open; entries whose
// record is gone are skipped and dropped.
func TestReceiptIndexRebuiltAndStaleEntriesDropped(t *testing.T) {
	ts := openTest(t, Options{})
	sent := putReceipts(ts, 3, 3600)
	if err := ts.Close(); err != nil {
		t.Fatal(err)
	}
	// As an older build leaves it: no index, or one it did not keep up.
	db, err := bolt.Open(ts.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRSeq).Delete(u64(2)); err != nil {
			return err
		}
		return tx.Bucket(bucketMeta).Put(metaRSeq, u64(1))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	ts.Store = nil
	ts.reopen()
	all, _ := readAll(ts, 0, 100)
	wantSecrets(t, "after the rebuild", all, sent)

	// A stale entry, as an older build's delete leaves behind.
	r, _ := gossip.NewReceipt(sent[1], 0, 4)
	if ok, err := ts.Delete(r.ID); err != nil || !ok {
		t.Fatalf("delete a receipt: %v %v", ok, err)
	}
	ts.Close()
	db, err = bolt.Open(ts.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketRSeq).Put(u64(2), r.ID[:]) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	ts.Store = nil
	ts.reopen()
	all, _ = readAll(ts, 0, 100)
	wantSecrets(t, "with a stale entry", all, [][]byte{sent[0], sent[2]})
	_ = ts.view(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketRSeq).Get(u64(2)) != nil {
			t.Error("the stale entry is still there after a read")
		}
		return nil
	})
}
