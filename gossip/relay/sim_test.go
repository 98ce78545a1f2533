package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quicproquo/qpq/gossip"
	"github.com/quicproquo/qpq/gossip/store"
	"github.com/quicproquo/qpq/mesh/identity"
	"github.com/quicproquo/qpq/schemas"

	"github.com/quicproquo/qpq/mesh/testkit"
)

// The simulation below runs many engines over real bbolt stores, linked
// by direct calls that count every envelope sent per directed link and
// per envelope id (and, apart, every raise notice), and can lose a
// fraction of the envelopes. Each node's
// "subscriber" is a wrapper around its store that counts the broadcasts
// newly added there: a broadcast is delivered to local subscribers exactly
// when the engine stores it (Accept wakes waiters only then), so a second
// successful Put of one id would be a second delivery.

// Broadcast parameters the simulation uses (DESIGN "Broadcast channels").
const (
	simTTL      = uint32(6 * 60 * 60) // 6 h
	simMaxHops  = 7
	simChannels = 16 // destinations spread over a few channels
)

// simOptions configure a simulated network.
type simOptions struct {
	// PeerRate and PeerBurst are every engine's neighbour rate limit;
	// zero keeps the engine's defaults.
	PeerRate, PeerBurst float64
	// Drop is the fraction of envelope sends each link loses at random.
	Drop float64
	// SilentDrop makes a lost send look delivered to the sender (a
	// datagram lost without an acknowledgement). Otherwise the push
	// reports an error, as a QUIC push RPC that fails does, and the sender
	// does not count the batch as sent.
	SilentDrop bool
	// Seed seeds every link's loss.
	Seed uint64
}

// sim is a network of engines.
type sim struct {
	tb    testing.TB
	o     simOptions
	clock *testkit.Clock
	nodes []*simNode
	links map[[2]int]*simLink // by (from, to)

	inFlight atomic.Int64 // pushes, raises and summaries under way
	progress atomic.Int64 // pushes, raises, store reads and writes so far
}

// simNode is one engine, its store, and its subscriber's counts.
type simNode struct {
	idx int
	fp  identity.Fingerprint
	st  *store.Store
	eng *Engine

	mu        sync.Mutex // guards the fields below
	delivered map[gossip.ID]int
	storeDups int // broadcast Puts that added nothing
}

// countingStore is the Store the engine sees: the real store, observed.
type countingStore struct {
	*store.Store
	n *simNode
	h *sim
}

func (s countingStore) Put(e gossip.Envelope, source string) (bool, error) {
	s.h.progress.Add(1)
	added, err := s.Store.Put(e, source)
	if e.Kind == schemas.Envelope_Kind_broadcast && err == nil {
		s.n.mu.Lock()
		if added {
			s.n.delivered[e.ID]++
		} else {
			s.n.storeDups++
		}
		s.n.mu.Unlock()
	}
	return added, err
}

// Apply counts the broadcasts it stores, as Put does.
func (s countingStore) Apply(ops []store.Op) ([]store.Result, error) {
	s.h.progress.Add(1)
	res, err := s.Store.Apply(ops)
	if err != nil {
		return res, err
	}
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	for i, op := range ops {
		if op.Put == nil || op.Put.Kind != schemas.Envelope_Kind_broadcast || res[i].Err != nil {
			continue
		}
		if res[i].Added {
			s.n.delivered[op.Put.ID]++
		} else {
			s.n.storeDups++
		}
	}
	return res, nil
}

func (s countingStore) Get(id gossip.ID) (gossip.Envelope, bool, error) {
	s.h.progress.Add(1)
	return s.Store.Get(id)
}

// simLink is one direction of a link: a memPeer that counts and loses.
type simLink struct {
	h        *sim
	from, to *simNode
	// hold, when set before traffic starts, makes every push and raise
	// wait until it is closed: the call is not yet in flight for settle,
	// so the rest of the network runs ahead of it.
	hold chan struct{}
	// oldPeer makes the receiver answer raise as a node that predates it.
	oldPeer bool
	// failRaises is how many raise calls fail as lost before any arrives.
	failRaises int

	mu         sync.Mutex // guards the fields below
	rng        *rand.Rand
	sent       map[gossip.ID]int // envelopes transmitted, by id
	tx         int               // envelopes transmitted
	dropped    int               // of which lost
	refused    int               // pushes and raises refused with ErrRateLimited
	errs       int               // envelopes refused otherwise
	raises     int               // raise entries transmitted (not envelopes)
	raiseCalls int               // raise calls, including refused ones
}

// Push hands envelopes to the receiving engine one by one, as the
// daemon's push handler does (relay.AcceptPush with flow control): those
// within the receiver's rate budget are taken, the rest are answered
// with when to send them again; other refusals skip the envelope.
func (l *simLink) Push(ctx context.Context, envs []gossip.Envelope) (PushResult, error) {
	if err := l.wait(ctx); err != nil {
		return PushResult{}, err
	}
	l.h.inFlight.Add(1)
	defer l.h.inFlight.Add(-1)
	l.h.progress.Add(1)
	accepted := 0
	var lost error
	n, wait := l.to.eng.takeUpTo(l.from.fp, len(envs))
	for _, env := range envs[:n] {
		l.mu.Lock()
		l.sent[env.ID]++
		l.tx++
		drop := l.h.o.Drop > 0 && l.rng.Float64() < l.h.o.Drop
		if drop {
			l.dropped++
		}
		l.mu.Unlock()
		if drop {
			if !l.h.o.SilentDrop {
				lost = errors.New("simulated loss")
			}
			continue
		}
		added, err := l.to.eng.admit(env, Source{Peer: l.from.fp})
		if err != nil {
			l.mu.Lock()
			l.errs++
			l.mu.Unlock()
			continue
		}
		if added {
			accepted++
		}
	}
	if n < len(envs) {
		l.mu.Lock()
		l.refused++
		l.mu.Unlock()
		return PushResult{Accepted: accepted, Taken: n, RetryAfter: wait}, lost
	}
	return PushResult{Accepted: accepted, Taken: len(envs)}, lost
}

// wait blocks while the link is held.
func (l *simLink) wait(ctx context.Context) error {
	if l.hold == nil {
		return nil
	}
	select {
	case <-l.hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Raise hands a raise notice to the receiving engine, or refuses it as
// an old node's MeshPeer would.
func (l *simLink) Raise(ctx context.Context, raises []HopRaise) error {
	if err := l.wait(ctx); err != nil {
		return err
	}
	l.h.inFlight.Add(1)
	defer l.h.inFlight.Add(-1)
	l.h.progress.Add(1)
	l.mu.Lock()
	l.raiseCalls++
	if l.failRaises > 0 {
		l.failRaises--
		l.mu.Unlock()
		return errors.New("simulated lost raise")
	}
	old := l.oldPeer
	if !old {
		l.raises += len(raises)
	}
	l.mu.Unlock()
	if old {
		return fmt.Errorf("%w: simulated older node", ErrRaiseUnsupported)
	}
	err := l.to.eng.HandleRaise(l.from.fp, raises)
	if errors.Is(err, ErrRateLimited) {
		l.mu.Lock()
		l.refused++
		l.mu.Unlock()
	}
	return err
}

func (l *simLink) Summary(ctx context.Context, s Summary) error {
	l.h.inFlight.Add(1)
	defer l.h.inFlight.Add(-1)
	l.h.progress.Add(1)
	return l.to.eng.HandleSummary(l.from.fp, s)
}

// simDir returns a directory for the stores: under /dev/shm when it
// exists, because every Put is a bbolt commit with an fsync, which makes
// a 50-node run on a disk slow; a router's store lives in RAM (tmpfs)
// anyway, so nothing is lost in realism.
func simDir(tb testing.TB) string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "qpq-relay-sim-"); err == nil {
			tb.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return tb.TempDir()
}

// newSim starts n unlinked engines.
func newSim(tb testing.TB, n int, o simOptions) *sim {
	tb.Helper()
	h := &sim{tb: tb, o: o, clock: newClock(), links: map[[2]int]*simLink{}}
	dir := simDir(tb)
	tb.Cleanup(h.close)
	for i := range n {
		id, err := identity.NewNode()
		if err != nil {
			tb.Fatal(err)
		}
		sn := &simNode{idx: i, fp: id.Fingerprint(), delivered: map[gossip.ID]int{}}
		// 16 MiB leaves each source and mailbox quota (an eighth) room
		// for a thousand padded broadcasts.
		st, err := store.Open(fmt.Sprintf("%s/%d.db", dir, i), store.Options{MaxBytes: 16 << 20, MaxTTL: 7 * 24 * time.Hour, Clock: h.clock})
		if err != nil {
			tb.Fatal(err)
		}
		sn.st = st
		sn.eng = New(Options{Store: countingStore{Store: st, n: sn, h: h}, Now: h.clock.Now, After: simAfter, PeerRate: o.PeerRate, PeerBurst: o.PeerBurst})
		h.nodes = append(h.nodes, sn)
	}
	return h
}

func (h *sim) close() {
	for _, n := range h.nodes {
		n.eng.Close()
	}
	for _, n := range h.nodes {
		n.st.Close()
	}
}

// link connects nodes a and b both ways.
func (h *sim) link(a, b int) {
	h.linkWith(a, b, func(*simLink) {})
}

// linkWith connects nodes a and b both ways, letting set adjust each
// direction before it starts.
func (h *sim) linkWith(a, b int, set func(l *simLink)) {
	for _, d := range [][2]int{{a, b}, {b, a}} {
		l := &simLink{h: h, from: h.nodes[d[0]], to: h.nodes[d[1]], sent: map[gossip.ID]int{},
			rng: rand.New(rand.NewPCG(h.o.Seed, uint64(d[0])<<32|uint64(d[1])))}
		set(l)
		h.links[d] = l
		l.from.eng.AddPeer(l.to.fp, l)
	}
}

// linkAll connects every edge of a graph.
func (h *sim) linkAll(edges [][2]int) {
	for _, e := range edges {
		h.link(e[0], e[1])
	}
}

// settle waits until the network is quiet: no push or summary under way,
// every push queue empty, and no store access, for ten polls in a row.
// (Between taking an id off its queue and reading the store a sender is
// invisible here; the stable window covers that instant.)
func (h *sim) settle() {
	h.tb.Helper()
	testkit.Settle(h.tb, 2*time.Minute, "the network", func() bool {
		return h.inFlight.Load() == 0 && h.queued() == 0
	}, h.progress.Load)
}

// simAfter stands in for time.After under the simulation's clock, which
// moves only when a test advances it: a sender asked to hold back tries
// again a moment later and is refused again until the clock has moved.
func simAfter(time.Duration) <-chan time.Time { return time.After(5 * time.Millisecond) }

// queued is the number of ids waiting in every engine's push queues.
func (h *sim) queued() int {
	total := 0
	for _, n := range h.nodes {
		total += queued(n.eng)
	}
	return total
}

// broadcast makes a channel message: a 32-byte channel id, a padded
// 256-byte payload, no receipt tag.
func broadcast(r *rand.Rand, hops uint8) gossip.Envelope {
	dest, payload := make([]byte, gossip.DestLen), make([]byte, gossip.PadBlock)
	dest[0] = byte(r.IntN(simChannels))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	e := gossip.Envelope{Kind: schemas.Envelope_Kind_broadcast, Destination: dest, Payload: payload, TTLSeconds: simTTL, HopLimit: hops}
	e.ID = gossip.ComputeID(e.Kind, dest, nil, payload)
	return e
}

// inject accepts a broadcast from a client at node i.
func (h *sim) inject(i int, e gossip.Envelope) {
	h.tb.Helper()
	if added, err := h.nodes[i].eng.Accept(e, Source{Client: "c"}); err != nil || !added {
		h.tb.Fatalf("accept at origin %d: added %v, err %v", i, added, err)
	}
}

// spreadCounts sums what the links carried.
type spreadCounts struct {
	tx, dropped, refused, errs int
	raises, raiseCalls         int // raise entries and calls (not in tx)
	maxPerLink                 int // most times one link carried one id
	perID                      map[gossip.ID]int
}

func (h *sim) counts() spreadCounts {
	c := spreadCounts{perID: map[gossip.ID]int{}}
	for _, l := range h.links {
		l.mu.Lock()
		c.tx += l.tx
		c.dropped += l.dropped
		c.refused += l.refused
		c.errs += l.errs
		c.raises += l.raises
		c.raiseCalls += l.raiseCalls
		for id, k := range l.sent {
			c.perID[id] += k
			c.maxPerLink = max(c.maxPerLink, k)
		}
		l.mu.Unlock()
	}
	return c
}

// delivered reports how many of ids node i's subscriber got, and the
// largest count of any one id.
func (n *simNode) deliveredOf(ids []gossip.ID) (got, most int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range ids {
		k := n.delivered[id]
		if k > 0 {
			got++
		}
		most = max(most, k)
	}
	return got, most
}

// neighboursOutOfHops reports whether every neighbour of node i that
// holds id holds it with hop limit 0, so none could forward it to i.
func (h *sim) neighboursOutOfHops(i int, id gossip.ID) bool {
	for d := range h.links {
		if d[1] != i {
			continue
		}
		if env, ok, _ := h.nodes[d[0]].st.Get(id); ok && env.HopLimit > 0 {
			return false
		}
	}
	return true
}

// seenDuplicates sums the engines' seen-set duplicate counters.
func (h *sim) seenDuplicates() (dups, falsePos uint64) {
	for _, n := range h.nodes {
		s := n.eng.SeenStats()
		dups += s.Duplicates
		falsePos += s.FalsePositives
	}
	return dups, falsePos
}

// randomGraph returns the edges of a connected graph of n nodes with mean
// degree about 4 (2n edges, no loops or parallel edges) and diameter at
// most maxDiam, trying seeds from seed up; it returns the seed it used
// and the diameter. A random recursive tree keeps it connected; random
// chords bring the mean degree up.
func randomGraph(tb testing.TB, n int, seed uint64, maxDiam int) (edges [][2]int, used uint64, diam int) {
	tb.Helper()
	for try := range 1000 {
		used = seed + uint64(try)
		r := rand.New(rand.NewPCG(used, 0x5eed))
		has := map[[2]int]bool{}
		edges = edges[:0]
		add := func(a, b int) bool {
			if a == b {
				return false
			}
			k := [2]int{min(a, b), max(a, b)}
			if has[k] {
				return false
			}
			has[k] = true
			edges = append(edges, k)
			return true
		}
		for i := 1; i < n; i++ {
			add(i, r.IntN(i))
		}
		for len(edges) < 2*n {
			add(r.IntN(n), r.IntN(n))
		}
		if diam = diameter(n, edges); diam >= 0 && diam <= maxDiam {
			return edges, used, diam
		}
	}
	tb.Fatalf("no graph of diameter <= %d in 1000 seeds", maxDiam)
	return nil, 0, 0
}

// diameter is the longest shortest path, by BFS from every node, or -1
// when the graph is not connected.
func diameter(n int, edges [][2]int) int {
	adj := make([][]int, n)
	for _, e := range edges {
		adj[e[0]] = append(adj[e[0]], e[1])
		adj[e[1]] = append(adj[e[1]], e[0])
	}
	diam := 0
	dist := make([]int, n)
	for s := range n {
		for i := range dist {
			dist[i] = -1
		}
		dist[s] = 0
		queue := []int{s}
		for len(queue) > 0 {
			u := queue[0]
			queue = queue[1:]
			for _, v := range adj[u] {
				if dist[v] < 0 {
					dist[v] = dist[u] + 1
					queue = append(queue, v)
				}
			}
		}
		for _, d := range dist {
			if d < 0 {
				return -1
			}
			diam = max(diam, d)
		}
	}
	return diam
}

// runBroadcasts injects count broadcasts from random origins, settling
// after every batch, and returns their ids.
func (h *sim) runBroadcasts(r *rand.Rand, count, batch int, hops uint8) []gossip.ID {
	h.tb.Helper()
	ids := make([]gossip.ID, 0, count)
	for len(ids) < count {
		for range min(batch, count-len(ids)) {
			e := broadcast(r, hops)
			h.inject(r.IntN(len(h.nodes)), e)
			ids = append(ids, e.ID)
		}
		h.settle()
	}
	return ids
}

// antiEntropy has every engine send its summary to each neighbour once,
// then waits for the pushes that answer them.
func (h *sim) antiEntropy() {
	h.tb.Helper()
	for d := range h.links {
		if err := h.nodes[d[0]].eng.SendSummary(context.Background(), h.nodes[d[1]].fp); err != nil {
			h.tb.Fatalf("summary %d -> %d: %v", d[0], d[1], err)
		}
	}
	h.settle()
}

// antiEntropyOneByOne is antiEntropy with the network settled after each
// summary: a summary made while pushes answering an earlier one are still
// in flight is stale against them, and asks for those envelopes again
// (which a test counting copies per link would see).
func (h *sim) antiEntropyOneByOne() {
	h.tb.Helper()
	for d := range h.links {
		if err := h.nodes[d[0]].eng.SendSummary(context.Background(), h.nodes[d[1]].fp); err != nil {
			h.tb.Fatalf("summary %d -> %d: %v", d[0], d[1], err)
		}
		h.settle()
	}
}

// deliveryRatio is the fraction of (node, message) pairs delivered.
func (h *sim) deliveryRatio(ids []gossip.ID) float64 {
	got := 0
	for _, n := range h.nodes {
		g, _ := n.deliveredOf(ids)
		got += g
	}
	return float64(got) / float64(len(ids)*len(h.nodes))
}

func TestBroadcast50NodesExactlyOnce(t *testing.T) {
	const n, count = 50, 1000
	start := time.Now()
	edges, seed, diam := randomGraph(t, n, 1, 7)
	h := newSim(t, n, simOptions{})
	h.linkAll(edges)
	ids := h.runBroadcasts(rand.New(rand.NewPCG(seed, 2)), count, 100, simMaxHops)

	// Every (node, message) pair delivered exactly once: the diameter is
	// within the hop limit, and a node that first got a message along a
	// longer path raises the limit of the neighbours it forwarded it to
	// when a better copy arrives. A missing pair is reported with whether
	// every neighbour holding it holds it with no hops left (a raise that
	// did not happen).
	missing, twice, hopsOut := 0, 0, 0
	for _, nd := range h.nodes {
		nd.mu.Lock()
		for _, id := range ids {
			switch k := nd.delivered[id]; {
			case k > 1:
				twice++
			case k == 0:
				missing++
				if h.neighboursOutOfHops(nd.idx, id) {
					hopsOut++
				}
			}
		}
		nd.mu.Unlock()
	}
	if twice > 0 {
		t.Errorf("%d (node, message) pairs delivered more than once", twice)
	}
	if missing > 0 {
		t.Errorf("%d of %d (node, message) pairs never delivered (%d with every neighbour out of hops), though the diameter %d is within the hop limit %d",
			missing, n*count, hopsOut, diam, simMaxHops)
	}
	c := h.counts()
	if c.maxPerLink > 1 {
		for d, l := range h.links {
			for id, k := range l.sent {
				if k > 1 {
					t.Errorf("node %d sent %v to neighbour %d %d times", d[0], id, d[1], k)
				}
			}
		}
	}
	if c.dropped+c.refused+c.errs != 0 {
		t.Errorf("links lost %d, rate-limited %d pushes and refused %d envelopes; want none", c.dropped, c.refused, c.errs)
	}
	minTx, maxTx := count*n, 0
	for _, id := range ids {
		minTx, maxTx = min(minTx, c.perID[id]), max(maxTx, c.perID[id])
	}
	deliveries, storeDups := 0, 0
	for _, nd := range h.nodes {
		nd.mu.Lock()
		for _, k := range nd.delivered {
			deliveries += k
		}
		storeDups += nd.storeDups
		nd.mu.Unlock()
	}
	dups, fps := h.seenDuplicates()
	t.Logf("graph: %d nodes, %d links (mean degree %.1f), diameter %d, seed %d", n, len(edges), 2*float64(len(edges))/n, diam, seed)
	t.Logf("broadcasts: %d from random origins, hop limit %d", count, simMaxHops)
	t.Logf("transmissions: %d in all, %.1f per broadcast (min %d, max %d) against %d for a spanning tree (%.2fx); at most %d per link per message",
		c.tx, float64(c.tx)/count, minTx, maxTx, n-1, float64(c.tx)/count/float64(n-1), c.maxPerLink)
	t.Logf("raises: %d notices in %d calls (%.3f per broadcast), not counted as transmissions",
		c.raises, c.raiseCalls, float64(c.raises)/count)
	t.Logf("deliveries: %d (want %d = %d nodes x %d); seen-set duplicates dropped %d, bloom false positives %d, duplicates reaching the store %d",
		deliveries, n*count, n, count, dups, fps, storeDups)
	t.Logf("runtime %v", time.Since(start).Round(time.Millisecond))
}

func TestRingDoesNotAmplify(t *testing.T) {
	const n = 12
	h := newSim(t, n, simOptions{})
	for i := range n {
		h.link(i, (i+1)%n)
	}
	e := broadcast(rand.New(rand.NewPCG(3, 3)), simMaxHops)
	h.inject(0, e)
	h.settle()
	for _, nd := range h.nodes {
		if got, most := nd.deliveredOf([]gossip.ID{e.ID}); got != 1 || most != 1 {
			t.Errorf("node %d stored the broadcast %d times, want once", nd.idx, most)
		}
	}
	c := h.counts()
	if c.maxPerLink > 1 {
		t.Errorf("a directed link carried the broadcast %d times, want at most once", c.maxPerLink)
	}
	if c.tx > 2*n {
		t.Errorf("%d transmissions on a ring of %d, want at most %d", c.tx, n, 2*n)
	}
	dups, _ := h.seenDuplicates()
	t.Logf("ring of %d: %d transmissions (at most %d allowed, %d for a spanning tree), %d duplicates dropped", n, c.tx, 2*n, n-1, dups)
}

func TestLineHopLimitBoundsSpread(t *testing.T) {
	const n, hops = 8, 3
	h := newSim(t, n, simOptions{})
	for i := 0; i+1 < n; i++ {
		h.link(i, i+1)
	}
	e := broadcast(rand.New(rand.NewPCG(4, 4)), hops)
	h.inject(0, e)
	h.settle()
	for _, nd := range h.nodes {
		got, _ := nd.deliveredOf([]gossip.ID{e.ID})
		if want := nd.idx <= hops; (got == 1) != want {
			t.Errorf("node %d holds the broadcast: %v, want %v", nd.idx, got == 1, want)
		}
		if env, ok, _ := nd.st.Get(e.ID); ok && int(env.HopLimit) != hops-nd.idx {
			t.Errorf("node %d holds it with hop limit %d, want %d", nd.idx, env.HopLimit, hops-nd.idx)
		}
	}
	if c := h.counts(); c.tx != hops {
		t.Errorf("%d transmissions on the line, want %d", c.tx, hops)
	}
}

func TestFloodingNeighbourRateLimited(t *testing.T) {
	// victim's neighbours: flooder, good; downstream is reached only
	// through victim. The victim allows 10 envelopes a second and a burst
	// of 20 per neighbour (set before linking: a neighbour's bucket starts
	// full); the clock does not move until the end.
	const victim, flooder, good, downstream = 0, 1, 2, 3
	const rate, burst, flood = 10, 20, 500
	h := newSim(t, 4, simOptions{})
	h.nodes[victim].eng.o.PeerRate, h.nodes[victim].eng.o.PeerBurst = rate, burst
	h.link(victim, flooder)
	h.link(victim, good)
	h.link(victim, downstream)
	r := rand.New(rand.NewPCG(5, 5))

	// The flood, interleaved with broadcasts from the good neighbour's
	// client and from the victim's own client.
	var floodIDs, otherIDs []gossip.ID
	for i := range flood {
		e := broadcast(r, simMaxHops)
		h.inject(flooder, e)
		floodIDs = append(floodIDs, e.ID)
		if i%50 == 0 {
			for _, origin := range []int{good, victim} {
				o := broadcast(r, simMaxHops)
				h.inject(origin, o)
				otherIDs = append(otherIDs, o.ID)
			}
		}
	}
	// Settled but for the flooder's queue toward the victim: under flow
	// control it is held, not dropped, while the clock stands still.
	testkit.Settle(t, 2*time.Minute, "the network but the flood", func() bool {
		return h.inFlight.Load() == 0 && h.queued()-queued(h.nodes[flooder].eng) == 0
	}, nil) // progress moves with every refused retry
	for _, i := range []int{victim, good, downstream, flooder} {
		testkit.WaitFor(t, time.Minute, "the others' broadcasts to arrive", func() bool {
			g, _ := h.nodes[i].deliveredOf(otherIDs)
			return g == len(otherIDs)
		})
	}

	got, _ := h.nodes[victim].deliveredOf(floodIDs)
	if got > burst {
		t.Errorf("victim accepted %d of %d flooded broadcasts, want at most the burst %d", got, flood, burst)
	}
	fl := h.links[[2]int{flooder, victim}]
	fl.mu.Lock()
	refused := fl.refused
	fl.mu.Unlock()
	if refused == 0 {
		t.Errorf("the flooder was never held back")
	}
	// A limit, not a ban, and nothing lost: as the clock moves, the
	// flooder's held broadcasts get through at the rate, never faster,
	// and all of them arrive, without a summary round.
	for step := 1; ; step++ {
		h.clock.Advance(time.Second)
		allowed := burst + rate*step
		testkit.WaitFor(t, time.Minute, "the flood to move on", func() bool {
			g, _ := h.nodes[victim].deliveredOf(floodIDs)
			return g >= min(allowed, flood+1) || g == flood
		})
		g, _ := h.nodes[victim].deliveredOf(floodIDs)
		if g > allowed {
			t.Fatalf("after %d s the victim holds %d flooded broadcasts, more than the %d its limit allows", step, g, allowed)
		}
		if g == flood {
			break
		}
		if step > flood/rate+5 {
			t.Fatalf("after %d s the victim holds only %d of %d flooded broadcasts", step, g, flood)
		}
	}
	h.settle()
	if down, _ := h.nodes[downstream].deliveredOf(floodIDs); down != flood {
		t.Errorf("downstream got %d of %d flooded broadcasts", down, flood)
	}
	got = flood
	t.Logf("flood of %d: victim accepted %d after the clock moved (burst %d), held back %d pushes; %d other broadcasts all delivered",
		flood, got, burst, refused, len(otherIDs))
}
