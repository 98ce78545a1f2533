package relay

import (
	"errors"
	"testing"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/quicproquo/qpq/mesh/identity"

	"github.com/quicproquo/qpq/mesh/testkit"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// filterOf marshals f, or fails the test.
func filterOf(t *testing.T, f *bloom.BloomFilter) []byte {
	t.Helper()
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSummaryFloodTriggersBoundedPushes(t *testing.T) {
	// A neighbour sends summaries as fast as it can, claiming it lacks
	// everything (an empty filter) or holds everything (all bits set):
	// the node resends a bounded number of envelopes, not its whole
	// store per call.
	clock := newClock()
	n := newTNode(t, clock)
	n.eng.o.MaxSummaryPush = 100
	for range 300 {
		if _, err := n.eng.Accept(gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 8), Source{Client: "c"}); err != nil {
			t.Fatal(err)
		}
	}
	attacker := identity.Fingerprint{1}
	rp := newRecPeer()
	remove := n.eng.AddPeer(attacker, rp)
	defer remove()

	key := make([]byte, summaryKeyLen)
	empty := bloom.NewWithEstimates(1000, summaryFPRate)
	full := bloom.NewWithEstimates(1000, summaryFPRate)
	full.BitSet().FlipRange(0, full.Cap())
	handled, refused := 0, 0
	for i := range 100 {
		s := Summary{Filter: filterOf(t, empty), Key: key, Count: 0}
		if i%2 == 1 {
			s = Summary{Filter: filterOf(t, full), Key: key, Count: 0}
		}
		switch err := n.eng.HandleSummary(attacker, s); {
		case err == nil:
			handled++
		case errors.Is(err, ErrRateLimited) || errors.Is(err, ErrBadSummary):
			refused++
		default:
			t.Fatalf("summary %d: %v", i, err)
		}
	}
	if handled > summaryBurst {
		t.Errorf("%d of 100 summaries at one instant were handled, want at most %d", handled, summaryBurst)
	}
	// After one gap, one more is handled, and the next refused.
	clock.Advance(n.eng.o.SummaryGap)
	s := Summary{Filter: filterOf(t, empty), Key: key, Count: 0}
	if err := n.eng.HandleSummary(attacker, s); err != nil {
		t.Errorf("a summary one gap later: %v", err)
	}
	if err := n.eng.HandleSummary(attacker, s); !errors.Is(err, ErrRateLimited) {
		t.Errorf("a second summary at once: got %v, want ErrRateLimited", err)
	}
	// Let the sender drain what was queued, then stop it.
	testkit.WaitFor(t, 10*time.Second, "the sender to drain its queue", func() bool { return n.eng.peer(attacker).queue.len() == 0 })
	n.eng.Close()
	rp.mu.Lock()
	pushed := len(rp.pushed)
	rp.mu.Unlock()
	// Each handled summary sends again at most MaxSummaryPush of what was
	// sent before; finishing its scan sends only what was never sent (at
	// most the 300 stored, once).
	if most := (summaryBurst+1)*n.eng.o.MaxSummaryPush + 300; pushed > most || pushed == 0 {
		t.Errorf("the flood made the node push %d envelopes, want 1..%d", pushed, most)
	}
}

func TestImplausibleFilterRefused(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	from := identity.Fingerprint{1}
	defer n.eng.AddPeer(from, newRecPeer())()
	key := make([]byte, summaryKeyLen)
	empty := bloom.NewWithEstimates(1000, summaryFPRate)
	full := bloom.NewWithEstimates(1000, summaryFPRate)
	full.BitSet().FlipRange(0, full.Cap())
	for _, c := range []struct {
		name  string
		f     *bloom.BloomFilter
		count uint32
	}{
		{"empty filter claiming 1000 ids", empty, 1000},
		{"full filter claiming none", full, 0},
		{"full filter claiming 10", full, 10},
	} {
		err := n.eng.HandleSummary(from, Summary{Filter: filterOf(t, c.f), Key: key, Count: c.count})
		if !errors.Is(err, ErrBadSummary) {
			t.Errorf("%s: got %v, want ErrBadSummary", c.name, err)
		}
	}
	// An honest filter of 1000 ids is fine.
	honest := bloom.NewWithEstimates(1000, summaryFPRate)
	for i := range 1000 {
		honest.Add([]byte{byte(i), byte(i >> 8)})
	}
	if err := n.eng.HandleSummary(from, Summary{Filter: filterOf(t, honest), Key: key, Count: 1000}); err != nil {
		t.Errorf("an honest filter of 1000 ids: %v", err)
	}
}
