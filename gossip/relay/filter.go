package relay

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/bits-and-blooms/bloom/v3"
)

// A summary's filter is bloom/v3's MarshalBinary (v3.7.1, over bitset
// v1.24.2): three big-endian uint64s, the filter's bit count m, its hash
// count k and the bitset's length in bits (equal to m), then the bitset's
// ceil(m/64) words, each a big-endian uint64. bloom's UnmarshalBinary
// allocates the words its header claims before reading them, so a
// 32-byte message claiming 2^40 bits would take the node's memory, and a
// random header makes it panic: decodeFilter checks the header against the
// bytes actually sent first.
const (
	filterHeader    = 3 * 8
	maxFilterHashes = 64
)

// decodeFilter checks and decodes a received summary filter.
func decodeFilter(b []byte) (*bloom.BloomFilter, error) {
	if len(b) > MaxFilterBytes {
		return nil, fmt.Errorf("%w: filter is %d bytes, over %d", ErrBadSummary, len(b), MaxFilterBytes)
	}
	if len(b) < filterHeader {
		return nil, fmt.Errorf("%w: filter is %d bytes, shorter than its %d-byte header", ErrBadSummary, len(b), filterHeader)
	}
	m := binary.BigEndian.Uint64(b[0:])
	k := binary.BigEndian.Uint64(b[8:])
	n := binary.BigEndian.Uint64(b[16:])
	if k == 0 || k > maxFilterHashes {
		return nil, fmt.Errorf("%w: filter has %d hashes, want 1..%d", ErrBadSummary, k, maxFilterHashes)
	}
	if m == 0 || n != m {
		return nil, fmt.Errorf("%w: filter header says %d bits, its bitset %d", ErrBadSummary, m, n)
	}
	if maxBits := uint64(MaxFilterBytes-filterHeader) * 8; m > maxBits {
		return nil, fmt.Errorf("%w: filter claims %d bits, over the %d a summary may hold", ErrBadSummary, m, maxBits)
	}
	if want := filterHeader + 8*((m+63)/64); uint64(len(b)) != want {
		return nil, fmt.Errorf("%w: filter claims %d bits (%d bytes) but is %d bytes", ErrBadSummary, m, want, len(b))
	}
	f := new(bloom.BloomFilter)
	if err := f.UnmarshalBinary(b); err != nil {
		return nil, fmt.Errorf("%w: filter: %v", ErrBadSummary, err)
	}
	return f, nil
}

// plausible checks a filter's fill against the ids it says it holds:
// count ids under k hashes set about m(1-e^(-k*count/m)) of its m bits.
// Far fewer bits set claims to lack what it holds (asking for everything
// again); far more claims to hold what it does not. Honest filters sit
// close to the estimate, so a factor of four either way is refused.
func plausible(f *bloom.BloomFilter, count uint32) error {
	m, k := float64(f.Cap()), float64(f.K())
	want := m * (1 - math.Exp(-k*float64(count)/m))
	set := float64(f.BitSet().Count())
	if set < want/4 || set > 4*want+k {
		return fmt.Errorf("%w: filter has %d of %d bits set, implausible for %d ids", ErrBadSummary, uint64(set), f.Cap(), count)
	}
	return nil
}
