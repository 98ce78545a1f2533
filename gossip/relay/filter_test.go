package relay

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/mesh/identity"
)

func TestDecodeFilterRoundTrip(t *testing.T) {
	for _, n := range []uint{1, 64, 1000, 100000} {
		f := bloom.NewWithEstimates(n, summaryFPRate)
		f.Add([]byte("x"))
		b, err := f.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		g, err := decodeFilter(b)
		if err != nil {
			t.Fatalf("%d ids: %v", n, err)
		}
		if !g.Equal(f) {
			t.Fatalf("%d ids: decoded filter differs", n)
		}
	}
}

// claim is a filter header claiming m bits and k hashes, followed by
// body.
func claim(m, k uint64, body []byte) []byte {
	b := make([]byte, filterHeader, filterHeader+len(body))
	binary.BigEndian.PutUint64(b[0:], m)
	binary.BigEndian.PutUint64(b[8:], k)
	binary.BigEndian.PutUint64(b[16:], m)
	return append(b, body...)
}

func TestHostileSummaryFiltersRefusedWithoutAllocating(t *testing.T) {
	// A peer with a self-made identity sends filters whose header claims
	// far more than the message holds: refused with a clear error before
	// anything the size of the claim is allocated, and the engine keeps
	// serving.
	clock := newClock()
	n := newTNode(t, clock)
	from := identity.Fingerprint{1}
	defer n.eng.AddPeer(from, newRecPeer())()
	random := make([]byte, 200<<10)
	rand.Read(random)
	key := make([]byte, summaryKeyLen)
	for _, c := range []struct {
		name   string
		filter []byte
		msg    string
	}{
		{"2^38 bits in 32 bytes", claim(1<<38, 7, make([]byte, 8)), "over the"},
		{"2^40 bits in 32 bytes", claim(1<<40, 7, make([]byte, 8)), "over the"},
		{"2^64-1 bits", claim(^uint64(0), 7, make([]byte, 8)), "over the"},
		{"200 KiB random", random, "malformed summary"},
		{"more bits than bytes", claim(64*100, 7, make([]byte, 8)), "but is 32 bytes"},
		{"no hashes", claim(64, 0, make([]byte, 8)), "0 hashes"},
		{"too many hashes", claim(64, 65, make([]byte, 8)), "65 hashes"},
		{"bitset length differs", func() []byte { b := claim(64, 3, make([]byte, 8)); b[23]++; return b }(), "its bitset 65"},
		{"short header", []byte{0, 0, 0, 1}, "shorter than its"},
		{"over the byte bound", make([]byte, MaxFilterBytes+1), "over"},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := n.eng.HandleSummary(from, Summary{Filter: c.filter, Key: key, Count: 1})
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrBadSummary) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want ErrBadSummary saying %q", c.name, err, c.msg)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
			t.Errorf("%s: refusing it allocated %d bytes", c.name, grew)
		}
	}
	// Still serving: a well-formed summary is handled.
	s, err := n.eng.MakeSummary()
	if err != nil {
		t.Fatal(err)
	}
	if err := n.eng.HandleSummary(from, s); err != nil {
		t.Fatalf("a good summary after the hostile ones: %v", err)
	}
}
