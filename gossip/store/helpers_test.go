package store

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// newClock is the fake clock the store tests start from.
func newClock() *testkit.Clock {
	return testkit.NewClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
}

// testStore is a store in t.TempDir() whose file is checked (bbolt's
// consistency check and the store's own counters and indexes) when the
// test ends.
type testStore struct {
	*Store
	t     testing.TB
	path  string
	clock *testkit.Clock
	opt   Options
	// noSync skips fsync at commit: for tests that write thousands of
	// envelopes and are not about durability.
	noSync bool
}

func openTest(t testing.TB, o Options) *testStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	if o.Clock == nil {
		o.Clock = newClock()
	}
	ts := &testStore{t: t, path: path, opt: o}
	ts.clock, _ = o.Clock.(*testkit.Clock)
	ts.reopen()
	t.Cleanup(func() {
		if err := ts.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		checkFile(t, path)
	})
	return ts
}

// reopen closes the store (if open) and opens the same file again.
func (ts *testStore) reopen() {
	ts.t.Helper()
	if ts.Store != nil {
		if err := ts.Store.Close(); err != nil {
			ts.t.Fatalf("close: %v", err)
		}
		checkFile(ts.t, ts.path)
	}
	s, err := Open(ts.path, ts.opt)
	if err != nil {
		ts.t.Fatalf("open: %v", err)
	}
	s.db.NoSync = ts.noSync
	ts.Store = s
}

// openFast is openTest without fsync at commit.
func openFast(t testing.TB, o Options) *testStore {
	t.Helper()
	ts := openTest(t, o)
	ts.noSync = true
	ts.db.NoSync = true
	return ts
}

func (ts *testStore) mustPut(e gossip.Envelope, source string) {
	ts.t.Helper()
	added, err := ts.Put(e, source)
	if err != nil || !added {
		ts.t.Fatalf("put %v: added=%v err=%v", e.ID, added, err)
	}
}

func (ts *testStore) ttl(id gossip.ID) (uint32, bool) {
	ts.t.Helper()
	e, ok, err := ts.Get(id)
	if err != nil {
		ts.t.Fatalf("get %v: %v", id, err)
	}
	return e.TTLSeconds, ok
}

// checkFile runs bbolt's check and verifies the store's invariants: the
// counters in meta match the records, every index entry matches a record
// and every record has its index entries.
func checkFile(t testing.TB, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Errorf("check %s: %v", path, err)
		return
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		meta := tx.Bucket(bucketMeta)
		var n, total, receipts int64
		mbox := map[string]int64{}
		rseq := tx.Bucket(bucketRSeq)
		if rseq == nil {
			t.Errorf("no receipt index")
			return nil
		}
		err := tx.Bucket(bucketEnv).ForEach(func(k, v []byte) error {
			h, body, err := parseRecord(v)
			if err != nil {
				return err
			}
			e, err := recordEnvelope(h, body)
			if err != nil {
				return err
			}
			if !bytes.Equal(e.ID[:], k) {
				t.Errorf("record %x holds %v", k, e.ID)
			}
			n++
			total += int64(len(v))
			if e.Kind != h.kind {
				t.Errorf("record %x: header kind %v, envelope %v", k, h.kind, e.Kind)
			}
			if v := tx.Bucket(bucketExp).Get(cat(u64(uint64(h.expiresAt)), k)); len(v) != 2 {
				t.Errorf("record %x: no expiry index entry", k)
			}
			if len(e.Destination) > 0 {
				mbox[string(e.Destination)] += int64(len(v))
				if id := tx.Bucket(bucketDest).Get(cat(e.Destination, u64(h.seq))); !bytes.Equal(id, k) {
					t.Errorf("record %x: destination index has %x", k, id)
				}
			}
			if len(e.ReceiptTag) > 0 && tx.Bucket(bucketTag).Get(cat(e.ReceiptTag, k)) == nil {
				t.Errorf("record %x: no receipt tag index entry", k)
			}
			if e.Kind == schemas.Envelope_Kind_receipt {
				receipts++
				if id := rseq.Get(u64(h.seq)); !bytes.Equal(id, k) {
					t.Errorf("receipt %x: receipt index has %x", k, id)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if got := int64(getU64(meta.Get(metaEnvelopes))); got != n {
			t.Errorf("meta says %d envelopes, file holds %d", got, n)
		}
		if got := int64(getU64(meta.Get(metaBytes))); got != total {
			t.Errorf("meta says %d bytes, records take %d", got, total)
		}
		if got := int64(rseq.Stats().KeyN); got != receipts {
			t.Errorf("receipt index has %d entries for %d receipts", got, receipts)
		}
		if got := getU64(meta.Get(metaRSeq)); got != getU64(meta.Get(metaSeq)) {
			t.Errorf("receipt index complete at seq %d, the file is at %d", got, getU64(meta.Get(metaSeq)))
		}
		if got := int64(tx.Bucket(bucketExp).Stats().KeyN); got != n {
			t.Errorf("expiry index has %d entries for %d records", got, n)
		}
		dests := len(mbox)
		_ = tx.Bucket(bucketMbox).ForEach(func(k, v []byte) error {
			if int64(getU64(v)) != mbox[string(k)] {
				t.Errorf("mailbox %x: usage %d, records take %d", k, getU64(v), mbox[string(k)])
			}
			dests--
			return nil
		})
		if dests != 0 {
			t.Errorf("mailbox usage entries do not match the destinations held")
		}
		tombs := int64(tx.Bucket(bucketTomb).Stats().KeyN)
		if got := int64(getU64(meta.Get(metaTombstones))); got != tombs {
			t.Errorf("meta says %d tombstones, file holds %d", got, tombs)
		}
		if got := int64(tx.Bucket(bucketTombExp).Stats().KeyN); got != tombs {
			t.Errorf("tombstone index has %d entries for %d tombstones", got, tombs)
		}
		return nil
	})
	if err != nil {
		t.Errorf("check %s: %v", path, err)
	}
}

// recordSize is the length Put accounts for e.
func recordSize(t testing.TB, e gossip.Envelope) int64 {
	t.Helper()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return int64(recHeaderLen + len(b))
}
