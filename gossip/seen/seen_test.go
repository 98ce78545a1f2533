package seen

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"

	"github.com/quicproquo/qpq/mesh/testkit"
)

func newClock() *testkit.Clock { return testkit.NewClock(time.Unix(1_700_000_000, 0)) }

func newSet(t testing.TB, o Options) *Set {
	t.Helper()
	s, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ids returns n distinct ids from a seeded generator.
func ids(seed uint64, n int) []gossip.ID {
	r := rand.New(rand.NewPCG(seed, 2))
	out := make([]gossip.ID, n)
	for i := range out {
		out[i] = randomID(r)
	}
	return out
}

func TestNoFalseNegativesAcrossRotations(t *testing.T) {
	const c = 100
	clk := newClock()
	s := newSet(t, Options{Capacity: c, FPRate: 0.01, Now: clk.Now})
	all := ids(1, 12*c)
	for i, id := range all {
		if s.CheckAndAdd(id) {
			t.Fatalf("new id %d reported a duplicate", i)
		}
		clk.Advance(time.Second) // well inside MaxAge: rotation is by count
		// i+1 ids added, so (i+1)/c rotations so far; the generation
		// before the current one must be remembered whole.
		rotations := (i + 1) / c
		from := max(0, (rotations-1)*c)
		for j := from; j <= i; j++ {
			if !s.Seen(all[j]) {
				t.Fatalf("after %d adds (%d rotations): id %d forgotten", i+1, rotations, j)
			}
		}
		// Ids the exact set has evicted are never Seen, whatever the
		// filters say.
		for j := 0; j <= i-2*c; j++ {
			if s.Seen(all[j]) {
				t.Fatalf("after %d adds: evicted id %d still seen", i+1, j)
			}
		}
	}
	if st := s.Stats(); st.Duplicates != 0 {
		t.Errorf("duplicates = %d, want 0", st.Duplicates)
	}
}

func TestNoFalseNegativesAcrossAgeRotation(t *testing.T) {
	clk := newClock()
	s := newSet(t, Options{Capacity: 1000, MaxAge: time.Minute, Now: clk.Now})
	all := ids(2, 600)
	// 10 ids every 5 s: a generation lasts 12 steps, 120 ids.
	for step := range 60 {
		for _, id := range all[10*step : 10*step+10] {
			s.Add(id)
		}
		clk.Advance(5 * time.Second)
		gen := (step + 1) / 12 // rotations so far
		for j := max(0, (gen-1)*120); j < 10*step+10; j++ {
			if !s.Seen(all[j]) {
				t.Fatalf("step %d (%d rotations): id %d forgotten", step, gen, j)
			}
		}
	}
}

func TestRotateByCount(t *testing.T) {
	s := newSet(t, Options{Capacity: 10})
	first := ids(3, 10)
	for _, id := range first[:9] {
		s.Add(id)
	}
	if got := s.Stats().Count; got != 9 {
		t.Fatalf("count = %d, want 9", got)
	}
	key := s.cur.key
	s.Add(first[9])
	if got := s.Stats().Count; got != 0 {
		t.Fatalf("count after the 10th add = %d, want 0 (rotated)", got)
	}
	if s.prev.key != key || s.prev.count != 10 {
		t.Fatal("the full generation did not become the previous one")
	}
	if s.cur.key == key {
		t.Fatal("the new generation kept the old key")
	}
	for i, id := range first {
		if !s.Seen(id) {
			t.Fatalf("id %d forgotten by the first rotation", i)
		}
	}
	for _, id := range ids(4, 10) {
		s.Add(id)
	}
	forgotten := 0
	for _, id := range first {
		if !s.cur.test(&id) && !s.prev.test(&id) {
			forgotten++
		}
	}
	// Both filters have been emptied since; only a false positive
	// (about 0.1% each) keeps one.
	if forgotten < 8 {
		t.Fatalf("only %d of 10 ids left the filters after two rotations", forgotten)
	}
}

func TestRotateByAge(t *testing.T) {
	clk := newClock()
	s := newSet(t, Options{Capacity: 1000, MaxAge: time.Minute, Now: clk.Now})
	a, b := gossip.ID{1}, gossip.ID{2}
	s.Add(a)
	clk.Advance(time.Minute - time.Nanosecond)
	if got := s.Stats().Count; got != 1 {
		t.Fatalf("count just before MaxAge = %d, want 1", got)
	}
	clk.Advance(time.Nanosecond)
	if got := s.Stats().Count; got != 0 {
		t.Fatalf("count at MaxAge = %d, want 0 (rotated)", got)
	}
	if !s.Seen(a) {
		t.Fatal("id forgotten by the first rotation")
	}
	s.Add(b)
	clk.Advance(time.Minute)
	if s.Seen(a) {
		t.Fatal("id still seen two generations later")
	}
	if !s.Seen(b) {
		t.Fatal("id of the previous generation forgotten")
	}
	// Idle for two MaxAges: both generations are gone, as they would be
	// had the Set rotated on time.
	s.Add(a)
	clk.Advance(2 * time.Minute)
	if s.Seen(a) || s.Seen(b) {
		t.Fatal("ids still seen after two idle MaxAges")
	}
	if got := s.Stats().Count; got != 0 {
		t.Fatalf("count after idling = %d, want 0", got)
	}
}

// TestFalsePositivesNeverDrop forces frequent filter false positives with
// a tiny, loose filter and checks every new id is still reported new.
func TestFalsePositivesNeverDrop(t *testing.T) {
	const n = 20000
	all := ids(5, n)

	t.Run("exact", func(t *testing.T) {
		s := newSet(t, Options{Capacity: 200, FPRate: 0.5})
		for i, id := range all {
			if s.CheckAndAdd(id) {
				t.Fatalf("new id %d reported a duplicate", i)
			}
		}
		st := s.Stats()
		if st.Duplicates != 0 {
			t.Errorf("duplicates = %d, want 0", st.Duplicates)
		}
		if st.FalsePositives < n/10 {
			t.Errorf("only %d false positives in %d ids; the filter is not being tested", st.FalsePositives, n)
		}
		t.Logf("%d ids, %d filter false positives, none dropped", n, st.FalsePositives)
	})

	t.Run("confirm", func(t *testing.T) {
		// A tiny exact set: the Confirm hook (a store) decides the rest.
		store := map[gossip.ID]bool{}
		s := newSet(t, Options{Capacity: 200, FPRate: 0.5, ExactCapacity: 8,
			Confirm: func(id gossip.ID) bool { return store[id] }})
		for i, id := range all {
			if s.CheckAndAdd(id) {
				t.Fatalf("new id %d reported a duplicate", i)
			}
			store[id] = true
		}
		// n is a multiple of the capacity, so the last 200 ids are the
		// previous generation: all duplicates, though the exact set
		// holds only 8 of them.
		for i := n - 200; i < n; i++ {
			if !s.CheckAndAdd(all[i]) {
				t.Fatalf("recent id %d not reported a duplicate", i)
			}
		}
		if st := s.Stats(); st.Duplicates != 200 || st.FalsePositives < n/10 {
			t.Errorf("duplicates = %d (want 200), false positives = %d", st.Duplicates, st.FalsePositives)
		}
	})
}

func TestDuplicates(t *testing.T) {
	s := newSet(t, Options{Capacity: 1000})
	all := ids(6, 500)
	for _, id := range all {
		if s.CheckAndAdd(id) {
			t.Fatal("new id reported a duplicate")
		}
	}
	for range 3 {
		for i, id := range all {
			if !s.CheckAndAdd(id) {
				t.Fatalf("id %d not reported a duplicate", i)
			}
		}
	}
	if st := s.Stats(); st.Duplicates != 1500 || st.Count != 500 {
		t.Fatalf("duplicates = %d (want 1500), count = %d (want 500)", st.Duplicates, st.Count)
	}
	// Seen and Add count nothing.
	s.Seen(all[0])
	s.Seen(gossip.ID{7})
	s.Add(all[0])
	if st := s.Stats(); st.Duplicates != 1500 {
		t.Fatalf("Seen or Add counted a duplicate: %d", st.Duplicates)
	}
	if s.Seen(gossip.ID{7}) {
		t.Fatal("Seen recorded an id")
	}
}

// TestIndependence checks that two Sets holding the same ids, and two
// generations of one Set, have different false positives.
func TestIndependence(t *testing.T) {
	const c = 1000
	held, probes := ids(7, c-1), ids(8, 20000)
	fps := func(g *generation) map[gossip.ID]bool {
		m := map[gossip.ID]bool{}
		for _, p := range probes {
			if g.test(&p) {
				m[p] = true
			}
		}
		return m
	}
	check := func(what string, a, b map[gossip.ID]bool) {
		t.Helper()
		common := 0
		for p := range a {
			if b[p] {
				common++
			}
		}
		// Independent filters with rate r share about r*|a| false
		// positives; unkeyed ones would share all of them.
		t.Logf("%s: %d and %d false positives, %d in common", what, len(a), len(b), common)
		if len(a) < 1000 || len(b) < 1000 {
			t.Fatalf("%s: too few false positives to compare", what)
		}
		if common > min(len(a), len(b))/2 {
			t.Fatalf("%s: false positives not independent", what)
		}
	}

	s1 := newSet(t, Options{Capacity: c, FPRate: 0.2})
	s2 := newSet(t, Options{Capacity: c, FPRate: 0.2})
	for _, id := range held {
		s1.Add(id)
		s2.Add(id)
	}
	check("two nodes", fps(&s1.cur), fps(&s2.cur))

	s1.rotateLocked(time.Now())
	for _, id := range held {
		s1.Add(id)
	}
	check("two generations", fps(&s1.prev), fps(&s1.cur))
}

func TestConcurrentCheckAndAdd(t *testing.T) {
	const workers, n = 8, 2000
	s := newSet(t, Options{Capacity: 5000})
	all := ids(9, n)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fresh = map[gossip.ID]int{}
	)
	for w := range workers {
		order := rand.New(rand.NewPCG(uint64(w), 3)).Perm(n)
		wg.Go(func() {
			for _, i := range order {
				if !s.CheckAndAdd(all[i]) {
					mu.Lock()
					fresh[all[i]]++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for i, id := range all {
		if fresh[id] != 1 {
			t.Fatalf("id %d reported new %d times, want once", i, fresh[id])
		}
	}
	if st := s.Stats(); st.Duplicates != (workers-1)*n {
		t.Fatalf("duplicates = %d, want %d", st.Duplicates, (workers-1)*n)
	}
}

func TestOptions(t *testing.T) {
	_, err := New(Options{Capacity: -1, FPRate: 1, MaxAge: -time.Second, ExactCapacity: MaxCapacity + 1})
	if !errors.Is(err, ErrBadOptions) {
		t.Fatalf("err = %v, want ErrBadOptions", err)
	}
	for _, want := range []string{"capacity -1", "rate 1", "max age", "exact capacity"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := New(Options{FPRate: -0.1}); !errors.Is(err, ErrBadOptions) {
		t.Errorf("negative rate: err = %v", err)
	}

	s := newSet(t, Options{})
	if s.opts.Capacity != DefaultCapacity || s.opts.FPRate != DefaultFPRate ||
		s.opts.MaxAge != DefaultMaxAge || s.opts.ExactCapacity != 2*DefaultCapacity {
		t.Fatalf("defaults not applied: %+v", s.opts)
	}
}

func TestStats(t *testing.T) {
	s := newSet(t, Options{})
	st := s.Stats()
	if st.Capacity != DefaultCapacity || st.Count != 0 || st.FillRatio != 0 || st.FPRate != 0 {
		t.Fatalf("empty stats = %+v", st)
	}
	t.Logf("memory at the default configuration: %d bytes (%.1f KiB)", st.MemoryBytes, float64(st.MemoryBytes)/1024)
	if st.MemoryBytes < 2*DefaultCapacity*gossip.IDLen || st.MemoryBytes > 1<<20 {
		t.Errorf("memory %d bytes out of the expected range", st.MemoryBytes)
	}
	for _, id := range ids(10, DefaultCapacity-1) {
		s.Add(id)
	}
	full := s.Stats()
	t.Logf("one generation nearly full: %+v", full)
	if full.FillRatio < 0.4 || full.FillRatio > 0.6 {
		t.Errorf("fill ratio %v, want about 0.5 for an optimally sized filter at capacity", full.FillRatio)
	}
	if full.FPRate < DefaultFPRate/2 || full.FPRate > DefaultFPRate*2 {
		t.Errorf("estimated fp rate %v, want about %v at capacity", full.FPRate, DefaultFPRate)
	}
	if full.MemoryBytes != st.MemoryBytes {
		t.Errorf("memory grew from %d to %d", st.MemoryBytes, full.MemoryBytes)
	}

	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"capacity", "count", "fill_ratio", "fp_rate", "duplicates", "false_positives", "memory_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON %s lacks %q", b, k)
		}
	}
}

func BenchmarkCheckAndAdd(b *testing.B) {
	b.Run("new", func(b *testing.B) {
		s := newSet(b, Options{})
		var id gossip.ID
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			binary.LittleEndian.PutUint64(id[:], uint64(i))
			s.CheckAndAdd(id)
		}
	})
	b.Run("duplicate", func(b *testing.B) {
		s := newSet(b, Options{})
		all := ids(11, 1000)
		for _, id := range all {
			s.Add(id)
		}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			s.CheckAndAdd(all[i%len(all)])
		}
	})
	b.Run("parallel", func(b *testing.B) {
		s := newSet(b, Options{})
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			r := rand.New(rand.NewPCG(rand.Uint64(), 4))
			for pb.Next() {
				s.CheckAndAdd(randomID(r))
			}
		})
	})
}

func TestForgetLetsALaterCopyThrough(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	id := gossip.ID{7}
	if s.CheckAndAdd(id) {
		t.Fatal("a new id was called a duplicate")
	}
	s.Forget(id) // the store refused it
	if s.Seen(id) {
		t.Fatal("a forgotten id is still seen")
	}
	if s.CheckAndAdd(id) {
		t.Fatal("the copy after Forget was called a duplicate")
	}
	if !s.CheckAndAdd(id) {
		t.Fatal("the copy recorded after Forget was not remembered")
	}
}
