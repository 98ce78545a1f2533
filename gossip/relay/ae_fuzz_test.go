package relay

import (
	"bytes"
	"testing"

	"github.com/quicproquo/qpq/gossip"
)

// FuzzParseSummary feeds parseSummary arbitrary summaries as they come
// off the wire: it must never panic, and one it accepts has a 16-byte
// key, a digest that is empty or an id, and a range whose bounds are ids (or open) with start before end,
// whose share is a positive part of the id space, and whose filter
// answers Test.
func FuzzParseSummary(f *testing.F) {
	key := bytes.Repeat([]byte{7}, summaryKeyLen)
	lo, hi := bytes.Repeat([]byte{0x10}, gossip.IDLen), bytes.Repeat([]byte{0xf0}, gossip.IDLen)
	empty, _ := filterOfIDs(key, nil)
	one, _ := filterOfIDs(key, []gossip.ID{gossip.ID(lo)})
	f.Add(empty, key, []byte{}, []byte{}, []byte{}, uint32(0))
	f.Add(one, key, lo, hi, hi, uint32(1))
	f.Add(one, key, hi, lo, []byte{}, uint32(1))
	f.Add(one, key, lo[:31], []byte{}, lo[:3], uint32(1))
	f.Add(empty, key[:3], []byte{}, hi, []byte{}, uint32(0))
	f.Fuzz(func(t *testing.T, filter, key, start, end, digest []byte, count uint32) {
		bf, r, err := parseSummary(Summary{Filter: filter, Key: key, Count: count, Start: start, End: end, Digest: digest})
		if err != nil {
			return
		}
		if len(digest) != 0 && len(digest) != gossip.IDLen {
			t.Fatalf("accepted a %d-byte digest", len(digest))
		}
		// A receiver's table answers any accepted range without panicking.
		new(buckets).digest(r)
		if len(key) != summaryKeyLen {
			t.Fatalf("accepted a %d-byte key", len(key))
		}
		for _, b := range [][]byte{r.start, r.end} {
			if b != nil && len(b) != gossip.IDLen {
				t.Fatalf("accepted a %d-byte bound", len(b))
			}
		}
		if r.start != nil && r.end != nil && bytes.Compare(r.start, r.end) >= 0 {
			t.Fatalf("accepted the range %x..%x", r.start, r.end)
		}
		if s := r.share(); !(s > 0 && s <= 1) {
			t.Fatalf("range %x..%x has share %v", r.start, r.end, s)
		}
		bf.Test([]byte("probe"))
	})
}
