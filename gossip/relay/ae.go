package relay

// Anti-entropy rounds, shared by every link, and partial summaries.
//
// A round is the set of summaries a node offers its neighbours during
// one SummaryInterval, built once under one fresh key and handed to
// every link that asks (aeCache), instead of once per link. There are
// two forms. A version-1 neighbour reads every summary as the whole set
// (one filter of every id held, capped at maxSummaryIDs); a version-2
// neighbour gets the id space cut into contiguous ranges [Start, End) of
// at most Options.SummaryPartIDs ids each (one Summary per range, every
// filter well under the RPC message bound however large the store), and
// checks each against only its own ids in that range, read by a cursor
// seek (store.IDRange), never its whole store. Ids are uniform hashes, so
// equal-count ranges cut by the sender hold about as many ids on the
// receiver.
//
// Ranges are cut on the boundaries of 4096 buckets (the ids' first 12
// bits), and each carries the XOR of its ids. Building a round also
// keeps our table of per-bucket XORs and counts; a receiver whose table
// (from its own round, at most an interval old) gives the same digest
// and count for a range skips it without reading anything, so a
// neighbour in step costs nothing but the messages. A stale table can
// only skip a range the sender held exactly as we did when we built it:
// what either side got since was pushed, or goes in a later round. The
// XOR is not keyed: an envelope set made to XOR to zero (which someone
// who makes envelopes can compute) and held by one side only would go
// unnoticed in a range, as if both held it; it only hides the maker's
// own envelopes.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/bits-and-blooms/bloom/v3"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/schemas"
)

const (
	// defaultSummaryPartIDs is how many ids a partial summary holds (and
	// up to a bucket more, to end on a bucket boundary): at summaryFPRate
	// (9.6 bits an id) about 39 KiB of filter, far under the RPC bound
	// (link.MaxRPCMessage, 256 KiB).
	defaultSummaryPartIDs = 32 << 10
	// maxRoundParts bounds the partial summaries of one round (32M ids at
	// the default size); a range is charged at least 1/maxRoundParts of a
	// summary token, so tiny ranges cannot be sent faster than a round.
	maxRoundParts = 1024
	// roundReuse is the part of SummaryInterval a round is reused for:
	// below one, so a link's next round (an interval after its last)
	// always gets a fresh key and a false positive is not repeated.
	roundReuse = 0.9
	// roundRebuildGap is the part of SummaryInterval after which a round
	// is rebuilt early when the store has changed since. A stale round
	// makes neighbours push back what arrived after it was built (a
	// summary makes the receiver forget what it believed we hold), so a
	// busy node rebuilds, but at most 1/roundRebuildGap times an
	// interval however many links it has (a node rebuilt once per link
	// before).
	roundRebuildGap = 0.25
)

// rangeStore is a Store that reads the ids in an id range by seeking
// (gossip/store's does). Without it, partial summaries fall back to
// filtering IDs.
type rangeStore interface {
	IDRange(start, end []byte, fn func(id gossip.ID, kind schemas.Envelope_Kind) bool) error
}

// commitCounter is a Store that counts its writes (gossip/store's does):
// a cached round is stale once the count moves.
type commitCounter interface {
	Commits() int64
}

// aeCache holds the current round of each form. The zero value is
// empty; Engine embeds one.
type aeCache struct {
	mu    sync.Mutex // held while building: concurrent askers wait for one build
	whole aeRound
	parts aeRound
	// clock paces rounds; nil is time.Now (tests set a fake one). Not
	// Options.Now: tests freeze that for rate limits while syncLoop's
	// real timers run.
	clock func() time.Time
}

// aeRound is one cached form.
type aeRound struct {
	at      time.Time // when built (wall clock: it paces work, as syncLoop's timers do)
	commits int64     // the store's commit count when built
	sums    []Summary
	buckets *buckets // the partial form's: our ids' digests when built
}

// Ranges are cut on bucket boundaries (the ids' first bucketBits bits),
// so a receiver can compute its own digest of any received range from
// its bucket table alone, without reading the store.
const (
	bucketBits = 12
	nBuckets   = 1 << bucketBits
)

// buckets holds, per bucket, the XOR and count of the ids in it: 144 KiB.
type buckets struct {
	xor   [nBuckets]gossip.ID
	count [nBuckets]uint32
}

// bucketOf is id's bucket.
func bucketOf(id []byte) int { return int(id[0])<<4 | int(id[1])>>4 }

// bucketStart is the least id in bucket b.
func bucketStart(b int) gossip.ID {
	var id gossip.ID
	id[0], id[1] = byte(b>>4), byte(b&15)<<4
	return id
}

// bucketBound is the bucket a range bound starts, and whether it is on a
// bucket boundary; nil is past the end (nBuckets) as an end, 0 as a
// start.
func bucketBound(bound []byte, end bool) (int, bool) {
	if bound == nil {
		if end {
			return nBuckets, true
		}
		return 0, true
	}
	b := bucketOf(bound)
	start := bucketStart(b)
	return b, bytes.Equal(bound, start[:])
}

// digest is the XOR and count of our ids in r as the table holds them;
// false when r is not on bucket boundaries.
func (t *buckets) digest(r idRange) (gossip.ID, uint32, bool) {
	lo, ok1 := bucketBound(r.start, false)
	hi, ok2 := bucketBound(r.end, true)
	var d gossip.ID
	var n uint32
	if !ok1 || !ok2 {
		return d, 0, false
	}
	for b := lo; b < hi; b++ {
		xorID(&d, &t.xor[b])
		n += t.count[b]
	}
	return d, n, true
}

// xorID sets d to d XOR x.
func xorID(d, x *gossip.ID) {
	for i := range d {
		d[i] ^= x[i]
	}
}

// fresh reports whether r can be handed out again at now. force (an
// explicit SendSummary) rebuilds whenever the store changed.
func (r *aeRound) fresh(now time.Time, interval time.Duration, commits int64, counted, force bool) bool {
	if r.sums == nil {
		return false
	}
	age := now.Sub(r.at)
	if age < 0 || age >= time.Duration(float64(interval)*roundReuse) {
		return false
	}
	if counted && commits != r.commits {
		return !force && age < time.Duration(float64(interval)*roundRebuildGap)
	}
	return true
}

// round returns the current round for a neighbour speaking version:
// one whole-store summary for version 1, partial summaries covering the
// id space for version 2 and later. Callers must not modify it.
func (e *Engine) round(version uint16, force bool) ([]Summary, error) {
	e.ae.mu.Lock()
	defer e.ae.mu.Unlock()
	var commits int64
	cc, counted := e.o.Store.(commitCounter)
	if counted {
		commits = cc.Commits()
	}
	r := &e.ae.whole
	if version >= 2 {
		r = &e.ae.parts
	}
	now := e.aeNow()
	if r.fresh(now, e.o.SummaryInterval, commits, counted, force) {
		return r.sums, nil
	}
	var sums []Summary
	var table *buckets
	if version >= 2 {
		var err error
		if sums, table, err = e.makeParts(); err != nil {
			return nil, err
		}
	} else {
		s, err := e.MakeSummary()
		if err != nil {
			return nil, err
		}
		sums = []Summary{s}
	}
	*r = aeRound{at: now, commits: commits, sums: sums, buckets: table}
	return sums, nil
}

// ownBuckets is the bucket table of our current partial round, or nil
// when there is none younger than SummaryInterval, or when it may not
// show what p lacks. It never builds one: handling a summary stays a
// range read at worst.
//
// A table older than the store's last commit is still good for a
// neighbour linked before it was built: what we stored since went to
// that neighbour by fan-out (or, lost, goes next round). A neighbour
// linked later got none of it, and a digest that matches the old table
// (an empty new node against our empty start) would hide all of it.
func (e *Engine) ownBuckets(p *peer) *buckets {
	e.ae.mu.Lock()
	defer e.ae.mu.Unlock()
	now := e.aeNow()
	r := &e.ae.parts
	if r.buckets == nil || now.Sub(r.at) < 0 || now.Sub(r.at) >= e.o.SummaryInterval {
		return nil
	}
	if cc, ok := e.o.Store.(commitCounter); ok && cc.Commits() == r.commits {
		return r.buckets // nothing stored or deleted since
	}
	if p.linked.After(r.at) {
		return nil
	}
	return r.buckets
}

// aeNow is the clock rounds are timed by.
func (e *Engine) aeNow() time.Time {
	if e.ae.clock != nil {
		return e.ae.clock()
	}
	return time.Now()
}

// newSummaryKey is a fresh random key for one round.
func newSummaryKey() []byte {
	key := make([]byte, summaryKeyLen)
	rand.Read(key)
	return key
}

// filterOfIDs builds a summary filter of ids under key.
func filterOfIDs(key []byte, ids []gossip.ID) ([]byte, error) {
	f := bloom.NewWithEstimates(uint(max(len(ids), 64)), summaryFPRate)
	buf := make([]byte, summaryKeyLen+gossip.IDLen)
	copy(buf, key)
	for _, id := range ids {
		copy(buf[summaryKeyLen:], id[:])
		f.Add(buf)
	}
	b, err := f.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("summary filter: %w", err)
	}
	return b, nil
}

// sortedIDs calls fn with every unexpired id in id order: by a range
// read when the store has one, else by sorting IDs.
func (e *Engine) sortedIDs(fn func(id gossip.ID) bool) error {
	if rs, ok := e.o.Store.(rangeStore); ok {
		return rs.IDRange(nil, nil, func(id gossip.ID, _ schemas.Envelope_Kind) bool { return fn(id) })
	}
	var ids []gossip.ID
	if err := e.o.Store.IDs(func(id gossip.ID, _ schemas.Envelope_Kind) bool {
		ids = append(ids, id)
		return true
	}); err != nil {
		return err
	}
	slices.SortFunc(ids, func(a, b gossip.ID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		if !fn(id) {
			break
		}
	}
	return nil
}

// makeParts builds one round of partial summaries under a fresh key,
// and the bucket table of the ids in them: the ids in order, cut at the
// first bucket boundary once a range holds SummaryPartIDs ids (a bucket
// holds 1/4096 of the ids, so a range holds about that many; at most
// twice that, see below). Each range
// starts where the one before ends, the first from the start of the id
// space and the last to its end, so the ranges cover it all. A store
// that fits in one range gives one summary with neither bound, which is
// the whole-store form. Past maxRoundParts ranges the last range stops
// growing (its ids beyond are left out, as a capped whole summary
// leaves them).
func (e *Engine) makeParts() ([]Summary, *buckets, error) {
	key := newSummaryKey()
	per := e.o.SummaryPartIDs
	table := new(buckets)
	var sums []Summary
	chunk := make([]gossip.ID, 0, min(per, 1024))
	var start []byte
	var xor gossip.ID
	flush := func(end []byte) error {
		b, err := filterOfIDs(key, chunk)
		if err != nil {
			return err
		}
		// The digest goes even on a lone range with no bounds (a small
		// store): a version-1 receiver ignores it.
		sums = append(sums, Summary{Filter: b, Key: key, Count: uint32(len(chunk)), Start: start, End: end, Digest: bytes.Clone(xor[:])})
		chunk, xor = chunk[:0], gossip.ID{}
		return nil
	}
	var ferr error
	err := e.sortedIDs(func(id gossip.ID) bool {
		b := bucketOf(id[:])
		same := len(chunk) > 0 && b == bucketOf(chunk[len(chunk)-1][:])
		// A bucket crowded past another SummaryPartIDs (ids made to share
		// a prefix) is cut mid-way, at an id: no range outgrows twice the
		// size, and that range is read rather than skipped by digest.
		if len(chunk) >= per && (!same || len(chunk) >= 2*per) {
			if len(sums) == maxRoundParts-1 {
				return false
			}
			next := bucketStart(b)
			if same {
				next = id
			}
			if ferr = flush(next[:]); ferr != nil {
				return false
			}
			start = next[:]
		}
		chunk = append(chunk, id)
		xorID(&xor, &id)
		xorID(&table.xor[b], &id)
		table.count[b]++
		return true
	})
	if err == nil {
		err = ferr
	}
	if err != nil {
		return nil, nil, fmt.Errorf("partial summaries: %w", err)
	}
	if err := flush(nil); err != nil {
		return nil, nil, fmt.Errorf("partial summaries: %w", err)
	}
	return sums, table, nil
}

// idRange is a summary's [Start, End), checked.
type idRange struct {
	start, end []byte // nil: unbounded
}

// whole reports whether r is the whole id space (the version-1 form).
func (r idRange) whole() bool { return r.start == nil && r.end == nil }

// contains reports whether id is in r.
func (r idRange) contains(id gossip.ID) bool {
	return (r.start == nil || bytes.Compare(id[:], r.start) >= 0) && (r.end == nil || bytes.Compare(id[:], r.end) < 0)
}

// share is about what part of the id space r covers (ids are uniform, so
// of a store too), from the bounds' first 8 bytes, at least
// 1/maxRoundParts: what handling it is charged.
func (r idRange) share() float64 {
	lo, hi := 0.0, math.Exp2(64)
	if r.start != nil {
		lo = float64(binary.BigEndian.Uint64(r.start))
	}
	if r.end != nil {
		hi = float64(binary.BigEndian.Uint64(r.end))
	}
	return min(1, max((hi-lo)/math.Exp2(64), 1.0/maxRoundParts))
}

// checkRange checks a received summary's bounds: each empty or an id,
// start before end.
func checkRange(start, end []byte) (idRange, error) {
	var r idRange
	if len(start) != 0 {
		if len(start) != gossip.IDLen {
			return r, fmt.Errorf("%w: range start is %d bytes, want 0 or %d", ErrBadSummary, len(start), gossip.IDLen)
		}
		r.start = start
	}
	if len(end) != 0 {
		if len(end) != gossip.IDLen {
			return r, fmt.Errorf("%w: range end is %d bytes, want 0 or %d", ErrBadSummary, len(end), gossip.IDLen)
		}
		r.end = end
	}
	if r.start != nil && r.end != nil && bytes.Compare(r.start, r.end) >= 0 {
		return r, fmt.Errorf("%w: range start %x is not before its end %x", ErrBadSummary, r.start[:8], r.end[:8])
	}
	return r, nil
}

// parseSummary checks everything a received summary says before the
// node acts on it: its key, its range and digest, its filter and the
// filter's fill against its count.
func parseSummary(s Summary) (*bloom.BloomFilter, idRange, error) {
	if len(s.Key) != summaryKeyLen {
		return nil, idRange{}, fmt.Errorf("%w: key is %d bytes, want %d", ErrBadSummary, len(s.Key), summaryKeyLen)
	}
	if len(s.Digest) != 0 && len(s.Digest) != gossip.IDLen {
		return nil, idRange{}, fmt.Errorf("%w: digest is %d bytes, want 0 or %d", ErrBadSummary, len(s.Digest), gossip.IDLen)
	}
	r, err := checkRange(s.Start, s.End)
	if err != nil {
		return nil, idRange{}, err
	}
	f, err := decodeFilter(s.Filter)
	if err != nil {
		return nil, idRange{}, err
	}
	if err := plausible(f, s.Count); err != nil {
		return nil, idRange{}, err
	}
	return f, r, nil
}

// takeSummaryShare spends share of a summary token (peer.takeSummary's
// budget): a round of partial summaries costs one token in all.
func (p *peer) takeSummaryShare(now time.Time, gap time.Duration, share float64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sumTokens = min(summaryBurst, p.sumTokens+now.Sub(p.sumLast).Seconds()/gap.Seconds())
	p.sumLast = now
	// A whole token's worth is due before any spending, as takeSummary
	// asks, less a rounding allowance so a round's shares summing to one
	// fit one token.
	if p.sumTokens < share*(1-1e-9) {
		return false
	}
	p.sumTokens -= share
	return true
}

// rangeIDs calls fn with our unexpired ids in r: a cursor seek on the
// range when the store has one, else every id filtered.
func (e *Engine) rangeIDs(r idRange, fn func(id gossip.ID) bool) error {
	if rs, ok := e.o.Store.(rangeStore); ok {
		return rs.IDRange(r.start, r.end, func(id gossip.ID, _ schemas.Envelope_Kind) bool { return fn(id) })
	}
	return e.o.Store.IDs(func(id gossip.ID, _ schemas.Envelope_Kind) bool {
		if !r.contains(id) {
			return true
		}
		return fn(id)
	})
}
