package seen

import (
	"hash/maphash"
	"math/bits"
	"unsafe"

	"github.com/quicproquo/qpq/gossip"
)

// exactSet holds the ids among the last cap insertions, exactly, in a
// fixed amount of memory: a ring of ids in insertion order and an
// open-addressing index (linear probing) of positions in that ring.
// Nothing is allocated after newExactSet.
//
// Re-inserting an id moves it to the newest end: the index points at the
// new ring position and the old position becomes dead; when the ring wraps
// onto a dead position, its stale id is left in the index alone.
//
// exactSet is not safe for concurrent use; Set guards it.
type exactSet struct {
	ring []gossip.ID // insertion order; len is the capacity
	next int         // ring position the next insertion overwrites
	idx  []uint32    // 0 for an empty slot, else ring position + 1
	mask uint64      // len(idx) - 1; len(idx) is a power of two
	seed maphash.Seed
	n    int // live ids
}

// newExactSet returns a set for capacity ids (capacity > 0). The index has
// at least 4/3 slots per id, so probes stay short.
func newExactSet(capacity int) *exactSet {
	slots := 1 << bits.Len(uint(capacity+capacity/3))
	return &exactSet{
		ring: make([]gossip.ID, capacity),
		idx:  make([]uint32, slots),
		mask: uint64(slots - 1),
		seed: maphash.MakeSeed(),
	}
}

// home is the index slot where a probe for id starts. The seed is random,
// so a peer cannot choose ids that pile up in one run of slots.
func (e *exactSet) home(id *gossip.ID) uint64 {
	return maphash.Bytes(e.seed, id[:]) & e.mask
}

// find returns the index slot that holds id (ok) or where it would go.
func (e *exactSet) find(id *gossip.ID) (slot uint64, ok bool) {
	for s := e.home(id); ; s = (s + 1) & e.mask {
		v := e.idx[s]
		if v == 0 {
			return s, false
		}
		if e.ring[v-1] == *id {
			return s, true
		}
	}
}

// has reports whether id is among the last cap insertions.
func (e *exactSet) has(id gossip.ID) bool {
	_, ok := e.find(&id)
	return ok
}

// insert records id as the newest entry, evicting the oldest ring
// position if it still holds a live id.
func (e *exactSet) insert(id gossip.ID) {
	p := e.next
	old := &e.ring[p]
	if s, ok := e.find(old); ok && e.idx[s] == uint32(p)+1 {
		e.remove(s)
		e.n--
	}
	s, ok := e.find(&id) // after remove: it may shift slots
	if !ok {
		e.n++
	}
	e.ring[p] = id
	e.idx[s] = uint32(p) + 1
	if e.next++; e.next == len(e.ring) {
		e.next = 0
	}
}

// forget drops id if it is held; its ring position becomes dead.
func (e *exactSet) forget(id gossip.ID) {
	if s, ok := e.find(&id); ok {
		e.remove(s)
		e.n--
	}
}

// remove empties slot s and shifts later entries of its probe run back,
// so every remaining id is still reachable from its home slot.
func (e *exactSet) remove(s uint64) {
	hole := s
	for j := (s + 1) & e.mask; ; j = (j + 1) & e.mask {
		v := e.idx[j]
		if v == 0 {
			break
		}
		h := e.home(&e.ring[v-1])
		// The entry at j may fill the hole unless its home lies
		// cyclically in (hole, j].
		if (hole < j && hole < h && h <= j) || (hole > j && (hole < h || h <= j)) {
			continue
		}
		e.idx[hole] = v
		hole = j
	}
	e.idx[hole] = 0
}

// memoryBytes is the size of the ring and the index.
func (e *exactSet) memoryBytes() int {
	return len(e.ring)*int(unsafe.Sizeof(gossip.ID{})) + len(e.idx)*4 + int(unsafe.Sizeof(*e))
}
