package gaps

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// busyTracker has a bit of everything: several streams, pending and
// missing gaps, recent arrivals.
func busyTracker(t testing.TB) (*Tracker, *clock) {
	tr, c := newTracker(Config{})
	tr.Observe(msg(1))
	tr.Observe(msg(4))
	c.advance(2 * time.Hour)
	tr.Observe(msg(7))
	tr.Check() // 2..3 missing, 5..6 pending
	tr.Observe(Message{From: bob, Conv: ConvChannel([32]byte{1}), Seq: 10, SentAt: t0.Add(-time.Hour)})
	tr.Observe(Message{From: bob, Conv: ConvChannel([32]byte{1}), Seq: 12, SentAt: t0, TTL: 6 * time.Hour})
	return tr, c
}

// TestMarshalRoundTrip: a restored tracker goes on exactly as the
// original would: the same gaps, deadlines, duplicates and late arrivals.
func TestMarshalRoundTrip(t *testing.T) {
	tr, c := busyTracker(t)
	b, err := tr.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	again := New(Config{Now: c.now})
	if err := again.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if b2, _ := again.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("state differs after a round trip")
	}
	if g1, g2 := tr.Gaps(), again.Gaps(); len(g1) != 3 || len(g1) != len(g2) {
		t.Fatalf("gaps %+v and %+v", g1, g2)
	}
	if r := again.Observe(msg(7)); !r.Duplicate {
		t.Fatal("a resend is not recognised after restoring")
	}
	wantTexts(t, again.Observe(msg(5)).Notices, "a late message from alice arrived; 1 not yet arrived, 2 missing")
	c.advance(time.Hour)
	if n := again.Check(); len(n) != 1 || n[0].From != alice || n[0].Text("alice") != "3 messages from alice missing" || n[0].Count != 1 {
		t.Fatalf("%+v", n)
	}
}

// TestUnmarshalBounds: a saved state bigger than this tracker's Config
// is cut down, and bad bytes leave the state as it was.
func TestUnmarshalBounds(t *testing.T) {
	tr, c := newTracker(Config{})
	for i := range 10 {
		for s := uint64(1); s <= 40; s += 2 {
			tr.Observe(Message{From: identity.Fingerprint{byte(i)}, Conv: ConvDM, Seq: s})
		}
	}
	b, _ := tr.MarshalBinary()
	small := New(Config{Now: c.now, MaxStreams: 4, MaxGaps: 3})
	if err := small.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if len(small.streams) != 4 {
		t.Fatalf("%d streams", len(small.streams))
	}
	for k, s := range small.streams {
		if k.from[0] < 6 || len(s.gaps) != 3 || s.gaps[0].first != 34 {
			t.Fatalf("kept %v with gaps %+v", k.from[0], s.gaps)
		}
	}

	before, _ := small.MarshalBinary()
	for name, bad := range map[string][]byte{
		"empty":         nil,
		"other magic":   append([]byte("qpqgaps\x02"), b[8:]...),
		"truncated":     b[:len(b)-1],
		"trailing byte": append(bytes.Clone(b), 0),
		"huge count":    append([]byte("qpqgaps\x01\x01"), 0xff, 0xff, 0xff, 0xff, 0x0f),
		"floor past high": func() []byte {
			x := New(Config{})
			x.Observe(Message{From: alice, Conv: "c", Seq: 1})
			x.streams[streamKey{alice, "c"}].floor = 2
			out, _ := x.MarshalBinary()
			return out
		}(),
		"overlapping gaps": func() []byte {
			x := New(Config{})
			x.Observe(Message{From: alice, Conv: "c", Seq: 1})
			x.Observe(Message{From: alice, Conv: "c", Seq: 10})
			s := x.streams[streamKey{alice, "c"}]
			s.gaps = append(s.gaps, gap{first: 5, last: 6})
			out, _ := x.MarshalBinary()
			return out
		}(),
	} {
		err := small.UnmarshalBinary(bad)
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", name, err)
		}
		if after, _ := small.MarshalBinary(); !bytes.Equal(before, after) {
			t.Fatalf("%s: state changed by a failed load", name)
		}
	}
}

// FuzzUnmarshal: arbitrary saved state never panics, and whatever loads
// saves back to bytes that load to the same state, and can be fed on.
func FuzzUnmarshal(f *testing.F) {
	tr, _ := busyTracker(f)
	b, _ := tr.MarshalBinary()
	f.Add(b)
	f.Add([]byte(codecMagic))
	f.Add([]byte("qpqgaps\x01\x00\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c := &clock{t: t0}
		x := New(Config{Now: c.now, MaxStreams: 8, MaxGaps: 4})
		if err := x.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		out, err := x.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		y := New(Config{Now: c.now, MaxStreams: 8, MaxGaps: 4})
		if err := y.UnmarshalBinary(out); err != nil {
			t.Fatalf("saved state does not load: %v", err)
		}
		if again, _ := y.MarshalBinary(); !bytes.Equal(out, again) {
			t.Fatal("state differs after a round trip")
		}
		// Whatever loaded stays usable.
		for k, s := range x.streams {
			x.Observe(Message{From: k.from, Conv: k.conv, Seq: s.high + 3})
			if len(s.gaps) > 0 {
				x.Observe(Message{From: k.from, Conv: k.conv, Seq: s.gaps[0].first})
			}
		}
		c.advance(30 * 24 * time.Hour)
		x.Check()
		for _, s := range x.streams {
			if err := s.check(); err != nil {
				t.Fatalf("invariant broken after use: %v", err)
			}
		}
	})
}

// FuzzObserve feeds a sender's arbitrary numbers, send times and TTLs,
// with the reader's clock moving both ways: never a panic, the state
// keeps its invariants and bounds, and counts stay below MaxJump per gap.
func FuzzObserve(f *testing.F) {
	f.Add([]byte{1, 0, 3, 0, 2, 0, 2, 0})
	f.Add([]byte{1, 0, 200, 5, 1, 9, 255, 255, 3, 1})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := &clock{t: t0}
		tr := New(Config{Now: c.now, MaxStreams: 2, MaxGaps: 3, MaxJump: 50})
		for i := 0; i+1 < len(ops); i += 2 {
			seq, arg := uint64(ops[i]), ops[i+1]
			from := identity.Fingerprint{arg & 3}
			switch {
			case arg&0x80 != 0:
				c.advance(time.Duration(int8(arg<<1)) * 10 * time.Minute) // either way
				tr.Check()
				continue
			case arg&0x40 != 0:
				seq <<= 56 // far numbers
			}
			r := tr.Observe(Message{From: from, Conv: ConvDM, Seq: seq, SentAt: t0.Add(time.Duration(arg>>2&7) * time.Minute),
				TTL: time.Duration(arg>>5&1) * time.Hour})
			for _, n := range r.Notices {
				if n.Pending+n.Missing > 3*50 || n.Text("x") == "" {
					t.Fatalf("notice %+v", n)
				}
			}
		}
		if len(tr.streams) > 2 {
			t.Fatalf("%d streams", len(tr.streams))
		}
		for _, s := range tr.streams {
			if err := s.check(); err != nil || len(s.gaps) > 3 || len(s.recent) > recentLen {
				t.Fatalf("stream %+v: %v", s, err)
			}
		}
		b, _ := tr.MarshalBinary()
		if err := New(Config{}).UnmarshalBinary(b); err != nil {
			t.Fatalf("state does not load back: %v", err)
		}
	})
}
