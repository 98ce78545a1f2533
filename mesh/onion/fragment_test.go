package onion

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// A message of any length up to MaxMessage, cut into fragments, each
// carried by one packet through a route, comes back whole at the exit,
// whatever order the packets arrive in.
func TestFragmentsThroughARouteReassemble(t *testing.T) {
	rs := newRelays(t, 3)
	for _, size := range []int{1, 1950, FragmentData, FragmentData + 1, 18100, MaxMessage} {
		msg := make([]byte, size)
		rand.Read(msg)
		parts, err := Fragments(msg, nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if want := (size + FragmentData - 1) / FragmentData; len(parts) != want {
			t.Fatalf("%d bytes: %d fragments, want %d", size, len(parts), want)
		}
		r := NewReassembler(ReassemblyOptions{})
		var got []byte
		for i := len(parts) - 1; i >= 0; i-- { // last first
			pkt, err := Build(routeOf(rs), parts[i], rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			exit, _ := walk(t, rs, pkt)
			m, _, err := r.Add("relay-b", exit.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if m != nil {
				if i != 0 || got != nil {
					t.Fatalf("%d bytes: message complete after fragment %d", size, i)
				}
				got = m
			}
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("%d bytes: reassembled %d bytes, not the message", size, len(got))
		}
		if s := r.Stats(); s.Pending != 0 || s.Bytes != 0 {
			t.Fatalf("%d bytes: %+v held after the message completed", size, s)
		}
	}
	if _, err := Fragments(make([]byte, MaxMessage+1), nil, rand.Reader); !errors.Is(err, ErrFragment) {
		t.Fatalf("a message over MaxMessage: %v", err)
	}
	// A DM with the 16 KiB body limit (17,920-byte payload, about 18,100
	// as an envelope) fits.
	if MaxMessage < 18100 {
		t.Fatalf("MaxMessage %d cannot hold a 16 KiB DM", MaxMessage)
	}
}

// Incomplete messages are bounded: they expire, one predecessor's oldest
// goes when it has too many, and the oldest of all when the bytes or the
// count run over; a duplicate fragment is ignored and a contradicting one
// refused.
func TestReassemblyIsBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	r := NewReassembler(ReassemblyOptions{PerSource: 2, MaxBytes: 5 * FragmentData, MaxPending: 4, Expire: time.Minute, Now: clock.now})
	first := func(n int) [][]byte {
		parts, err := Fragments(make([]byte, n*FragmentData), nil, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return parts
	}
	add := func(from string, p []byte) []byte {
		t.Helper()
		m, _, err := r.Add(from, p)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	a1, a2, a3 := first(2), first(2), first(2)
	add("a", a1[0])
	clock.t = clock.t.Add(time.Second)
	add("a", a2[0])
	clock.t = clock.t.Add(time.Second)
	add("a", a3[0]) // a's third: its oldest (a1) goes
	if m := add("a", a1[1]); m != nil {
		t.Fatal("a dropped message completed")
	}
	// a1's second fragment started a new set, and a2 went for it.
	if s := r.Stats(); s.Pending != 2 || s.Dropped != 2 {
		t.Fatalf("after a's third and fourth messages: %+v, want 2 pending and 2 dropped", s)
	}
	if m := add("a", a3[1]); len(m) != 2*FragmentData {
		t.Fatalf("a3 did not complete: %d bytes", len(m))
	}
	// A duplicate is ignored; a fragment with another count is refused.
	b1 := first(3)
	add("b", b1[0])
	if m := add("b", b1[0]); m != nil {
		t.Fatal("a duplicate completed a message")
	}
	bad := append([]byte(nil), b1[1]...)
	bad[18] = 2
	if _, _, err := r.Add("b", bad); !errors.Is(err, ErrFragment) {
		t.Fatalf("a contradicting count: %v", err)
	}
	// Another predecessor cannot add to b's message.
	if m := add("c", b1[1]); m != nil {
		t.Fatal("c completed b's message")
	}
	// Expiry.
	clock.t = clock.t.Add(time.Minute)
	if s := r.Stats(); s.Pending != 0 || s.Bytes != 0 {
		t.Fatalf("after the expiry: %+v", s)
	}
	// The count bound: many sources, one set each.
	for i := range 10 {
		add(string(rune('a'+i)), first(2)[0])
	}
	if s := r.Stats(); s.Pending > 4 || s.Bytes > 5*FragmentData {
		t.Fatalf("over the bounds: %+v", s)
	}
}

func FuzzReassemble(f *testing.F) {
	parts, _ := Fragments(make([]byte, 3*FragmentData-5), nil, rand.Reader)
	for _, p := range parts {
		f.Add(p, p)
	}
	f.Add([]byte{fragKind}, []byte{})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		r := NewReassembler(ReassemblyOptions{MaxBytes: 4 * FragmentData})
		for _, p := range [][]byte{a, b, a} {
			m, _, err := r.Add("x", p)
			if err == nil && len(m) > MaxMessage {
				t.Fatalf("a message of %d bytes", len(m))
			}
		}
		if s := r.Stats(); s.Bytes > 4*FragmentData+FragmentData || s.Bytes < 0 {
			t.Fatalf("held %d bytes", s.Bytes)
		}
	})
}
