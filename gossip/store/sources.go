package store

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash"

	"github.com/quicproquo/qpq/gossip"
)

// sources does the per-source accounting, in memory only: a relay must
// not write down who handed it what. Each source with bytes in the store
// gets a slot number; a record keeps its slot masked with a keyed hash of
// its id under a key made at Open and never written, so the file alone
// does not even tell which records came from the same source. After a
// restart the key is gone and older records count against no source
// (the total and mailbox quotas, which are persisted, still hold them).
//
// Memory is bounded: a source is forgotten once it holds nothing, so
// there are at most as many entries as envelopes put since Open.
// The Store's mutex guards everything here.
type sources struct {
	mac    hash.Hash
	byName map[string]*source
	bySlot map[uint64]*source
	last   uint64 // last slot handed out; slots are never reused
}

type source struct {
	name  string
	slot  uint64
	bytes int64
}

func newSources() *sources {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand panics if the OS cannot supply)
	return &sources{
		mac:    hmac.New(sha256.New, key),
		byName: make(map[string]*source),
		bySlot: make(map[uint64]*source),
	}
}

func (ss *sources) usage(name string) int64 {
	if s := ss.byName[name]; s != nil {
		return s.bytes
	}
	return 0
}

// slotFor returns name's slot, or the one add will give it.
func (ss *sources) slotFor(name string) uint64 {
	if s := ss.byName[name]; s != nil {
		return s.slot
	}
	return ss.last + 1
}

func (ss *sources) pad(id gossip.ID) uint64 {
	ss.mac.Reset()
	ss.mac.Write(id[:])
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(ss.mac.Sum(sum[:0]))
}

// mask hides slot in a record of envelope id; unmask reverses it.
func (ss *sources) mask(id gossip.ID, slot uint64) uint64 { return slot ^ ss.pad(id) }

func (ss *sources) unmask(id gossip.ID, m uint64) uint64 { return m ^ ss.pad(id) }

func (ss *sources) count() int { return len(ss.byName) }

// charge adds n bytes to name, creating its entry under slot if new.
func (ss *sources) charge(name string, slot uint64, n int64) { ss.entry(name, slot).bytes += n }

func (ss *sources) entry(name string, slot uint64) *source {
	if s := ss.byName[name]; s != nil {
		return s
	}
	s := &source{name: name, slot: slot}
	ss.byName[name] = s
	ss.bySlot[slot] = s
	if slot > ss.last {
		ss.last = slot
	}
	return s
}

// release gives back n bytes held under slot, forgetting a source that
// holds nothing any more.
func (ss *sources) release(slot uint64, n int64) {
	s := ss.bySlot[slot]
	if s == nil {
		return
	}
	s.bytes -= n
	if s.bytes <= 0 {
		delete(ss.byName, s.name)
		delete(ss.bySlot, s.slot)
	}
}
