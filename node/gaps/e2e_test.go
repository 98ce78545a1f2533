package gaps_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/quicproquo/qpq/node/e2e"
	"github.com/quicproquo/qpq/node/gaps"
)

// TestDroppedDM: alice seals three DMs to bob numbered 1, 2, 3; the mesh
// loses the second. Bob's reader, fed what OpenDM returns, is told one
// message has not arrived, then that it is missing once its TTL has
// passed on his clock. Alice's clock is a day off, which changes nothing.
func TestDroppedDM(t *testing.T) {
	alice, bob := e2e.NewUser(), e2e.NewUser()
	aliceClock := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	const ttl = 2 * time.Hour
	var sealed [][]byte
	for seq := uint64(1); seq <= 3; seq++ {
		s, err := e2e.SealDMWith(alice, bob.Bundle(), fmt.Appendf(nil, "message %d", seq), aliceClock.Add(time.Duration(seq)*time.Minute),
			e2e.Meta{Seq: seq, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, s.Payload)
	}

	bobClock := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	tr := gaps.New(gaps.Config{Now: func() time.Time { return bobClock }})
	var shown []string
	read := func(payload []byte) {
		t.Helper()
		o, err := e2e.OpenDM(bob, payload)
		if err != nil {
			t.Fatal(err)
		}
		shown = append(shown, string(o.Body))
		for _, n := range tr.Observe(gaps.MessageOf(o, gaps.ConvDM)).Notices {
			shown = append(shown, n.Text("alice"))
		}
	}
	read(sealed[0])
	bobClock = bobClock.Add(5 * time.Minute)
	read(sealed[2])
	want := []string{"message 1", "message 3", "1 message from alice not yet arrived"}
	if fmt.Sprint(shown) != fmt.Sprint(want) {
		t.Fatalf("bob sees %q, want %q", shown, want)
	}

	bobClock = bobClock.Add(ttl - time.Second)
	if n := tr.Check(); len(n) != 0 {
		t.Fatalf("missing too early: %+v", n)
	}
	bobClock = bobClock.Add(time.Second)
	n := tr.Check()
	if len(n) != 1 || n[0].Text("alice") != "1 message from alice missing" || n[0].From != alice.Fingerprint() {
		t.Fatalf("after the TTL: %+v", n)
	}
	if g := tr.Gaps(); len(g) != 1 || g[0].First != 2 || g[0].State != gaps.Missing {
		t.Fatalf("gaps %+v", g)
	}

	// A version-1 style DM (SealDM: no number) is not counted.
	s, _ := e2e.SealDM(alice, bob.Bundle(), []byte("unnumbered"), aliceClock)
	o, _ := e2e.OpenDM(bob, s.Payload)
	if r := tr.Observe(gaps.MessageOf(o, gaps.ConvDM)); len(r.Notices) != 0 || r.Duplicate {
		t.Fatalf("unnumbered DM: %+v", r)
	}
}
