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
// (the total, kind and mailbox budgets, which are counted from the file,
// still hold them).
//
// Memory is bounded: a source, and its share of a mailbox, is forgotten
// once it holds nothing, so there are at most as many entries as
// envelopes put since Open.
//
// A write transaction charges and releases here as it goes (so that the
// ops of one batch see each other's quota use exactly as if each had
// committed alone) and keeps an undo record of each change; if the
// transaction does not commit, the records are undone in reverse order
// (see Store.updateLocked).
// The Store's mutex guards everything here.
type sources struct {
	mac    hash.Hash
	byName map[string]*source
	bySlot map[uint64]*source
	last   uint64            // last slot handed out; slots are never reused
	active [numPools]int     // sources holding bytes of each pool
	inMbox map[mboxKey]int64 // bytes a source holds in one mailbox
}

type source struct {
	name  string
	slot  uint64
	bytes [numPools]int64
	total int64
}

// mboxKey names what one source (by slot) holds in one mailbox.
type mboxKey struct {
	dest string
	slot uint64
}

func newSources() *sources {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand panics if the OS cannot supply)
	return &sources{
		mac:    hmac.New(sha256.New, key),
		byName: make(map[string]*source),
		bySlot: make(map[uint64]*source),
		inMbox: make(map[mboxKey]int64),
	}
}

// usage is what name holds of pool p.
func (ss *sources) usage(name string, p pool) int64 {
	if s := ss.byName[name]; s != nil {
		return s.bytes[p]
	}
	return 0
}

// inMailbox is what the source with slot holds in dest's mailbox.
func (ss *sources) inMailbox(dest []byte, slot uint64) int64 {
	return ss.inMbox[mboxKey{string(dest), slot}]
}

// users is how many sources would hold bytes of pool p if name put some:
// the fair share of a budget is the budget divided by it.
func (ss *sources) users(name string, p pool) int {
	n := ss.active[p]
	if ss.usage(name, p) == 0 {
		n++
	}
	return n
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

// srcUndo restores what one charge or release changed: the source's
// entry (its contents and whether the maps held it), the slot counter,
// the active counts and the one mailbox share it touched.
type srcUndo struct {
	s        *source // nil: the change touched nothing
	prev     source
	inMaps   bool
	last     uint64
	active   [numPools]int
	mk       mboxKey
	mprev    int64
	mhad     bool
	mtouched bool
}

// snapshot records the state a change to s (and to mailbox share mk,
// when touched) is about to alter.
func (ss *sources) snapshot(s *source, inMaps bool, mk mboxKey, mtouched bool) srcUndo {
	u := srcUndo{s: s, prev: *s, inMaps: inMaps, last: ss.last, active: ss.active, mk: mk, mtouched: mtouched}
	if mtouched {
		u.mprev, u.mhad = ss.inMbox[mk]
	}
	return u
}

// undo reverses one change recorded by charge or release; changes must
// be undone newest first.
func (ss *sources) undo(u srcUndo) {
	if u.s == nil {
		return
	}
	ss.last, ss.active = u.last, u.active
	*u.s = u.prev
	if u.inMaps {
		ss.byName[u.s.name] = u.s
		ss.bySlot[u.s.slot] = u.s
	} else {
		delete(ss.byName, u.s.name)
		delete(ss.bySlot, u.s.slot)
	}
	if u.mtouched {
		if u.mhad {
			ss.inMbox[u.mk] = u.mprev
		} else {
			delete(ss.inMbox, u.mk)
		}
	}
}

// charge adds n bytes of pool p in dest's mailbox (none when dest is
// empty) to name, creating its entry under slot if new. It returns how
// to undo it.
func (ss *sources) charge(c charge) srcUndo {
	s := ss.byName[c.name]
	inMaps := s != nil
	if s == nil {
		s = &source{name: c.name, slot: c.slot}
	}
	mk := mboxKey{string(c.dest), c.slot}
	u := ss.snapshot(s, inMaps, mk, len(c.dest) > 0)
	if !inMaps {
		s = &source{name: c.name, slot: c.slot}
		ss.byName[c.name] = s
		ss.bySlot[c.slot] = s
		if c.slot > ss.last {
			ss.last = c.slot
		}
	}
	if s.bytes[c.pool] == 0 {
		ss.active[c.pool]++
	}
	s.bytes[c.pool] += c.n
	s.total += c.n
	if len(c.dest) > 0 {
		ss.inMbox[mk] += c.n
	}
	return u
}

// release gives back n bytes of pool p in dest's mailbox held under
// slot, forgetting what holds nothing any more. It returns how to undo
// it.
func (ss *sources) release(r release) srcUndo {
	s := ss.bySlot[r.slot]
	if s == nil {
		return srcUndo{}
	}
	k := mboxKey{string(r.dest), r.slot}
	u := ss.snapshot(s, true, k, len(r.dest) > 0)
	if len(r.dest) > 0 {
		if left := ss.inMbox[k] - r.n; left > 0 {
			ss.inMbox[k] = left
		} else {
			delete(ss.inMbox, k)
		}
	}
	if s.bytes[r.pool] > 0 {
		s.bytes[r.pool] -= r.n
		if s.bytes[r.pool] <= 0 {
			s.bytes[r.pool] = 0
			ss.active[r.pool]--
		}
	}
	s.total -= r.n
	if s.total <= 0 {
		delete(ss.byName, s.name)
		delete(ss.bySlot, s.slot)
	}
	return u
}
