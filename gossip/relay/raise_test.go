package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/mesh/identity"

	"github.com/quicproquo/qpq/gossip/gossiptest"
)

// starvationGraph is the smallest shape of the starvation raises fix:
//
//	origin 0 -- 1 -- 2 -- 3 -- 4 -- 5
//	       \_________/
//
// Node 2 (Y) is one hop from the origin directly and two hops through
// node 1. With hop limit 4 every node is within reach (node 5 is four
// hops away). The direct push 0->2 is held until the copy through node 1
// has spread (both directions of that link are held, so the origin
// decides to push before it hears anything from Y): Y then holds the
// broadcast with hop limit 2, node 3 with 1, node 4 with 0, and node 5
// has nothing. Released, the direct copy gives Y limit 3; node 3 already
// has the envelope and may not get it again.
const (
	starveOrigin, starveY, starveLast = 0, 2, 5
	starveHops                        = 4
)

// runStarvation builds the graph, spreads one broadcast with the direct
// link held back, checks the starved state, releases it and settles.
// past adjusts the links past Y (older nodes, lost raises).
func runStarvation(t *testing.T, past func(*simLink)) (*sim, gossip.ID) {
	t.Helper()
	h := newSim(t, 6, simOptions{})
	hold := make(chan struct{})
	h.linkWith(starveOrigin, starveY, func(l *simLink) { l.hold = hold })
	h.link(0, 1)
	h.link(1, 2)
	for i := starveY; i < starveLast; i++ {
		h.linkWith(i, i+1, past)
	}
	e := broadcast(rand.New(rand.NewPCG(6, 6)), starveHops)
	h.inject(starveOrigin, e)
	h.settle()

	// The long path won: hop limits 4, 3, 2, 1, 0 along it, node 5 starved.
	for i, want := range []int{4, 3, 2, 1, 0} {
		env, ok, _ := h.nodes[i].st.Get(e.ID)
		if !ok || int(env.HopLimit) != want {
			t.Fatalf("before release: node %d holds it %v with hop limit %d, want %d", i, ok, env.HopLimit, want)
		}
	}
	if got, _ := h.nodes[starveLast].deliveredOf([]gossip.ID{e.ID}); got != 0 {
		t.Fatalf("before release: node %d already has the broadcast; the scenario did not force the long path", starveLast)
	}
	close(hold)
	h.settle()
	return h, e.ID
}

func TestRaiseEndsStarvationByLongerPath(t *testing.T) {
	h, id := runStarvation(t, func(*simLink) {})
	for _, nd := range h.nodes {
		if got, most := nd.deliveredOf([]gossip.ID{id}); got != 1 || most != 1 {
			t.Errorf("node %d delivered the broadcast %d times, want once", nd.idx, most)
		}
	}
	c := h.counts()
	if c.maxPerLink > 1 {
		t.Errorf("a link carried the envelope %d times, want at most once", c.maxPerLink)
	}
	// Y raises node 3 (to 2), node 3 raises node 4 (to 1), node 4 pushes
	// the envelope to node 5: two raises, and no other.
	for d, want := range map[[2]int]int{{2, 3}: 1, {3, 4}: 1} {
		l := h.links[d]
		l.mu.Lock()
		got := l.raises
		l.mu.Unlock()
		if got != want {
			t.Errorf("link %d->%d carried %d raises, want %d", d[0], d[1], got, want)
		}
	}
	if c.raises != 2 {
		t.Errorf("%d raises in all, want 2", c.raises)
	}
	t.Logf("starvation by a longer path: %d envelope transmissions, %d raises, every node delivered once", c.tx, c.raises)
}

func TestRaiseOldPeerKeepsWorking(t *testing.T) {
	// The same race against nodes that do not serve raise: nothing
	// breaks, and the limit stays as it was before raises existed (node 5
	// is starved, the gap raises close).
	h, id := runStarvation(t, func(l *simLink) { l.oldPeer = true })
	if got, _ := h.nodes[starveLast].deliveredOf([]gossip.ID{id}); got != 0 {
		t.Errorf("node %d got the broadcast though no raise could reach it", starveLast)
	}
	for i := range starveLast {
		if got, most := h.nodes[i].deliveredOf([]gossip.ID{id}); got != 1 || most != 1 {
			t.Errorf("node %d delivered the broadcast %d times, want once", i, most)
		}
	}
	c := h.counts()
	if c.maxPerLink > 1 || c.raises != 0 || c.raiseCalls != 1 {
		t.Errorf("old peers: %d per link at most, %d raises accepted in %d calls; want 1, 0, 1", c.maxPerLink, c.raises, c.raiseCalls)
		for d, l := range h.links {
			if l.raiseCalls > 0 {
				t.Logf("link %d->%d: %d raises in %d calls", d[0], d[1], l.raises, l.raiseCalls)
			}
		}
	}
	// The refusal is remembered: a second improvement sends no raise.
	y := h.nodes[starveY]
	y.eng.peersMu.Lock()
	p := y.eng.peers[h.nodes[starveY+1].fp]
	y.eng.peersMu.Unlock()
	p.mu.Lock()
	stopped := p.noRaise
	p.mu.Unlock()
	if !stopped {
		t.Error("the engine did not stop raising to a peer that does not serve raise")
	}
}

// recPeer records what an engine sends it.
type recPeer struct {
	mu     sync.Mutex
	pushed []gossip.Envelope
	raised []HopRaise
	wake   chan struct{}
}

func newRecPeer() *recPeer { return &recPeer{wake: make(chan struct{}, 1)} }

func (r *recPeer) Push(ctx context.Context, envs []gossip.Envelope) (PushResult, error) {
	r.mu.Lock()
	r.pushed = append(r.pushed, envs...)
	r.mu.Unlock()
	r.signal()
	return PushResult{Accepted: len(envs), Taken: len(envs)}, nil
}

func (r *recPeer) Summary(context.Context, Summary) error { return nil }

func (r *recPeer) Raise(ctx context.Context, raises []HopRaise) error {
	r.mu.Lock()
	r.raised = append(r.raised, raises...)
	r.mu.Unlock()
	r.signal()
	return nil
}

func (r *recPeer) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// waitFor waits until cond holds over what r got.
func (r *recPeer) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		ok := cond()
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.wake:
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestHandleRaise(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	n.eng.o.PeerRate, n.eng.o.PeerBurst = 1, 6 // set before AddPeer: the bucket starts full
	raiser, other := identity.Fingerprint{1}, identity.Fingerprint{2}
	rp, op := newRecPeer(), newRecPeer()
	defer n.eng.AddPeer(raiser, rp)()
	defer n.eng.AddPeer(other, op)()

	b := broadcast(rand.New(rand.NewPCG(7, 7)), 2)
	d := gossiptest.Hops(gossiptest.DM(nil, nil, 3600, 2), 2)
	for _, e := range []gossip.Envelope{b, d} {
		if added, err := n.eng.Accept(e, Source{Client: "c"}); err != nil || !added {
			t.Fatalf("accept: %v %v", added, err)
		}
	}
	op.waitFor(t, "both pushes", func() bool { return len(op.pushed) == 2 })
	rp.waitFor(t, "both pushes", func() bool { return len(rp.pushed) == 2 })

	// Ignored: an id not held, a dm, a limit no higher than held. Then a
	// raise far above the maximum, capped: the other neighbour, pushed
	// hop limit 1, is raised to MaxBroadcastHops-1; the raiser gets none.
	err := n.eng.HandleRaise(raiser, []HopRaise{
		{ID: gossip.ID{9}, HopLimit: 5},
		{ID: d.ID, HopLimit: 5},
		{ID: b.ID, HopLimit: 2},
		{ID: b.ID, HopLimit: 200},
	})
	if err != nil {
		t.Fatalf("raise: %v", err)
	}
	want := HopRaise{ID: b.ID, HopLimit: n.eng.o.MaxBroadcastHops - 1}
	op.waitFor(t, "the raise", func() bool { return len(op.raised) == 1 })
	op.mu.Lock()
	if op.raised[0] != want || len(op.pushed) != 2 {
		t.Errorf("other neighbour got raises %v and %d pushes, want [%v] and 2", op.raised, len(op.pushed), want)
	}
	op.mu.Unlock()

	// A second raise to the same limit changes nothing.
	if err := n.eng.HandleRaise(raiser, []HopRaise{{ID: b.ID, HopLimit: 7}}); err != nil {
		t.Fatalf("repeated raise: %v", err)
	}
	// Each entry spends a token: with 5 of 6 spent, the next call is cut
	// short at its second entry.
	err = n.eng.HandleRaise(raiser, []HopRaise{{ID: b.ID, HopLimit: 7}, {ID: b.ID, HopLimit: 7}})
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("raise past the burst: got %v, want ErrRateLimited", err)
	}
	// Settle the engine's senders before looking at what was sent.
	n.eng.Close()
	rp.mu.Lock()
	defer rp.mu.Unlock()
	op.mu.Lock()
	defer op.mu.Unlock()
	if len(rp.raised) != 0 || len(op.raised) != 1 {
		t.Errorf("raiser got %d raises, other %d; want 0 and 1", len(rp.raised), len(op.raised))
	}
}

func TestLostRaiseIsOfferedAgainBySummary(t *testing.T) {
	// Y's raise to node 3 is lost once: node 5 stays starved until the
	// next summary round node 3 sends Y, when Y offers the lost raise again.
	h, id := runStarvation(t, func(l *simLink) {
		if l.from.idx == starveY {
			l.failRaises = 1
		}
	})
	if got, _ := h.nodes[starveLast].deliveredOf([]gossip.ID{id}); got != 0 {
		t.Fatalf("node %d got the broadcast though the raise towards it was lost", starveLast)
	}
	h.antiEntropyOneByOne()
	for _, nd := range h.nodes {
		if got, most := nd.deliveredOf([]gossip.ID{id}); got != 1 || most != 1 {
			t.Errorf("after a summary round node %d delivered the broadcast %d times, want once", nd.idx, most)
		}
	}
	if c := h.counts(); c.maxPerLink > 1 {
		t.Errorf("a link carried the envelope %d times, want at most once", c.maxPerLink)
	}
}

func TestPruneBoostsForgetsBroadcastsNoLongerHeld(t *testing.T) {
	clock := newClock()
	n := newTNode(t, clock)
	peerA := identity.Fingerprint{1}
	defer n.eng.AddPeer(peerA, newRecPeer())()
	r := rand.New(rand.NewPCG(8, 8))
	kept, gone := broadcast(r, 1), broadcast(r, 1)
	for _, e := range []gossip.Envelope{kept, gone} {
		if added, err := n.eng.Accept(e, Source{Peer: peerA}); err != nil || !added {
			t.Fatalf("accept: %v %v", added, err)
		}
		// A better copy raises the limit held.
		better := e
		better.HopLimit = 5
		if _, err := n.eng.Accept(better, Source{Peer: peerA}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.st.Delete(gone.ID); err != nil {
		t.Fatal(err)
	}
	if dropped := n.eng.PruneBoosts(); dropped != 1 {
		t.Errorf("PruneBoosts dropped %d, want 1 (the deleted broadcast)", dropped)
	}
	n.eng.boostMu.Lock()
	_, keptBoost := n.eng.boost[kept.ID]
	n.eng.boostMu.Unlock()
	if !keptBoost {
		t.Errorf("the raised limit of a broadcast still held was forgotten")
	}
}
