package relay

import (
	"encoding/binary"
	"testing"

	"github.com/bits-and-blooms/bloom/v3"
)

// FuzzDecodeFilter feeds decodeFilter arbitrary summary filters: it must
// never panic, and a filter it accepts must have the size its bytes hold
// and answer Test without panicking.
func FuzzDecodeFilter(f *testing.F) {
	good, _ := bloom.NewWithEstimates(100, 0.01).MarshalBinary()
	f.Add(good)
	f.Add([]byte{})
	huge := make([]byte, 32)
	binary.BigEndian.PutUint64(huge[0:], 1<<40)
	binary.BigEndian.PutUint64(huge[8:], 7)
	binary.BigEndian.PutUint64(huge[16:], 1<<40)
	f.Add(huge)
	f.Fuzz(func(t *testing.T, b []byte) {
		bf, err := decodeFilter(b)
		if err != nil {
			return
		}
		if words := (uint64(bf.Cap()) + 63) / 64; filterHeader+8*words > uint64(len(b)) {
			t.Fatalf("accepted a filter of %d bits from %d bytes", bf.Cap(), len(b))
		}
		bf.Test([]byte("probe"))
	})
}
