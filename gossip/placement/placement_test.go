package placement

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/quicproquo/qpq/mesh/identity"
)

const day = 24 * time.Hour

func randFP(r *rand.Rand) identity.Fingerprint {
	var fp identity.Fingerprint
	for i := range fp {
		fp[i] = byte(r.UintN(256))
	}
	return fp
}

// oldNodes returns n candidates first seen between 400 and 30 days before
// now (well past MinAge).
func oldNodes(r *rand.Rand, n int, now time.Duration) []Candidate {
	out := make([]Candidate, n)
	for i := range out {
		out[i] = Candidate{randFP(r), now - 30*day - time.Duration(r.Int64N(int64(370*day)))}
	}
	return out
}

func TestPlaceDeterministicDistinctSorted(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := 500 * day
	cands := oldNodes(r, 200, now)
	var o Options
	for b := range uint32(64) {
		got := Place(b, cands, now, o)
		if len(got) != DefaultK {
			t.Fatalf("bucket %d: %d nodes, want %d", b, len(got), DefaultK)
		}
		uniq := map[identity.Fingerprint]bool{}
		for _, fp := range got {
			uniq[fp] = true
		}
		if len(uniq) != len(got) {
			t.Fatalf("bucket %d: duplicate node in %v", b, got)
		}
		shuffled := slices.Clone(cands)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		// A duplicate listing with a later first-seen must not change anything.
		shuffled = append(shuffled, Candidate{cands[3].FP, now})
		if again := Place(b, shuffled, now, o); !slices.Equal(got, again) {
			t.Fatalf("bucket %d: order of candidates changed placement: %v then %v", b, got, again)
		}
		// Closest first: scores ascend, and nobody left out scores lower.
		score := func(fp identity.Fingerprint) uint64 {
			for _, c := range cands {
				if c.FP == fp {
					g, _ := Generation(c, now, o)
					return Score(b, DefaultBucketBits, fp, g)
				}
			}
			t.Fatalf("placed unknown node %s", fp)
			return 0
		}
		for i := 1; i < len(got); i++ {
			if score(got[i-1]) > score(got[i]) {
				t.Fatalf("bucket %d: not sorted by score", b)
			}
		}
		last := score(got[len(got)-1])
		for _, c := range cands {
			if !slices.Contains(got, c.FP) && score(c.FP) < last {
				t.Fatalf("bucket %d: %s scores lower than a placed node but is left out", b, c.FP.Short())
			}
		}
	}
}

func TestPlaceFewCandidates(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	now := 100 * day
	cands := oldNodes(r, 2, now)
	if got := Place(7, cands, now, Options{}); len(got) != 2 {
		t.Fatalf("two candidates: placed %d, want 2", len(got))
	}
	if got := Place(7, nil, now, Options{}); len(got) != 0 {
		t.Fatalf("no candidates: placed %v", got)
	}
}

func TestBucket(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	u := randFP(r)
	if Bucket(u, 8) != Bucket(u, 8) {
		t.Fatal("bucket not deterministic")
	}
	if Bucket(u, 8) != Bucket(u, 12)>>4 {
		t.Fatal("a wider bucket must extend the narrower prefix")
	}
	counts := make([]int, 16)
	for range 16000 {
		b := Bucket(randFP(r), 4)
		if b >= 16 {
			t.Fatalf("4-bit bucket %d out of range", b)
		}
		counts[b]++
	}
	for b, n := range counts {
		if n < 800 || n > 1200 {
			t.Fatalf("bucket %d holds %d of 16000 users, want about 1000", b, n)
		}
	}
}

func TestMinAgeFilter(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	now := 100 * day
	cands := oldNodes(r, 50, now)
	young := Candidate{randFP(r), now - DefaultMinAge + time.Minute}
	all := append(slices.Clone(cands), young)
	for b := range uint32(256) {
		if slices.Contains(Place(b, all, now, Options{}), young.FP) {
			t.Fatalf("bucket %d: a descriptor seen %v ago holds a slot (MinAge %v)", b, DefaultMinAge-time.Minute, DefaultMinAge)
		}
	}
	// Once old enough it takes its share: some bucket among 256 must place it.
	later := now + 2*time.Minute
	n := 0
	for b := range uint32(256) {
		if slices.Contains(Place(b, all, later, Options{}), young.FP) {
			n++
		}
	}
	if n == 0 {
		t.Fatal("a descriptor past MinAge never holds a slot")
	}
}

// grind makes fingerprints until it has n whose score for bucket in
// generation gen beats every honest node's, the cheap attack on a plain
// "closest to H(user)".
func grind(r *rand.Rand, bucket uint32, gen uint64, beat uint64, n int) []identity.Fingerprint {
	var out []identity.Fingerprint
	for len(out) < n {
		fp := randFP(r)
		if Score(bucket, DefaultBucketBits, fp, gen) < beat {
			out = append(out, fp)
		}
	}
	return out
}

func TestGrindingNeedsMinAgeAndDoesNotLast(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	now := 400 * day
	honest := oldNodes(r, 100, now)
	victim := randFP(r)
	bucket := Bucket(victim, DefaultBucketBits)
	var o Options
	lowest := ^uint64(0)
	for _, c := range honest {
		if g, ok := Generation(c, now, o); ok {
			lowest = min(lowest, Score(bucket, DefaultBucketBits, c.FP, g))
		}
	}
	// Ground for generation 0, the one a new key enters at MinAge.
	ground := grind(r, bucket, 0, lowest, DefaultK)
	var sybils []Candidate
	for _, fp := range ground {
		sybils = append(sybils, Candidate{fp, now})
	}
	all := append(slices.Clone(honest), sybils...)
	isSybil := func(fp identity.Fingerprint) bool { return slices.Contains(ground, fp) }

	// Fresh: they win every slot by score but take none.
	for _, at := range []time.Duration{now, now + DefaultMinAge/2, now + DefaultMinAge - time.Second} {
		for _, fp := range Place(bucket, all, at, o) {
			if isSybil(fp) {
				t.Fatalf("%v after creation a ground key holds a slot (MinAge %v)", at-now, DefaultMinAge)
			}
		}
	}
	// Patient: after MinAge they hold every slot for one Rotation...
	at := now + DefaultMinAge
	for _, fp := range Place(bucket, all, at, o) {
		if !isSybil(fp) {
			t.Fatalf("test premise: ground keys should win generation 0, got honest %s", fp.Short())
		}
	}
	// ...and then are re-drawn: over the next 20 generations, all three
	// keep every slot in none (each does so with chance about (3/103)^3).
	captured := 0
	for g := range 20 {
		at := now + DefaultMinAge + time.Duration(g+1)*DefaultRotation
		n := 0
		for _, fp := range Place(bucket, all, at, o) {
			if isSybil(fp) {
				n++
			}
		}
		if n == DefaultK {
			captured++
		}
	}
	if captured > 0 {
		t.Fatalf("keys ground for generation 0 held every slot in %d later generations", captured)
	}
}

func TestMassGrindingBeforeMinAge(t *testing.T) {
	// Ten thousand fresh keys against 200 honest ones: not one slot in any
	// bucket until MinAge.
	r := rand.New(rand.NewPCG(11, 12))
	now := 400 * day
	all := oldNodes(r, 200, now)
	fresh := make(map[identity.Fingerprint]bool)
	for range 10000 {
		c := Candidate{randFP(r), now - time.Duration(r.Int64N(int64(DefaultMinAge)))}
		fresh[c.FP] = true
		all = append(all, c)
	}
	for b := range uint32(256) {
		for _, fp := range Place(b, all, now, Options{}) {
			if fresh[fp] {
				t.Fatalf("bucket %d: a key younger than MinAge holds a slot", b)
			}
		}
	}
}

func TestLoadSpreads(t *testing.T) {
	// Property: over many meshes, no node holds far more buckets than its
	// share. 256 buckets x 3 slots over 100 nodes is 7.68 each; a binomial
	// maximum over 100 nodes stays under 3x that.
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 13))
		now := 400 * day
		cands := oldNodes(r, 100, now)
		load := map[identity.Fingerprint]int{}
		for b := range uint32(256) {
			for _, fp := range Place(b, cands, now, Options{}) {
				load[fp]++
			}
		}
		maxLoad := 0
		for _, n := range load {
			maxLoad = max(maxLoad, n)
		}
		if len(load) < 90 || maxLoad > 23 {
			t.Fatalf("seed %d: %d of 100 nodes hold a bucket, the busiest %d (mean 7.68)", seed, len(load), maxLoad)
		}
	}
}

func TestDifferingViewsShareANode(t *testing.T) {
	// Sender and recipient nodes each know a random 90% (and 97%) of 500
	// descriptors; how often do their placements of a bucket share a node?
	r := rand.New(rand.NewPCG(14, 15))
	now := 400 * day
	cands := oldNodes(r, 500, now)
	view := func(frac float64) []Candidate {
		var v []Candidate
		for _, c := range cands {
			if r.Float64() < frac {
				v = append(v, c)
			}
		}
		return v
	}
	for _, frac := range []float64{0.97, 0.9} {
		const trials = 1500
		shared, same := 0, 0
		for i := range trials {
			b := uint32(i % 256)
			a, c := Place(b, view(frac), now, Options{}), Place(b, view(frac), now, Options{})
			if slices.ContainsFunc(a, func(fp identity.Fingerprint) bool { return slices.Contains(c, fp) }) {
				shared++
			}
			if slices.Equal(a, c) {
				same++
			}
		}
		t.Logf("views of %.0f%%: placements share a node in %.2f%% of %d pairs, identical in %.1f%%",
			frac*100, 100*float64(shared)/trials, trials, 100*float64(same)/trials)
		if float64(shared)/trials < 0.97 {
			t.Fatalf("views of %.0f%%: only %d of %d placements share a node", frac*100, shared, trials)
		}
	}
}

// No minimum age (negative MinAge) survives the defaults applied again
// inside Place: a node seen a moment ago may hold a slot.
func TestNoMinAge(t *testing.T) {
	fp := randFP(rand.New(rand.NewPCG(1, 2)))
	o := Options{K: 1, MinAge: -1}.WithDefaults()
	if got := Place(0, []Candidate{{FP: fp, FirstSeen: time.Hour}}, time.Hour, o); len(got) != 1 {
		t.Fatalf("with no minimum age a node seen now holds no slot: %v", got)
	}
}
