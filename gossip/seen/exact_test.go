package seen

import (
	"math/rand/v2"
	"testing"

	"github.com/quicproquo/qpq/gossip"
)

// TestExactSetModel checks the exact set against its specification: it
// holds exactly the ids among the last cap insertions.
func TestExactSetModel(t *testing.T) {
	for _, capacity := range []int{1, 2, 3, 7, 64, 1000} {
		r := rand.New(rand.NewPCG(uint64(capacity), 1))
		e := newExactSet(capacity)
		last := map[gossip.ID]int{} // id -> insertion number of its last insert
		// A small universe, so re-insertions (moves) and collisions in
		// the index are frequent.
		universe := make([]gossip.ID, 3*capacity+5)
		for i := range universe {
			universe[i] = randomID(r)
			if i%4 == 0 { // ids that share a prefix still differ
				universe[i] = universe[0]
				universe[i][31] = byte(i)
				universe[i][30] = byte(i >> 8)
			}
		}
		for n := range 20 * len(universe) {
			id := universe[r.IntN(len(universe))]
			e.insert(id)
			last[id] = n
			if capacity > 64 && n%97 != 0 {
				continue // full sweeps now and then keep this fast
			}
			live := 0
			for _, u := range universe {
				l, ok := last[u]
				want := ok && l > n-capacity
				if want {
					live++
				}
				if got := e.has(u); got != want {
					t.Fatalf("cap %d after %d inserts: has(%v) = %v, want %v", capacity, n+1, u, got, want)
				}
			}
			if e.n != live {
				t.Fatalf("cap %d after %d inserts: n = %d, want %d", capacity, n+1, e.n, live)
			}
		}
	}
}

func TestExactSetZeroID(t *testing.T) {
	e := newExactSet(4)
	var zero gossip.ID
	if e.has(zero) {
		t.Fatal("empty set has the zero id")
	}
	e.insert(zero)
	for i := range 3 {
		if !e.has(zero) {
			t.Fatalf("zero id lost after %d more inserts", i)
		}
		e.insert(gossip.ID{byte(i + 1)})
	}
	if !e.has(zero) {
		t.Fatal("zero id lost while within capacity")
	}
	e.insert(gossip.ID{9})
	if e.has(zero) {
		t.Fatal("zero id kept past capacity")
	}
}

func randomID(r *rand.Rand) gossip.ID {
	var id gossip.ID
	for i := 0; i < len(id); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			id[i+j] = byte(v >> (8 * j))
		}
	}
	return id
}

// TestExactSetForgetModel mixes forgets into the model: a forgotten id is
// not held until it is inserted again, and every other id is unaffected.
func TestExactSetForgetModel(t *testing.T) {
	for _, capacity := range []int{1, 2, 7, 64} {
		r := rand.New(rand.NewPCG(uint64(capacity), 2))
		e := newExactSet(capacity)
		last := map[gossip.ID]int{} // id -> insertion number of its last insert
		ins := 0                    // insertions so far (forgets are not)
		universe := make([]gossip.ID, 3*capacity+5)
		for i := range universe {
			universe[i] = randomID(r)
		}
		for n := range 20 * len(universe) {
			id := universe[r.IntN(len(universe))]
			if r.IntN(4) == 0 {
				e.forget(id)
				delete(last, id)
			} else {
				e.insert(id)
				last[id] = ins
				ins++
			}
			live := 0
			for _, u := range universe {
				l, ok := last[u]
				want := ok && l >= ins-capacity
				if want {
					live++
				}
				if got := e.has(u); got != want {
					t.Fatalf("cap %d after %d steps: has(%v) = %v, want %v", capacity, n+1, u, got, want)
				}
			}
			if e.n != live {
				t.Fatalf("cap %d after %d steps: n = %d, want %d", capacity, n+1, e.n, live)
			}
		}
	}
}
