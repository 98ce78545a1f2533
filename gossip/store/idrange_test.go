package store

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/gossiptest"
	"github.com/quicproquo/qpq/schemas"
)

func TestIDRangeReadsOnlyItsRangeInOrder(t *testing.T) {
	// More ids than one read transaction takes, a few that expire: every
	// range gives exactly the unexpired ids inside it, sorted, and its
	// kinds.
	ts := openFast(t, Options{MaxBytes: 64 << 20, MaxTTL: 7 * 24 * time.Hour})
	var live []gossip.ID
	kinds := map[gossip.ID]schemas.Envelope_Kind{}
	for i := range 3*rangeBatch + 17 {
		ttl := uint32(3600)
		if i%10 == 0 {
			ttl = 60 // expired before the read
		}
		e := gossiptest.DM(nil, nil, ttl, 1)
		if i%7 == 0 {
			e = gossiptest.Broadcast(nil, ttl)
		}
		ts.mustPut(e, "c")
		if ttl > 60 {
			live = append(live, e.ID)
			kinds[e.ID] = e.Kind
		}
	}
	ts.clock.Advance(2 * time.Minute)
	slices.SortFunc(live, func(a, b gossip.ID) int { return bytes.Compare(a[:], b[:]) })

	mid := live[len(live)/2]
	quarter := live[len(live)/4]
	for _, c := range []struct {
		name       string
		start, end []byte
	}{
		{"everything", nil, nil},
		{"from the middle", mid[:], nil},
		{"to the middle", nil, mid[:]},
		{"a quarter to the middle", quarter[:], mid[:]},
		{"a prefix", []byte{0x40}, []byte{0x80}},
		{"empty", mid[:], mid[:]},
	} {
		var want []gossip.ID
		for _, id := range live {
			if bytes.Compare(id[:], c.start) >= 0 && (len(c.end) == 0 || bytes.Compare(id[:], c.end) < 0) {
				want = append(want, id)
			}
		}
		var got []gossip.ID
		err := ts.IDRange(c.start, c.end, func(id gossip.ID, kind schemas.Envelope_Kind) bool {
			if kind != kinds[id] {
				t.Errorf("%s: %v has kind %v, want %v", c.name, id, kind, kinds[id])
			}
			got = append(got, id)
			return true
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %d ids, want %d (or a different order)", c.name, len(got), len(want))
		}
	}

	// fn returning false stops it.
	n := 0
	if err := ts.IDRange(nil, nil, func(gossip.ID, schemas.Envelope_Kind) bool { n++; return n < rangeBatch+3 }); err != nil {
		t.Fatal(err)
	}
	if n != rangeBatch+3 {
		t.Errorf("stopped after %d ids, want %d", n, rangeBatch+3)
	}
	// Commits moves with each write.
	before := ts.Commits()
	ts.mustPut(gossiptest.DM(nil, nil, 3600, 1), "c")
	if ts.Commits() != before+1 {
		t.Errorf("Commits went from %d to %d after one put", before, ts.Commits())
	}
}
