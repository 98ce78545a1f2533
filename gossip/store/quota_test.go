package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// sizeOneBlock is what a one-block dm takes in the store.
func sizeOneBlock(t *testing.T) int64 { return recordSize(t, gossiptest.DM(nil, nil, 60, 1)) }

// assertHeld fails unless every envelope is still stored intact.
func (ts *testStore) assertHeld(es ...gossip.Envelope) {
	ts.t.Helper()
	for _, e := range es {
		got, ok, err := ts.Get(e.ID)
		if err != nil || !ok || string(got.Payload) != string(e.Payload) {
			ts.t.Fatalf("envelope %v lost: ok=%v err=%v", e.ID, ok, err)
		}
	}
}

func TestQuotaFull(t *testing.T) {
	size := sizeOneBlock(t)
	// Messages get all but 3 bytes (the other kinds' budgets): 64 dms.
	s := openTest(t, Options{MaxBytes: 64*size + 3, MaxReceiptBytes: 1, MaxBundleBytes: 1, MaxDescriptorBytes: 1,
		MaxPerSource: 100 * size, MaxPerMailbox: 100 * size, MaxPerMailboxSource: 100 * size})
	var held []gossip.Envelope
	put := func(src string) {
		e := gossiptest.DM(nil, nil, 60, 1)
		s.mustPut(e, src)
		held = append(held, e)
	}
	// One source takes what it likes while the store is under half
	// full; then many take their fair share each until it is full.
	for range 31 {
		put("early")
	}
	for i := range 33 {
		put(fmt.Sprint("src", i))
	}
	before := s.Stats()
	extra := gossiptest.DM(nil, nil, 60, 1)
	added, err := s.Put(extra, "another")
	if added || !errors.Is(err, ErrFull) {
		t.Fatalf("put into a full store: added=%v err=%v", added, err)
	}
	for _, want := range []string{"store full", fmt.Sprint(64 * size), fmt.Sprint(size)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	s.assertHeld(held...)
	if after := s.Stats(); after != before {
		t.Fatalf("a refused put changed the stats: %+v -> %+v", before, after)
	}
	if s.Has(extra.ID) {
		t.Fatal("refused envelope is known")
	}
	// Room comes back when one is delivered.
	if removed, err := s.Delete(held[0].ID); !removed || err != nil {
		t.Fatalf("delete: %v %v", removed, err)
	}
	s.mustPut(extra, "another")
	// And survives a reopen: the total is persisted.
	s.reopen()
	if _, err := s.Put(gossiptest.DM(nil, nil, 60, 1), "fresh"); !errors.Is(err, ErrFull) {
		t.Fatalf("after reopen, put into a full store: %v", err)
	}
	s.assertHeld(append(held[1:], extra)...)
}

func TestQuotaPerSource(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxBytes: 100 * size, MaxPerSource: 2 * size})
	a1, a2, a3 := gossiptest.DM(nil, nil, 60, 1), gossiptest.DM(nil, nil, 60, 1), gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(a1, "peer-a")
	s.mustPut(a2, "peer-a")
	added, err := s.Put(a3, "peer-a")
	if added || !errors.Is(err, ErrSourceQuota) {
		t.Fatalf("third put from one source: added=%v err=%v", added, err)
	}
	for _, want := range []string{"source", fmt.Sprint(2 * size)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "peer-a") {
		t.Errorf("error %q names the source", err)
	}
	s.assertHeld(a1, a2)
	// Another source is not affected.
	s.mustPut(gossiptest.DM(nil, nil, 60, 1), "peer-b")
	if st := s.Stats(); st.Sources != 2 {
		t.Fatalf("sources: %d, want 2", st.Sources)
	}
	// Delivery frees the source's room; a source holding nothing is forgotten.
	if _, err := s.Delete(a1.ID); err != nil {
		t.Fatal(err)
	}
	s.mustPut(a3, "peer-a")
	for _, e := range []gossip.Envelope{a2, a3} {
		if _, err := s.Delete(e.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Sources != 1 {
		t.Fatalf("sources after peer-a holds nothing: %d, want 1", st.Sources)
	}
	// Expiry frees room too.
	b := gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(b, "peer-b")
	if _, err := s.Put(gossiptest.DM(nil, nil, 60, 1), "peer-b"); !errors.Is(err, ErrSourceQuota) {
		t.Fatalf("peer-b over quota: %v", err)
	}
	s.clock.Advance(time.Minute)
	s.mustPut(gossiptest.DM(nil, nil, 60, 1), "peer-b") // purges the expired ones first
	if st := s.Stats(); st.Envelopes != 1 || st.Sources != 1 {
		t.Fatalf("after expiry: %+v", st)
	}
}

func TestQuotaPerMailbox(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxBytes: 100 * size, MaxPerMailbox: 2 * size, MaxPerMailboxSource: 100 * size})
	victim := gossiptest.Random(gossip.DestLen)
	m1, m2 := gossiptest.DM(victim, nil, 60, 1), gossiptest.DM(victim, nil, 60, 1)
	s.mustPut(m1, "flooder-1")
	s.mustPut(m2, "flooder-2")
	added, err := s.Put(gossiptest.DM(victim, nil, 60, 1), "flooder-3")
	if added || !errors.Is(err, ErrMailboxQuota) {
		t.Fatalf("put into a full mailbox: added=%v err=%v", added, err)
	}
	if !strings.Contains(err.Error(), "mailbox") || !strings.Contains(err.Error(), fmt.Sprint(2*size)) {
		t.Errorf("error %q does not name the limit", err)
	}
	s.assertHeld(m1, m2)
	s.mustPut(gossiptest.DM(nil, nil, 60, 1), "flooder-3") // other mailboxes are fine
	// Mailbox usage survives a reopen.
	s.reopen()
	if _, err := s.Put(gossiptest.DM(victim, nil, 60, 1), "flooder-4"); !errors.Is(err, ErrMailboxQuota) {
		t.Fatalf("after reopen: %v", err)
	}
	if _, err := s.Delete(m1.ID); err != nil {
		t.Fatal(err)
	}
	s.mustPut(gossiptest.DM(victim, nil, 60, 1), "flooder-4")
	s.assertHeld(m2)
}

func TestPerSourceForgottenAfterReopen(t *testing.T) {
	// Per-source accounting is in memory only; after a restart the old
	// envelopes count against no source, and deleting them is harmless.
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxBytes: 100 * size, MaxPerSource: 2 * size})
	a1, a2 := gossiptest.DM(nil, nil, 60, 1), gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(a1, "peer-a")
	s.mustPut(a2, "peer-a")
	s.reopen()
	if st := s.Stats(); st.Sources != 0 || st.Envelopes != 2 {
		t.Fatalf("after reopen: %+v", st)
	}
	n1 := gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(n1, "peer-a")
	if _, err := s.Delete(a1.ID); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Sources != 1 {
		t.Fatalf("deleting an envelope from before the restart changed the sources: %+v", st)
	}
	s.mustPut(gossiptest.DM(nil, nil, 60, 1), "peer-a")
	if _, err := s.Put(gossiptest.DM(nil, nil, 60, 1), "peer-a"); !errors.Is(err, ErrSourceQuota) {
		t.Fatalf("source quota after reopen: %v", err)
	}
}

func TestDedup(t *testing.T) {
	size := sizeOneBlock(t)
	s := openTest(t, Options{MaxBytes: 100 * size, MaxPerSource: size})
	e := gossiptest.DM(nil, nil, 60, 1)
	s.mustPut(e, "a")
	again := e
	again.TTLSeconds, again.HopLimit = 600, 1 // another copy, other hop state
	for _, src := range []string{"a", "b"} {
		// "a" is at its quota: a duplicate is still no error.
		if added, err := s.Put(again, src); added || err != nil {
			t.Fatalf("duplicate from %s: added=%v err=%v", src, added, err)
		}
	}
	if got, _, _ := s.Get(e.ID); got.TTLSeconds != 60 || got.HopLimit != 16 {
		t.Fatalf("a duplicate changed the stored copy: ttl=%d hops=%d", got.TTLSeconds, got.HopLimit)
	}
	if st := s.Stats(); st.Envelopes != 1 || st.Bytes != size {
		t.Fatalf("stats: %+v", st)
	}
	bad := gossiptest.DM(nil, nil, 60, 1)
	bad.Payload[0] ^= 1
	if added, err := s.Put(bad, "a"); added || !errors.Is(err, gossip.ErrBadID) {
		t.Fatalf("tampered envelope: added=%v err=%v", added, err)
	}
}

func TestTombstones(t *testing.T) {
	s := openTest(t, Options{})
	e := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(e, "a")
	if removed, err := s.Delete(e.ID); !removed || err != nil {
		t.Fatalf("delete: removed=%v err=%v", removed, err)
	}
	if removed, err := s.Delete(e.ID); removed || err != nil {
		t.Fatalf("second delete: removed=%v err=%v", removed, err)
	}
	if _, ok, _ := s.Get(e.ID); ok {
		t.Fatal("deleted envelope returned")
	}
	if !s.Has(e.ID) {
		t.Fatal("Has false for a tombstoned id")
	}
	if added, err := s.Put(e, "b"); added || err != nil {
		t.Fatalf("re-put of a delivered id: added=%v err=%v", added, err)
	}
	// A delete for an id never seen still keeps a later copy out.
	early := gossiptest.DM(nil, nil, 3600, 1)
	if removed, err := s.Delete(early.ID); removed || err != nil {
		t.Fatalf("delete of an unknown id: removed=%v err=%v", removed, err)
	}
	// Switched off for six days: the tombstones still hold.
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(6 * 24 * time.Hour)
	s.reopen()
	if st := s.Stats(); st.Tombstones != 2 || st.Envelopes != 0 {
		t.Fatalf("after reopen: %+v", st)
	}
	if _, dropped, _ := s.Purge(); dropped != 0 {
		t.Fatal("tombstones dropped early")
	}
	for _, x := range []gossip.Envelope{e, early} {
		if added, err := s.Put(x, "c"); added || err != nil {
			t.Fatalf("re-injection after a week off: added=%v err=%v", added, err)
		}
	}
	// One more day: they age out and the ids are welcome again.
	s.clock.Advance(24 * time.Hour)
	if _, dropped, err := s.Purge(); dropped != 2 || err != nil {
		t.Fatalf("purge: dropped=%d err=%v", dropped, err)
	}
	s.mustPut(e, "c")
}

func TestMaxTombstones(t *testing.T) {
	s := openTest(t, Options{MaxTombstones: 3})
	var ids []gossip.ID
	for range 5 {
		e := gossiptest.DM(nil, nil, 60, 1)
		s.mustPut(e, "a")
		ids = append(ids, e.ID)
		s.clock.Advance(time.Second)
		if _, err := s.Delete(e.ID); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.Tombstones != 3 {
		t.Fatalf("tombstones: %d, want 3", st.Tombstones)
	}
	for i, id := range ids {
		if want := i >= 2; s.Has(id) != want {
			t.Errorf("tombstone %d kept=%v, want %v (oldest go first)", i, !want, want)
		}
	}
}

func TestPurgeLargeBacklog(t *testing.T) {
	// More than one purge batch, across several transactions.
	s := openTest(t, Options{})
	n := purgeBatch + 100
	for range n {
		s.mustPut(gossiptest.Broadcast(nil, 60), "a")
	}
	keep := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(keep, "a")
	s.clock.Advance(time.Minute)
	expired, dropped, err := s.Purge()
	if err != nil || expired != n || dropped != 0 {
		t.Fatalf("purge: expired=%d dropped=%d err=%v", expired, dropped, err)
	}
	s.assertHeld(keep)
	if st := s.Stats(); st.Envelopes != 1 || st.Tombstones != int64(n) {
		t.Fatalf("stats: %+v", st)
	}
}
