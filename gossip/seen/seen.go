// Package seen remembers which broadcast envelope ids a node has already
// handled, so a flood is relayed once and delivered once.
//
// A Set is DESIGN's pair of rotating bloom filters, the current and the
// previous generation. The current one is rotated out when it has recorded
// Options.Capacity ids or is Options.MaxAge old, so an id stays remembered
// for at least one full generation after the one it was added in. Each
// generation hashes its ids under a fresh random key, so two nodes (or two
// generations of one node) have independent false positives.
//
// The filters are only a fast pre-check. A bloom false positive would
// silently drop a new message, so a "maybe seen" is confirmed against an
// exact record (a bounded FIFO set of recent ids, then the optional
// Options.Confirm hook, normally the store's Has) before an id is called a
// duplicate. A false positive costs one exact lookup, never a message.
package seen

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unsafe"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/gossip"
)

// Defaults for the zero fields of Options.
const (
	DefaultCapacity = 10000
	DefaultFPRate   = 0.001
	DefaultMaxAge   = time.Hour
)

// MaxCapacity bounds Options.Capacity and Options.ExactCapacity.
const MaxCapacity = 1 << 24

// ErrBadOptions is returned (wrapped, one per problem) by New when an
// Options field is out of range.
var ErrBadOptions = errors.New("bad seen-set options")

// keyLen is the size of each generation's random key.
const keyLen = 16

// Options configures a Set. Every zero field takes its default.
type Options struct {
	// Capacity is how many ids one generation records before it is
	// rotated out; the filters are sized for it. Default DefaultCapacity.
	Capacity int
	// FPRate is the bloom false-positive rate aimed for at Capacity ids,
	// in (0, 1). Default DefaultFPRate.
	FPRate float64
	// MaxAge is how long one generation lasts at most. Default
	// DefaultMaxAge.
	MaxAge time.Duration
	// ExactCapacity is how many of the most recently added ids the exact
	// set holds. Default 2*Capacity, enough to confirm every id the two
	// generations hold; a smaller set saves memory when Confirm covers
	// the rest.
	ExactCapacity int
	// Confirm, if not nil, is asked about a "maybe seen" id the exact set
	// does not hold; true makes it a duplicate. The node passes its
	// store's Has. It is called with the Set's lock held, so it must not
	// call back into the Set. Default nil (the exact set alone decides).
	Confirm func(id gossip.ID) bool
	// Now is the clock generations are aged by. Default time.Now.
	Now func() time.Time
}

// populate fills in defaults and returns every problem found, joined.
func (o *Options) populate() error {
	var errs []error
	switch {
	case o.Capacity == 0:
		o.Capacity = DefaultCapacity
	case o.Capacity < 0 || o.Capacity > MaxCapacity:
		errs = append(errs, fmt.Errorf("%w: capacity %d not in 1..%d", ErrBadOptions, o.Capacity, MaxCapacity))
	}
	switch {
	case o.FPRate == 0:
		o.FPRate = DefaultFPRate
	case !(o.FPRate > 0 && o.FPRate < 1):
		errs = append(errs, fmt.Errorf("%w: false-positive rate %v not in (0, 1)", ErrBadOptions, o.FPRate))
	}
	switch {
	case o.MaxAge == 0:
		o.MaxAge = DefaultMaxAge
	case o.MaxAge < 0:
		errs = append(errs, fmt.Errorf("%w: max age %v is negative", ErrBadOptions, o.MaxAge))
	}
	switch {
	case o.ExactCapacity == 0:
		o.ExactCapacity = 2 * o.Capacity
	case o.ExactCapacity < 0 || o.ExactCapacity > MaxCapacity:
		errs = append(errs, fmt.Errorf("%w: exact capacity %d not in 1..%d", ErrBadOptions, o.ExactCapacity, MaxCapacity))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return errors.Join(errs...)
}

// Stats is a snapshot of a Set, as `qpq status --json` shows it under
// "seen".
type Stats struct {
	// Capacity is the ids per generation (Options.Capacity).
	Capacity int `json:"capacity"`
	// Count is the ids recorded in the current generation.
	Count int `json:"count"`
	// FillRatio is the fraction of the current filter's bits that are set.
	FillRatio float64 `json:"fill_ratio"`
	// FPRate is the estimated chance, from both filters' fill, that a new
	// id tests "maybe seen" and needs an exact lookup.
	FPRate float64 `json:"fp_rate"`
	// Duplicates counts CheckAndAdd calls that returned true.
	Duplicates uint64 `json:"duplicates"`
	// FalsePositives counts CheckAndAdd calls where a filter said "maybe"
	// and the exact record said no.
	FalsePositives uint64 `json:"false_positives"`
	// MemoryBytes is the memory the Set holds: filters, exact set and
	// bookkeeping. It does not change after New.
	MemoryBytes int `json:"memory_bytes"`
}

// generation is one bloom filter and the key its ids are hashed under.
type generation struct {
	filter *bloom.BloomFilter
	key    [keyLen]byte
	count  int       // ids added
	start  time.Time // when it became current
}

// reset empties g under a fresh key.
func (g *generation) reset(now time.Time) {
	g.filter.ClearAll()
	rand.Read(g.key[:]) // never fails since Go 1.24
	g.count = 0
	g.start = now
}

// keyed is the bytes g's filter sees for id: its key, then the id.
func (g *generation) keyed(id *gossip.ID) [keyLen + gossip.IDLen]byte {
	var b [keyLen + gossip.IDLen]byte
	copy(b[:keyLen], g.key[:])
	copy(b[keyLen:], id[:])
	return b
}

func (g *generation) test(id *gossip.ID) bool {
	b := g.keyed(id)
	return g.filter.Test(b[:])
}

func (g *generation) add(id *gossip.ID) {
	b := g.keyed(id)
	g.filter.Add(b[:])
	g.count++
}

// fill is the fraction of g's filter bits that are set.
func (g *generation) fill() float64 {
	return float64(g.filter.BitSet().Count()) / float64(g.filter.Cap())
}

// fpRate estimates the chance a new id tests "maybe" in g.
func (g *generation) fpRate() float64 {
	return math.Pow(g.fill(), float64(g.filter.K()))
}

// Set is a node's seen-set of broadcast ids. It is safe for concurrent
// use.
type Set struct {
	opts Options // populated; read-only after New

	mu         sync.Mutex // guards the fields below
	cur, prev  generation
	exact      *exactSet
	duplicates uint64
	falsePos   uint64
}

// New returns an empty Set, or an error wrapping ErrBadOptions for each
// out-of-range option.
func New(opts Options) (*Set, error) {
	if err := opts.populate(); err != nil {
		return nil, err
	}
	s := &Set{opts: opts, exact: newExactSet(opts.ExactCapacity)}
	now := opts.Now()
	for _, g := range []*generation{&s.cur, &s.prev} {
		g.filter = bloom.NewWithEstimates(uint(opts.Capacity), opts.FPRate)
		g.reset(now)
	}
	return s, nil
}

// Seen reports whether id is exactly known within the two generations: a
// filter says "maybe" and the exact set or Confirm agrees. It records and
// counts nothing.
func (s *Set) Seen(id gossip.ID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked()
	return s.maybeLocked(&id) && s.confirmLocked(id)
}

// Add records id as seen, whether or not it already was; either way it
// counts toward the current generation's Capacity. The arrival path wants
// CheckAndAdd.
func (s *Set) Add(id gossip.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked()
	s.addLocked(&id)
}

// CheckAndAdd reports whether id is a duplicate (exactly known, as Seen)
// and records it if not, in one step: of concurrent calls with the same
// new id, exactly one returns false. It counts duplicates and filter
// false positives for Stats.
func (s *Set) CheckAndAdd(id gossip.ID) (dup bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked()
	if s.maybeLocked(&id) {
		if s.confirmLocked(id) {
			s.duplicates++
			return true
		}
		s.falsePos++
	}
	s.addLocked(&id)
	return false
}

// Forget undoes the record of id that CheckAndAdd or Add made, for an id
// that could not be handled after all (the store refused it): a later
// copy is then not called a duplicate. The filters keep its bits, so that
// copy costs one exact lookup and counts as a false positive.
func (s *Set) Forget(id gossip.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exact.forget(id)
}

// Stats returns a snapshot of the counters and the filters' state.
func (s *Set) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ageLocked()
	return Stats{
		Capacity:       s.opts.Capacity,
		Count:          s.cur.count,
		FillRatio:      s.cur.fill(),
		FPRate:         1 - (1-s.cur.fpRate())*(1-s.prev.fpRate()),
		Duplicates:     s.duplicates,
		FalsePositives: s.falsePos,
		MemoryBytes:    s.memoryBytesLocked(),
	}
}

// maybeLocked is the pre-check: false means id is certainly not in either
// generation.
func (s *Set) maybeLocked(id *gossip.ID) bool {
	return s.cur.test(id) || s.prev.test(id)
}

// confirmLocked asks the exact set, then Confirm.
func (s *Set) confirmLocked(id gossip.ID) bool {
	return s.exact.has(id) || (s.opts.Confirm != nil && s.opts.Confirm(id))
}

func (s *Set) addLocked(id *gossip.ID) {
	s.cur.add(id)
	s.exact.insert(*id)
	if s.cur.count >= s.opts.Capacity {
		s.rotateLocked(s.opts.Now())
	}
}

// ageLocked rotates out a current generation that has reached MaxAge. A
// Set idle for two MaxAges or more forgets both generations, as it would
// had it rotated on time.
func (s *Set) ageLocked() {
	now := s.opts.Now()
	age := now.Sub(s.cur.start)
	if age < s.opts.MaxAge {
		return
	}
	if age-s.opts.MaxAge >= s.opts.MaxAge { // 2*MaxAge could overflow
		s.cur.reset(now) // rotated out below, empty
	}
	s.rotateLocked(now)
}

// rotateLocked makes the current generation the previous one and reuses
// the old previous filter, emptied under a new key, as the current one.
func (s *Set) rotateLocked(now time.Time) {
	s.cur, s.prev = s.prev, s.cur
	s.cur.reset(now)
}

func (s *Set) memoryBytesLocked() int {
	n := int(unsafe.Sizeof(*s)) + s.exact.memoryBytes()
	for _, g := range []*generation{&s.cur, &s.prev} {
		n += int(unsafe.Sizeof(*g.filter)) + int(unsafe.Sizeof(*g.filter.BitSet())) + len(g.filter.BitSet().Words())*8
	}
	return n
}
