package store

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

func TestDeleteByReceiptTag(t *testing.T) {
	s := openTest(t, Options{})
	tag := gossiptest.Random(gossip.TagLen)
	var tagged []gossip.Envelope
	for range 3 {
		e := gossiptest.DM(nil, tag, 3600, 1) // copies to several mailboxes, same receipt
		s.mustPut(e, "a")
		tagged = append(tagged, e)
	}
	other := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(other, "a")
	n, err := s.DeleteByReceiptTag(tag)
	if err != nil || n != 3 {
		t.Fatalf("delete by tag: n=%d err=%v", n, err)
	}
	for _, e := range tagged {
		if _, ok, _ := s.Get(e.ID); ok || !s.Has(e.ID) {
			t.Fatalf("tagged envelope %v still stored or not tombstoned", e.ID)
		}
		if added, _ := s.Put(e, "b"); added {
			t.Fatalf("tagged envelope %v taken in again", e.ID)
		}
	}
	s.assertHeld(other)
	if n, err := s.DeleteByReceiptTag(tag); n != 0 || err != nil {
		t.Fatalf("second delete by tag: n=%d err=%v", n, err)
	}
	if _, err := s.DeleteByReceiptTag(tag[:5]); err == nil {
		t.Fatal("short tag accepted")
	}
	if st := s.Stats(); st.Envelopes != 1 || st.Tombstones != 3 || st.Sources != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestMailboxOrderAndLimit(t *testing.T) {
	s := openTest(t, Options{})
	alice, bob := gossiptest.Random(gossip.DestLen), gossiptest.Random(gossip.DestLen)
	// Ids are random, so id order is not arrival order.
	var toAlice []gossip.Envelope
	for i := range 5 {
		e := gossiptest.DM(alice, nil, 3600, 1)
		s.mustPut(e, "a")
		toAlice = append(toAlice, e)
		s.mustPut(gossiptest.DM(bob, nil, 3600, 1), "a")
		if i == 2 {
			s.mustPut(gossiptest.Broadcast(alice, 1), "a") // about to expire
		}
		s.clock.Advance(time.Millisecond)
	}
	s.clock.Advance(time.Second)
	got, err := s.Mailbox(alice, 0)
	if err != nil || len(got) != 5 {
		t.Fatalf("mailbox: %d envelopes, err %v", len(got), err)
	}
	for i, e := range got {
		if e.ID != toAlice[i].ID {
			t.Fatalf("mailbox[%d] is %v, want %v (oldest first)", i, e.ID, toAlice[i].ID)
		}
		if e.TTLSeconds != 3598 { // 1.005s held, rounded down
			t.Fatalf("mailbox[%d] ttl %d", i, e.TTLSeconds)
		}
	}
	got, _ = s.Mailbox(alice, 2)
	if len(got) != 2 || got[0].ID != toAlice[0].ID || got[1].ID != toAlice[1].ID {
		t.Fatalf("limit 2 gave %d envelopes", len(got))
	}
	if _, err := s.Delete(toAlice[0].ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Mailbox(alice, 1)
	if len(got) != 1 || got[0].ID != toAlice[1].ID {
		t.Fatal("after delivering the first, the next is not first")
	}
	empty, err := s.Mailbox(gossiptest.Random(gossip.DestLen), 10)
	if err != nil || empty == nil || len(empty) != 0 {
		t.Fatalf("empty mailbox: %v %v", empty, err)
	}
	if _, err := s.Mailbox(alice[:31], 1); err == nil {
		t.Fatal("short destination accepted")
	}
	// A destination that is a prefix-neighbour does not leak in.
	near := append([]byte(nil), alice...)
	near[31] ^= 1
	if got, _ := s.Mailbox(near, 0); len(got) != 0 {
		t.Fatalf("neighbouring destination sees %d envelopes", len(got))
	}
}

func TestIDs(t *testing.T) {
	s := openTest(t, Options{})
	want := map[gossip.ID]schemas.Envelope_Kind{}
	for range idsBatch + 44 { // more than one batch
		e := gossiptest.Broadcast(nil, 3600)
		s.mustPut(e, "a")
		want[e.ID] = e.Kind
	}
	d := gossiptest.DM(nil, nil, 7200, 1)
	s.mustPut(d, "a")
	want[d.ID] = d.Kind
	short := gossiptest.DM(nil, nil, 10, 1)
	s.mustPut(short, "a")
	decoy := gossip.Envelope{Kind: schemas.Envelope_Kind_decoy, Payload: gossiptest.Random(gossip.PadBlock), TTLSeconds: 3600}
	decoy.ID = gossip.ComputeID(decoy.Kind, nil, nil, decoy.Payload)
	s.mustPut(decoy, "a")
	want[decoy.ID] = decoy.Kind
	s.clock.Advance(10 * time.Second) // short expires

	seen := map[gossip.ID]schemas.Envelope_Kind{}
	err := s.IDs(func(id gossip.ID, k schemas.Envelope_Kind) bool {
		if _, dup := seen[id]; dup {
			t.Fatalf("id %v listed twice", id)
		}
		seen[id] = k
		if !s.Has(id) { // calling the store from fn is fine
			t.Fatalf("listed id %v unknown", id)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(want) {
		t.Fatalf("IDs listed %d, want %d", len(seen), len(want))
	}
	for id, k := range want {
		if seen[id] != k {
			t.Fatalf("id %v kind %v, want %v", id, seen[id], k)
		}
	}
	calls := 0
	_ = s.IDs(func(gossip.ID, schemas.Envelope_Kind) bool { calls++; return calls < 3 })
	if calls != 3 {
		t.Fatalf("IDs went on after fn returned false: %d calls", calls)
	}
	// A put from inside fn does not deadlock.
	_ = s.IDs(func(gossip.ID, schemas.Envelope_Kind) bool {
		s.mustPut(gossiptest.Broadcast(nil, 60), "b")
		return false
	})
	// Decoys have no mailbox but are deleted cleanly.
	if removed, err := s.Delete(decoy.ID); !removed || err != nil {
		t.Fatalf("delete decoy: %v %v", removed, err)
	}
}

func TestConcurrentUse(t *testing.T) {
	s := openTest(t, Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dest := gossiptest.Random(gossip.DestLen)
			for range 25 {
				e := gossiptest.DM(dest, nil, 3600, 1)
				if _, err := s.Put(e, string(rune('a'+w))); err != nil {
					errs <- err
					return
				}
				if _, ok, err := s.Get(e.ID); !ok || err != nil {
					errs <- errors.Join(errors.New("get after put"), err)
					return
				}
				if _, err := s.Mailbox(dest, 5); err != nil {
					errs <- err
					return
				}
				s.Stats()
			}
			if _, _, err := s.Purge(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := s.Stats(); st.Envelopes != 100 || st.Sources != 4 {
		t.Fatalf("stats: %+v", st)
	}
}
