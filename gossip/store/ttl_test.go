package store

import (
	"errors"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

func TestPutGetRoundTrip(t *testing.T) {
	s := openTest(t, Options{})
	e := gossiptest.DM(nil, nil, 3600, 3)
	s.mustPut(e, "client")
	got, ok, err := s.Get(e.ID)
	if err != nil || !ok {
		t.Fatalf("get: ok=%v err=%v", ok, err)
	}
	if got.ID != e.ID || got.Kind != e.Kind || string(got.Payload) != string(e.Payload) ||
		string(got.Destination) != string(e.Destination) || string(got.ReceiptTag) != string(e.ReceiptTag) ||
		got.HopLimit != e.HopLimit || got.TTLSeconds != 3600 {
		t.Fatalf("get returned a different envelope: %+v", got)
	}
	if _, ok, err := s.Get(gossip.ID{1}); ok || err != nil {
		t.Fatalf("get of an unknown id: ok=%v err=%v", ok, err)
	}
	if st := s.Stats(); st.Envelopes != 1 || st.Bytes != recordSize(t, e) || st.Sources != 1 {
		t.Fatalf("stats after one put: %+v", st)
	}
}

func TestTTLAgesByTimeHeld(t *testing.T) {
	s := openTest(t, Options{MaxTTL: 24 * time.Hour})
	e := gossiptest.DM(nil, nil, 100, 1)
	s.mustPut(e, "a")
	s.clock.Advance(30 * time.Second)
	if ttl, ok := s.ttl(e.ID); !ok || ttl != 70 {
		t.Fatalf("after 30s held: ttl=%d ok=%v, want 70", ttl, ok)
	}
	s.clock.Advance(69*time.Second + 500*time.Millisecond)
	if ttl, ok := s.ttl(e.ID); !ok || ttl != 0 {
		t.Fatalf("with half a second left: ttl=%d ok=%v, want 0 (rounded down)", ttl, ok)
	}
	s.clock.Advance(500 * time.Millisecond)
	if _, ok := s.ttl(e.ID); ok {
		t.Fatal("expired envelope still returned")
	}
	if !s.Has(e.ID) {
		t.Fatal("Has is false for an expired envelope awaiting purge")
	}
	seen := 0
	if err := s.IDs(func(gossip.ID, schemas.Envelope_Kind) bool { seen++; return true }); err != nil || seen != 0 {
		t.Fatalf("IDs lists %d expired envelopes (err %v)", seen, err)
	}
	expired, dropped, err := s.Purge()
	if err != nil || expired != 1 || dropped != 0 {
		t.Fatalf("purge: expired=%d dropped=%d err=%v", expired, dropped, err)
	}
	if st := s.Stats(); st.Envelopes != 0 || st.Bytes != 0 || st.Tombstones != 1 || st.Sources != 0 {
		t.Fatalf("stats after purge: %+v", st)
	}
	if added, err := s.Put(e, "b"); added || err != nil {
		t.Fatalf("re-put of an expired id: added=%v err=%v", added, err)
	}
	s.clock.Advance(24*time.Hour - time.Second)
	if _, dropped, _ := s.Purge(); dropped != 0 {
		t.Fatal("tombstone dropped before MaxTTL")
	}
	s.clock.Advance(time.Second)
	if _, dropped, _ := s.Purge(); dropped != 1 {
		t.Fatal("tombstone not dropped after MaxTTL")
	}
	if s.Has(e.ID) {
		t.Fatal("Has true after the tombstone aged out")
	}
}

func TestPutRefusesNoTTL(t *testing.T) {
	s := openTest(t, Options{})
	e := gossiptest.DM(nil, nil, 0, 1)
	if added, err := s.Put(e, "a"); added || !errors.Is(err, ErrExpired) {
		t.Fatalf("put with TTL 0: added=%v err=%v", added, err)
	}
}

func TestCaps(t *testing.T) {
	s := openTest(t, Options{MaxTTL: time.Hour, MaxHops: 7})
	e := gossiptest.DM(nil, nil, 30*24*3600, 1)
	e.HopLimit = 200
	s.mustPut(e, "a")
	got, _, err := s.Get(e.ID)
	if err != nil || got.TTLSeconds != 3600 || got.HopLimit != 7 {
		t.Fatalf("caps not applied: ttl=%d hops=%d err=%v", got.TTLSeconds, got.HopLimit, err)
	}
	s.clock.Advance(time.Hour)
	if _, ok := s.ttl(e.ID); ok {
		t.Fatal("capped envelope outlived MaxTTL")
	}
	low := gossiptest.DM(nil, nil, 60, 1)
	low.HopLimit = 2
	s.mustPut(low, "a")
	if got, _, _ := s.Get(low.ID); got.TTLSeconds != 60 || got.HopLimit != 2 {
		t.Fatalf("values under the caps changed: ttl=%d hops=%d", got.TTLSeconds, got.HopLimit)
	}
	if st := s.Stats(); st.MaxTTL != time.Hour || st.MaxHops != 7 {
		t.Fatalf("stats limits: %+v", st)
	}
}

func TestDefaults(t *testing.T) {
	s := openTest(t, Options{})
	st := s.Stats()
	// Receipts a quarter, bundles an eighth, descriptors a 32nd, messages
	// the rest (19/32); one source an eighth of that; a mailbox a quarter
	// of the store, one source a quarter of a mailbox.
	if st.MaxBytes != 64<<20 || st.MaxReceiptBytes != 16<<20 || st.MaxBundleBytes != 8<<20 ||
		st.MaxDescriptorBytes != 2<<20 || st.MaxMessageBytes != 38<<20 || st.MaxPerSource != 38<<20/8 ||
		st.MaxPerMailbox != 16<<20 || st.MaxPerMailboxSource != 4<<20 ||
		st.MaxTTL != 7*24*time.Hour || st.MaxHops != 32 || st.MaxTombstones != 65536 {
		t.Fatalf("defaults: %+v", st)
	}
}

func TestDowntimeCountedAcrossReopen(t *testing.T) {
	s := openTest(t, Options{})
	short := gossiptest.DM(nil, nil, 2*3600, 1)
	long := gossiptest.DM(nil, nil, 10*3600, 1)
	s.mustPut(short, "a")
	s.mustPut(long, "a")
	s.clock.Advance(time.Hour) // running, nothing written since the puts
	if err := s.Store.Close(); err != nil {
		t.Fatal(err)
	}
	s.clock.Advance(3 * time.Hour) // switched off
	s.reopen()
	if ttl, ok := s.ttl(long.ID); !ok || ttl != 6*3600 {
		t.Fatalf("after 1h up and 3h down: ttl=%d ok=%v, want %d", ttl, ok, 6*3600)
	}
	if _, ok := s.ttl(short.ID); ok {
		t.Fatal("envelope outlived its TTL across a restart")
	}
	if expired, _, _ := s.Purge(); expired != 1 {
		t.Fatalf("purge after restart expired %d, want 1", expired)
	}
}

func TestDowntimeAfterKillCounted(t *testing.T) {
	// A crash skips Close: the wall reading persisted with the last write
	// still yields the time up since then plus the time down.
	clock := newClock()
	path := t.TempDir() + "/store.db"
	s, err := Open(path, Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	e := gossiptest.DM(nil, nil, 10*3600, 1)
	if _, err := s.Put(e, "a"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour)
	// Simulate kill -9: drop the bbolt handle without the store's Close.
	if err := s.db.Close(); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	ts := &testStore{t: t, path: path, clock: clock, opt: Options{Clock: clock}}
	ts.reopen()
	t.Cleanup(func() { ts.Close(); checkFile(t, path) })
	if ttl, ok := ts.ttl(e.ID); !ok || ttl != 7*3600 {
		t.Fatalf("ttl=%d ok=%v, want %d", ttl, ok, 7*3600)
	}
}

func TestWallClockJumpsAcrossReopen(t *testing.T) {
	for _, c := range []struct {
		name string
		jump time.Duration
	}{
		{"forward 20 years", 20 * 365 * 24 * time.Hour},
		{"back 20 years", -20 * 365 * 24 * time.Hour},
		{"back 1 second", -time.Second},
		{"forward just over MaxTTL", 7*24*time.Hour + time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := openTest(t, Options{})
			e := gossiptest.DM(nil, nil, 3600, 1)
			gone := gossiptest.DM(nil, nil, 3600, 1)
			short := gossiptest.DM(nil, nil, 60, 1) // expired before the restart
			s.mustPut(e, "a")
			s.mustPut(gone, "a")
			s.mustPut(short, "a")
			if _, err := s.Delete(gone.ID); err != nil {
				t.Fatal(err)
			}
			s.clock.Advance(10 * time.Minute)
			if err := s.Store.Close(); err != nil {
				t.Fatal(err)
			}
			s.clock.Advance(c.jump)
			s.reopen()
			if ttl, ok := s.ttl(e.ID); !ok || ttl != 50*60 {
				t.Fatalf("after the jump: ttl=%d ok=%v, want %d", ttl, ok, 50*60)
			}
			if _, ok := s.ttl(short.ID); ok {
				t.Fatal("an expired envelope came back after the jump")
			}
			if expired, dropped, err := s.Purge(); expired != 1 || dropped != 0 || err != nil {
				t.Fatalf("purge after the jump: expired=%d dropped=%d err=%v", expired, dropped, err)
			}
			if added, _ := s.Put(gone, "a"); added {
				t.Fatal("a tombstoned envelope came back after the jump")
			}
			// The clock comes back to the right time: another jump, nothing counted.
			if err := s.Store.Close(); err != nil {
				t.Fatal(err)
			}
			// The clock comes back to the right time: counted only when
			// that step is itself plausible (the 1 s case).
			s.clock.Advance(-c.jump)
			s.reopen()
			want := uint32(50 * 60)
			if back := -c.jump; back > 0 && back <= 7*24*time.Hour {
				want -= uint32(back / time.Second)
			}
			if ttl, ok := s.ttl(e.ID); !ok || ttl != want {
				t.Fatalf("after the jump back: ttl=%d ok=%v, want %d", ttl, ok, want)
			}
			// Time held still counts afterwards.
			s.clock.Advance(20 * time.Minute)
			if ttl, ok := s.ttl(e.ID); !ok || ttl != want-20*60 {
				t.Fatalf("20 min later: ttl=%d ok=%v, want %d", ttl, ok, want-20*60)
			}
		})
	}
}

func TestClockStepBackWhileRunning(t *testing.T) {
	// A clock without monotonic readings stepping back must not give
	// envelopes their time back.
	s := openTest(t, Options{})
	e := gossiptest.DM(nil, nil, 3600, 1)
	s.mustPut(e, "a")
	s.clock.Advance(10 * time.Minute)
	if ttl, _ := s.ttl(e.ID); ttl != 50*60 {
		t.Fatalf("ttl=%d", ttl)
	}
	s.clock.Advance(-365 * 24 * time.Hour)
	if ttl, _ := s.ttl(e.ID); ttl != 50*60 {
		t.Fatalf("after stepping back: ttl=%d, want %d", ttl, 50*60)
	}
	s.clock.Advance(5 * time.Minute)
	if ttl, _ := s.ttl(e.ID); ttl != 45*60 {
		t.Fatalf("5 min after stepping back: ttl=%d, want %d", ttl, 45*60)
	}
}

func TestRealClock(t *testing.T) {
	// The system clock (monotonic readings) works end to end.
	path := t.TempDir() + "/store.db"
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := gossiptest.DM(nil, nil, 3600, 1)
	if _, err := s.Put(e, "a"); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(e.ID)
	if err != nil || !ok || got.TTLSeconds < 3590 || got.TTLSeconds > 3600 {
		t.Fatalf("ttl=%d ok=%v err=%v", got.TTLSeconds, ok, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, _ := s.Get(e.ID); !ok || got.TTLSeconds < 3590 {
		t.Fatalf("after reopen: ttl=%d ok=%v", got.TTLSeconds, ok)
	}
	s.Close()
	checkFile(t, path)
}
