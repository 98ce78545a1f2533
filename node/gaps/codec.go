package gaps

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Saved state, version 1. Add, never change: a new layout gets a new
// version. Integers are unsigned varints (u) or zig-zag signed varints (s).
//
//	8    magic "qpqgaps" and version 1
//	u    tick
//	u    number of streams, then each:
//	32     sender fingerprint
//	u      conversation key length (at most MaxConvLen), then the key
//	u      high, s high send time (Unix ms), u floor, u last used (tick)
//	u      recent arrivals (at most 8), each u number, s send time
//	u      gaps, each u first, u last, s seen, s deadline (Unix ms), 1 byte missing (0 or 1)
const codecMagic = "qpqgaps\x01"

// Decoder bounds, whatever the Tracker's Config: a saved state is read
// whole into memory.
const (
	maxSaved       = 8 << 20 // bytes
	maxSavedGaps   = 1 << 10 // per stream
	maxSavedStream = 1 << 16
)

// ErrCorrupt is returned (wrapped) by UnmarshalBinary for bytes that are
// not a saved Tracker state of a known version.
var ErrCorrupt = errors.New("corrupt gap tracker state")

// MarshalBinary saves the tracker's state (not its Config).
func (t *Tracker) MarshalBinary() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]streamKey, 0, len(t.streams))
	for k := range t.streams {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, cmpKey) // the same state always saves the same bytes
	b := []byte(codecMagic)
	b = binary.AppendUvarint(b, t.tick)
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		s := t.streams[k]
		b = append(b, k.from[:]...)
		b = binary.AppendUvarint(b, uint64(len(k.conv)))
		b = append(b, k.conv...)
		b = binary.AppendUvarint(b, s.high)
		b = binary.AppendVarint(b, s.highSent)
		b = binary.AppendUvarint(b, s.floor)
		b = binary.AppendUvarint(b, s.used)
		b = binary.AppendUvarint(b, uint64(len(s.recent)))
		for _, r := range s.recent {
			b = binary.AppendUvarint(b, r.seq)
			b = binary.AppendVarint(b, r.sent)
		}
		b = binary.AppendUvarint(b, uint64(len(s.gaps)))
		for _, g := range s.gaps {
			b = binary.AppendUvarint(b, g.first)
			b = binary.AppendUvarint(b, g.last)
			b = binary.AppendVarint(b, g.seen)
			b = binary.AppendVarint(b, g.deadline)
			m := byte(0)
			if g.missing {
				m = 1
			}
			b = append(b, m)
		}
	}
	return b, nil
}

// UnmarshalBinary replaces the tracker's state with a saved one, keeping
// its Config; beyond the Config's bounds, the least recently used streams
// and the oldest gaps are dropped. On error the state is left as it was.
// Call Check afterwards: gaps may have turned missing while it was saved.
func (t *Tracker) UnmarshalBinary(data []byte) error {
	streams, tick, err := decode(data)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams, t.tick = streams, tick
	for _, s := range t.streams {
		if len(s.gaps) > t.maxGaps {
			drop := len(s.gaps) - t.maxGaps
			s.floor = s.gaps[drop-1].last + 1
			s.gaps = slices.Delete(s.gaps, 0, drop)
		}
	}
	t.evictLocked(t.maxStreams)
	return nil
}

// reader reads the saved layout, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
}

func (r *reader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint(what string) int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("bad %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n uint64, what string) []byte {
	if r.err != nil {
		return nil
	}
	if uint64(len(r.b)) < n {
		r.fail("%s truncated", what)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

// count reads a length and checks it against max.
func (r *reader) count(max uint64, what string) uint64 {
	n := r.uvarint(what)
	if n > max {
		r.fail("%d %s, at most %d", n, what, max)
		return 0
	}
	return n
}

func decode(data []byte) (map[streamKey]*stream, uint64, error) {
	if len(data) > maxSaved {
		return nil, 0, fmt.Errorf("%w: %d bytes, at most %d", ErrCorrupt, len(data), maxSaved)
	}
	if len(data) < len(codecMagic) || string(data[:len(codecMagic)]) != codecMagic {
		return nil, 0, fmt.Errorf("%w: not a saved state of a known version", ErrCorrupt)
	}
	r := &reader{b: data[len(codecMagic):]}
	tick := r.uvarint("tick")
	n := r.count(maxSavedStream, "streams")
	streams := make(map[streamKey]*stream, min(n, 1024))
	for i := uint64(0); i < n && r.err == nil; i++ {
		var k streamKey
		copy(k.from[:], r.bytes(uint64(len(k.from)), "fingerprint")) // nil when short: r.err says so
		k.conv = string(r.bytes(r.count(MaxConvLen, "conversation key bytes"), "conversation key"))
		s := &stream{}
		s.high = r.uvarint("high")
		s.highSent = r.varint("high send time")
		s.floor = r.uvarint("floor")
		s.used = r.uvarint("last used")
		nr := r.count(recentLen, "recent arrivals")
		for j := uint64(0); j < nr && r.err == nil; j++ {
			s.recent = append(s.recent, seen{seq: r.uvarint("recent number"), sent: r.varint("recent send time")})
		}
		ng := r.count(maxSavedGaps, "gaps")
		for j := uint64(0); j < ng && r.err == nil; j++ {
			g := gap{first: r.uvarint("gap first"), last: r.uvarint("gap last"), seen: r.varint("gap seen"), deadline: r.varint("gap deadline")}
			switch m := r.bytes(1, "gap state"); {
			case m == nil:
			case m[0] == 1:
				g.missing = true
			case m[0] != 0:
				r.fail("gap state %d", m[0])
			}
			s.gaps = append(s.gaps, g)
		}
		if r.err != nil {
			break
		}
		if err := s.check(); err != nil {
			return nil, 0, fmt.Errorf("%w: stream %d: %v", ErrCorrupt, i, err)
		}
		if _, dup := streams[k]; dup {
			return nil, 0, fmt.Errorf("%w: stream %d repeated", ErrCorrupt, i)
		}
		streams[k] = s
	}
	if r.err != nil {
		return nil, 0, r.err
	}
	if len(r.b) != 0 {
		return nil, 0, fmt.Errorf("%w: %d bytes after the end", ErrCorrupt, len(r.b))
	}
	return streams, tick, nil
}

// check verifies the invariants Observe relies on.
func (s *stream) check() error {
	if s.high == 0 || s.floor == 0 || s.floor > s.high {
		return fmt.Errorf("numbers: floor %d, high %d", s.floor, s.high)
	}
	for _, r := range s.recent {
		if r.seq == 0 || r.seq > s.high {
			return fmt.Errorf("recent number %d past high %d", r.seq, s.high)
		}
	}
	next := s.floor
	for _, g := range s.gaps {
		if g.first < next || g.last < g.first || g.last >= s.high {
			return fmt.Errorf("gap %d..%d out of order or outside %d..%d", g.first, g.last, s.floor, s.high)
		}
		next = g.last + 1
	}
	return nil
}
