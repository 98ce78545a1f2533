// Package placement decides which nodes hold the mailbox of a user, so that
// a DM can travel to a few places its recipient's node pulls from instead of
// being flooded to every node (issue 12, item 5). It is pure: no network, no
// clock reads; the caller passes the node descriptors it knows, when it first
// saw each, and its own monotonic "now".
//
// The scheme, and why each part is there:
//
//   - Buckets. A user's mailbox is the bucket Bucket(user, BucketBits): the
//     first bits of SHA-256 over a label and the user's fingerprint. Many users
//     share a bucket, and the recipient's node pulls the whole bucket, so a
//     pull does not say which user it is for.
//   - Rendezvous hashing. Each eligible node gets a score per bucket,
//     Score(bucket, fp, generation); the K lowest scores hold the bucket.
//     A node's score does not depend on which other nodes are known, so two
//     nodes whose views differ by a few descriptors still agree on every slot
//     those descriptors do not take.
//   - Minimum age. Only descriptors this node first saw at least MinAge ago
//     count. Node keys are free, so an attacker can grind fingerprints that
//     score low for a victim's bucket; a fresh one takes no slot until it has
//     been gossiped and seen for MinAge.
//   - Age generations instead of a clock epoch. The score is salted with the
//     candidate's generation: how many Rotation periods it has been eligible,
//     counted from this node's own first-seen record. So a ground key scores
//     low for at most one Rotation and is then re-drawn at random, without
//     any wall clock: routers boot with wrong clocks and have no NTP, and a
//     wall-clock epoch would split views at every boundary on every badly set
//     router. Two nodes disagree about a candidate's generation only while
//     their first-seen times of it differ, which is the gossip delay
//     (minutes) around a flip that happens once per Rotation; placement nodes
//     hand their envelopes over when they drop out, and a sender that gets no
//     receipt in time floods, so a short disagreement costs a fallback, not a
//     lost DM.
//
// What this does not stop: an attacker who keeps many keys alive for MinAge,
// each ground for a future generation, can still hold a bucket's slots for a
// time; it must now run a key per slot per Rotation and wait, and the
// flooding fallback on a missing receipt still delivers the DM.
//
// What a placement node learns: the envelopes of its buckets (destination
// user, size, arrival time), the address of the node each DM came from, and
// the addresses of the nodes that pull each bucket. It does not learn the
// sender (sealed sender) or which puller serves which user, but a receipt
// sent straight from the recipient's node links that node to the DM's
// destination; sending receipts through another node (an onion route or a
// random relay) is left to do.
package placement

import (
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

// Labels separate these hashes from every other use of SHA-256 in qpq.
const (
	bucketLabel = "qpq mailbox bucket v1"
	scoreLabel  = "qpq mailbox place v1"
)

// Defaults used where Options leaves a field zero.
const (
	DefaultK          = 3
	DefaultMinAge     = 24 * time.Hour
	DefaultRotation   = 30 * 24 * time.Hour
	DefaultBucketBits = 8
	// MaxBucketBits keeps a bucket in a uint32.
	MaxBucketBits = 32
)

// Candidate is a node descriptor this node knows, with the time it first saw
// it on its own monotonic basis (the same basis as Place's now). A first-seen
// record must survive restarts like a TTL does, or a restarted node counts
// every descriptor as young and places nothing until MinAge has passed.
type Candidate struct {
	FP        identity.Fingerprint
	FirstSeen time.Duration
}

// Options tune placement. The zero value means the defaults.
type Options struct {
	// K is how many nodes hold a bucket (DefaultK when 0).
	K int
	// MinAge is how long a descriptor must have been known before it counts
	// (DefaultMinAge when 0; negative means no minimum).
	MinAge time.Duration
	// Rotation is how long a node keeps one score per bucket before it is
	// re-drawn (DefaultRotation when 0; negative means never).
	Rotation time.Duration
	// BucketBits is the length of the bucket prefix (DefaultBucketBits when
	// 0, at most MaxBucketBits).
	BucketBits int
}

// WithDefaults returns o with every zero field set to its default. It is
// idempotent: a negative MinAge or Rotation stays negative.
func (o Options) WithDefaults() Options {
	if o.K <= 0 {
		o.K = DefaultK
	}
	if o.MinAge == 0 {
		o.MinAge = DefaultMinAge
	}
	if o.Rotation == 0 {
		o.Rotation = DefaultRotation
	}
	if o.BucketBits <= 0 {
		o.BucketBits = DefaultBucketBits
	}
	if o.BucketBits > MaxBucketBits {
		o.BucketBits = MaxBucketBits
	}
	return o
}

// Bucket returns the user's mailbox bucket: the first bits bits of
// SHA-256("qpq mailbox bucket v1" || user). bits is clamped to 1..32.
func Bucket(user identity.Fingerprint, bits int) uint32 {
	bits = min(max(bits, 1), MaxBucketBits)
	h := sha256.New()
	h.Write([]byte(bucketLabel))
	h.Write(user[:])
	var sum [sha256.Size]byte
	v := binary.BigEndian.Uint32(h.Sum(sum[:0]))
	return v >> (32 - bits)
}

// Generation reports whether c counts at now (it has been known for MinAge)
// and, if so, which Rotation period of its eligibility it is in.
func Generation(c Candidate, now time.Duration, o Options) (gen uint64, ok bool) {
	o = o.WithDefaults()
	age := now - c.FirstSeen
	minAge := max(o.MinAge, 0) // negative: none (kept negative, so defaults apply once)
	if age < minAge {
		return 0, false
	}
	if o.Rotation < 0 {
		return 0, true
	}
	return uint64((age - minAge) / o.Rotation), true
}

// Score is a node's rank for a bucket in one generation; lower holds the
// bucket first. It is the first 8 bytes, big-endian, of SHA-256 over a label,
// the bucket (with its width, so buckets of different widths never share
// scores), the generation and the node's fingerprint. Ties, which need a
// 64-bit collision, are broken by fingerprint.
func Score(bucket uint32, bits int, fp identity.Fingerprint, gen uint64) uint64 {
	var buf [len(scoreLabel) + 1 + 4 + 8 + len(fp)]byte
	n := copy(buf[:], scoreLabel)
	buf[n] = byte(bits)
	n++
	binary.BigEndian.PutUint32(buf[n:], bucket)
	n += 4
	binary.BigEndian.PutUint64(buf[n:], gen)
	n += 8
	copy(buf[n:], fp[:])
	sum := sha256.Sum256(buf[:])
	return binary.BigEndian.Uint64(sum[:8])
}

// scoreFunc lets the simulation reuse Place's selection with memoised
// scores; i indexes the candidate slice.
type scoreFunc func(i int, fp identity.Fingerprint, gen uint64) uint64

// Place returns the nodes that hold bucket, closest first: the K candidates
// that count at now (see Generation) with the lowest Score. It is
// deterministic: the same candidates, now and options give the same answer
// in any order. A fingerprint listed twice counts once, with its earliest
// first-seen time. Fewer than K come back when fewer count.
func Place(bucket uint32, cands []Candidate, now time.Duration, o Options) []identity.Fingerprint {
	o = o.WithDefaults()
	cands = dedupe(cands)
	return place(cands, now, o, func(_ int, fp identity.Fingerprint, gen uint64) uint64 {
		return Score(bucket, o.BucketBits, fp, gen)
	})
}

type ranked struct {
	score uint64
	fp    identity.Fingerprint
}

func (a ranked) less(b ranked) bool {
	if a.score != b.score {
		return a.score < b.score
	}
	return a.fp.Less(b.fp)
}

// dedupe returns cands with each fingerprint once, at its earliest
// first-seen time; cands itself is returned when it has no duplicate.
func dedupe(cands []Candidate) []Candidate {
	seen := make(map[identity.Fingerprint]int, len(cands))
	var out []Candidate
	for i, c := range cands {
		j, dup := seen[c.FP]
		if !dup {
			seen[c.FP] = len(seen)
			if out != nil {
				out = append(out, c)
			}
			continue
		}
		if out == nil {
			out = append(make([]Candidate, 0, len(cands)), cands[:i]...)
		}
		if c.FirstSeen < out[j].FirstSeen {
			out[j].FirstSeen = c.FirstSeen
		}
	}
	if out == nil {
		return cands
	}
	return out
}

// place expects unique fingerprints. It keeps the K best in a small sorted slice: K is tiny, so an insertion
// into it beats sorting every candidate.
func place(cands []Candidate, now time.Duration, o Options, score scoreFunc) []identity.Fingerprint {
	best := make([]ranked, 0, o.K+1)
	for i, c := range cands {
		gen, ok := Generation(c, now, o)
		if !ok {
			continue
		}
		r := ranked{score(i, c.FP, gen), c.FP}
		if len(best) == o.K && !r.less(best[len(best)-1]) {
			continue
		}
		at, _ := slices.BinarySearchFunc(best, r, cmpRanked)
		best = slices.Insert(best, at, r)
		if len(best) > o.K {
			best = best[:o.K]
		}
	}
	out := make([]identity.Fingerprint, len(best))
	for i, b := range best {
		out[i] = b.fp
	}
	return out
}

func cmpRanked(a, b ranked) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}
